"""Pictures from SQL, decoded and checked for what they must show: vision.contact_sheet (the
query tile first and framed, one tile per image, the right pictures in the right order) and
vision.plot_map (legend beside the map in natural order, a colour per group); saving a PNG
from psql with the docs' recipes; the palette and the layout without a server."""

import io
import itertools
import math
import os
import subprocess

import numpy as np
import psycopg2
import pytest
from PIL import Image

from conftest import dsn, documentation, image_bytes, query
from pgvision import pictures


def png(data):
    img = Image.open(io.BytesIO(bytes(data)))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(int)


def expected_tile(data, tile):
    """What the sheet must show in a tile: the image fitted in tile x tile, centred, on the
    tile background."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.thumbnail((tile, tile))
    canvas = Image.new("RGB", (tile, tile), pictures.TILE_BACKGROUND)
    canvas.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    return np.asarray(canvas).astype(int)


@pytest.fixture
def sheet_table(db, make_table):
    rows = [(i, image_bytes(100 + i, (120, 90))) for i in range(1, 8)]
    name = make_table("sheet_images", rows)
    query(db, "CALL vision.extract_table('sheet_images')")
    return name, dict(rows)


def test_a_contact_sheet_shows_the_query_first_then_its_neighbours(db, sheet_table):
    table, data = sheet_table
    tile = 96
    sheet = png(query(db, "SELECT vision.contact_sheet(3, k => 4, source => %s, tile => %s, "
                          "columns => 3)", (table, tile))[0][0])
    order = [3] + [r[0] for r in query(db, "SELECT image_id FROM vision.similar(3, k => 4, "
                                           "source => %s)", (table,))]
    width, height, boxes = pictures.sheet_layout(5, tile, 3)
    assert sheet.shape == (height, width, 3)
    for image_id, (left, top) in zip(order, boxes):
        shown = sheet[top:top + tile, left:left + tile]
        distances = {i: np.abs(shown - expected_tile(data[i], tile)).mean() for i in data}
        assert min(distances, key=distances.get) == image_id  # the right picture, in order
        assert distances[image_id] < 8
    frame = np.all(np.abs(sheet - pictures.QUERY_FRAME) < 10, axis=2)
    (left, top), others = boxes[0], boxes[1:]
    assert frame[top - 3, left:left + tile].all() and frame[top:top + tile, left - 3].all()
    for left, top in others:
        assert not frame[top - 3, left:left + tile].any()
    # the sixth cell of the 3 x 2 grid is empty: five tiles, no more
    empty_left, empty_top = pictures.sheet_layout(6, tile, 3)[2][5]
    assert (sheet[empty_top:empty_top + tile, empty_left:empty_left + tile] == 255).all()


def test_a_contact_sheet_of_listed_ids_keeps_their_order_and_labels(db, sheet_table):
    table, data = sheet_table
    query(db, f"ALTER TABLE {table} ADD COLUMN label text")
    query(db, f"UPDATE {table} SET label = 'item ' || id")
    tile = 64
    ids = [7, 2, 5]
    plain = png(query(db, "SELECT vision.contact_sheet(image_ids => %s, source => %s, "
                          "tile => %s)", (ids, table, tile))[0][0])
    labelled = png(query(db, "SELECT vision.contact_sheet(image_ids => %s, source => %s, "
                             "tile => %s, label_column => 'label')", (ids, table, tile))[0][0])
    width, height, boxes = pictures.sheet_layout(3, tile, 5)
    assert plain.shape == labelled.shape == (height, width, 3)
    for image_id, (left, top) in zip(ids, boxes):
        shown = plain[top:top + tile, left:left + tile]
        assert np.abs(shown - expected_tile(data[image_id], tile)).mean() < 8
        captions = (slice(top + tile + 18, top + tile + 34), slice(left, left + tile))
        assert (plain[captions] == 255).all() and (labelled[captions] < 128).any()
    assert not np.all(np.abs(plain - pictures.QUERY_FRAME) < 10, axis=2).any()


def test_a_contact_sheet_reads_images_as_the_caller(db, sheet_table, connect):
    table, _ = sheet_table
    query(db, "DROP ROLE IF EXISTS sheet_stranger")
    query(db, "CREATE ROLE sheet_stranger")
    try:
        conn = connect()
        query(conn, "SET ROLE sheet_stranger")
        with pytest.raises(psycopg2.Error, match="permission denied for table"):
            query(conn, "SELECT vision.contact_sheet(image_ids => '{1}', source => %s)",
                  (table,))
        query(conn, "RESET ROLE")
    finally:
        query(db, "DROP ROLE sheet_stranger")
    with pytest.raises(psycopg2.Error, match='argument "label_column": table public.sheet_images '
                       "has no column 'nope'"):
        query(db, "SELECT vision.contact_sheet(1, source => %s, label_column => 'nope')",
              (table,))


def test_a_map_legend_lists_every_group_beside_the_map_in_natural_order(db, make_table):
    rows = [(i, image_bytes(300 + i, (80, 60))) for i in range(1, 31)]
    table = make_table("map_images", rows)
    try:
        query(db, f"CALL vision.extract_table('{table}')")
        query(db, f"SELECT vision.cluster(k => 12, source => '{table}')")
        query(db, f"SELECT vision.embed_2d(method => 'pca', source => '{table}')")
        size = 500
        img = png(query(db, "SELECT vision.plot_map(source => %s, size => %s)",
                        (table, size))[0][0])
        assert img.shape == (size + pictures.HEADER, size + pictures.LEGEND_WIDTH, 3)
        colours = pictures.palette(12)
        left, top = size + 12, pictures.HEADER + 4
        swatches = [tuple(img[top + 18 * i + 9, left + 6]) for i in range(12)]
        assert swatches == colours  # cluster 0, 1, 2, ..., 10, 11: natural order
        plot = img[pictures.HEADER:, :size].reshape(-1, 3)
        seen = {c for c in colours if np.all(plot == c, axis=1).any()}
        assert seen == set(colours)  # every cluster drawn, each in its own colour
        legend = img[:, size + 1:].reshape(-1, 3)
        assert not any(np.all(legend == c, axis=1).sum() > 200 for c in colours)  # no points
        with_ids = png(query(db, "SELECT vision.plot_map(source => %s, size => %s, "
                                 "labels => 'id')", (table, size))[0][0])
        assert (with_ids != img).any()
        with pytest.raises(psycopg2.Error, match='argument "labels": table public.map_images '
                           "has no column 'nope'"):
            query(db, "SELECT vision.plot_map(source => %s, labels => 'nope')", (table,))
        # with thumbnails the grid is the default: every image framed in a cell of its own
        grid = png(query(db, "SELECT vision.plot_map(source => %s, size => %s, "
                             "thumbnails => true)", (table, size))[0][0])
        scatter = png(query(db, "SELECT vision.plot_map(source => %s, size => %s, "
                                "thumbnails => true, layout => 'scatter')", (table, size))[0][0])
        assert grid.shape == scatter.shape and (grid != scatter).any()
        framed = {c for c in colours if np.all(grid[pictures.HEADER:, :size].reshape(-1, 3)
                                               == c, axis=1).any()}
        assert framed == set(colours)
        with pytest.raises(psycopg2.Error, match='vision.plot_map: argument "layout" must be '
                           "one of 'grid', 'scatter'"):
            query(db, "SELECT vision.plot_map(source => %s, layout => 'spiral')", (table,))
    finally:
        for stored in ("clusters", "cluster_centroids", "map_2d"):
            query(db, f"DELETE FROM vision.{stored} WHERE source = %s::regclass", (table,))


def test_the_docs_recipes_save_a_png_from_psql(db, db_name, sheet_table, tmp_path):
    """The docs' psql recipes (between <!-- psql png --> marks) write the exact bytes."""
    table, _ = sheet_table
    recipes = documentation().split("<!-- psql png -->")[1]
    script = recipes.split("```psql\n")[1].split("```")[0].replace("products", table)
    shell = recipes.split("```sh\n")[1].split("```")[0].replace("products", table)
    expected = bytes(query(db, f"SELECT vision.contact_sheet(1, source => '{table}')")[0][0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["DATABASE_URL"] = dsn(db_name)
    subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", dsn(db_name)], input=script,
                   text=True, cwd=tmp_path, check=True, capture_output=True, env=env)
    assert (tmp_path / "sheet.png").read_bytes() == expected
    subprocess.run(shell, shell=True, cwd=tmp_path, check=True, capture_output=True, env=env)
    assert (tmp_path / "sheet2.png").read_bytes() == expected
    assert not query(db, "SELECT 1 FROM pg_largeobject_metadata")  # the recipe cleans up


# --- without a server ---------------------------------------------------------------------

def test_the_palette_stays_distinct_for_many_groups():
    for n in (10, 20, 40, 100):
        colours = pictures.palette(n)
        assert len(colours) == n
        closest = min(math.dist(a, b) for a, b in itertools.combinations(colours, 2))
        assert closest >= 25, (n, closest)
    assert pictures.palette(10) == pictures.palette(40)[:10]  # more groups keep the colours


def test_natural_order_and_the_legend_that_fits():
    groups = ["cluster 10", "cluster 2", "none", "cluster 1", "cluster 11"]
    assert sorted(groups, key=pictures.natural_key) == [
        "cluster 1", "cluster 2", "cluster 10", "cluster 11", "none"]
    assert pictures.legend_rows(5, 800) == 5
    assert pictures.legend_rows(100, 18 * 10) == 9  # the tenth row says "... and 91 more"


def test_map_geometry_shrinks_thumbnails_as_the_map_fills():
    sizes = [pictures.map_geometry(n, 800)[0] for n in (4, 100, 1000, 100_000)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 96 and sizes[-1] == 24


def test_draw_map_keeps_the_legend_off_the_picture():
    xy = np.random.default_rng(0).normal(size=(50, 2))
    groups = [f"g{i % 15}" for i in range(50)]
    img = png(pictures.draw_map(xy, groups, size=400, title="t"))
    assert img.shape == (400 + pictures.HEADER, 400 + pictures.LEGEND_WIDTH, 3)
    colours = pictures.palette(15)
    swatches = img[:, 412:425].reshape(-1, 3)
    legend = np.concatenate([img[:, 401:412], img[:, 425:]], axis=1).reshape(-1, 3)
    plot = img[:, :400].reshape(-1, 3)
    for colour in colours:
        assert np.all(plot == colour, axis=1).any()
        assert np.all(swatches == colour, axis=1).sum() == 13 * 13  # one swatch each
        assert np.all(legend == colour, axis=1).sum() < 10  # no points (a text pixel may match)


def clumped(n, seed=0):
    """2-D points as t-SNE leaves a catalog: tight clumps, a band, and a few far outliers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(6, 2))
    xy = centres[rng.integers(0, 6, n)] + rng.normal(scale=0.8, size=(n, 2))
    xy[:3] = [[400, 0], [-300, 50], [0, 500]]
    return xy


def solid(colour, size):
    return Image.new("RGB", size, colour)


def test_the_grid_gives_every_thumbnail_a_cell_of_its_own_and_keeps_neighbours():
    n, size = 200, 800
    xy = clumped(n)
    cells = pictures.grid_cells(xy)
    assert len({tuple(c) for c in cells}) == n  # one image a cell
    columns, rows = pictures.grid_shape(n)
    assert cells[:, 0].max() < columns and cells[:, 1].max() < rows
    # a cell's neighbours (4-adjacent cells) are among the image's nearest in 2-D
    where = {tuple(c): i for i, c in enumerate(cells)}
    nearest = np.argsort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1:13]
    kept = []
    for i, (c, r) in enumerate(cells):
        around = [where[p] for p in ((c + 1, r), (c - 1, r), (c, r + 1), (c, r - 1)) if p in where]
        kept.append(np.mean([j in nearest[i] for j in around]))
    assert np.mean(kept) > 0.5  # a random placement keeps 12/199, about 0.06

    sizes = [(96, 64) if i % 2 else (48, 96) for i in range(n)]
    boxes, _ = pictures.map_boxes(xy, sizes, size, "grid")
    assert pictures.coverage(boxes, size)[1] == 0.0  # no thumbnail overlaps another
    assert all(0 <= left and left + w <= size and pictures.HEADER <= top
               and top + h <= size + pictures.HEADER for left, top, w, h in boxes)
    scattered, _ = pictures.map_boxes(xy, sizes, size, "scatter")
    assert pictures.coverage(scattered, size)[1] > 0.5  # today's layout piles them up
    assert pictures.coverage(boxes, size)[0] > 2 * pictures.coverage(scattered, size)[0]


def test_the_png_shows_each_thumbnail_framed_in_its_cell():
    n, size = 40, 600
    xy = clumped(n, seed=1)
    groups = [f"cluster {i % 4}" for i in range(n)]
    thumbs = [solid((0, 0, 0), (60, 40)) for _ in range(n)]
    img = png(pictures.draw_map(xy, groups, size, thumbs, layout="grid"))
    colours = dict(zip([f"cluster {i}" for i in range(4)], pictures.palette(4)))
    boxes, _ = pictures.map_boxes(xy, [t.size for t in thumbs], size, "grid")
    for (left, top, w, h), g in zip(boxes, groups):
        assert (img[top + h // 2, left + w // 2] == 0).all()  # the picture itself
        assert tuple(img[top - 2, left + w // 2]) == colours[g]  # its frame, its cluster
        assert tuple(img[top + h // 2, left - 2]) == colours[g]


def test_an_outlier_no_longer_sets_the_scale_of_the_scatter():
    xy = clumped(300, seed=2)
    boxes, _ = pictures.map_boxes(xy, [(1, 1)] * 300, 800, "scatter")
    centres = np.array([[left, top] for left, top, _, _ in boxes[3:]], dtype=float)
    spread_px = centres.max(axis=0) - centres.min(axis=0)
    assert (spread_px > 0.8 * (800 - 2 * pictures.map_geometry(300, 800)[1])).all()
