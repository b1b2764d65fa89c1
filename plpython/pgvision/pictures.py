"""PNG pictures of a catalog, drawn with Pillow: the 2-D map (``vision.plot_map``) and
contact sheets of a query image beside its neighbours (``vision.contact_sheet``).

Maps colour groups with a palette that stays distinct past ten groups, list them in a legend
beside the picture (never over it) in natural order (cluster 2 before cluster 10), and can
write ids or a column's text beside each image. Sheets put the query first, framed, then the
neighbours nearest first, each captioned with id, label and distance.

    >>> sorted(["cluster 10", "cluster 2", "cluster 1"], key=natural_key)
    ['cluster 1', 'cluster 2', 'cluster 10']
    >>> len(set(palette(30))) == 30
    True
"""

import colorsys
import io
import math
import re

import numpy as np

from . import featurestore, images, privileges, search, settings, spi
from .errors import (ImageError, PgvisionError, UNDEFINED_OBJECT, require, require_choice,
                     require_int_range, require_not_null)

FN_PLOT = "vision.plot_map"
FN_SHEET = "vision.contact_sheet"

# Tableau's ten, then their light pairs.
_TAB20 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
          (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
          (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229)]
QUERY_FRAME = (230, 126, 34)
TILE_BACKGROUND = (232, 232, 232)


def palette(n):
    """``n`` RGB colours, no two alike: Tableau's 20, then each next colour the one of an
    HSV grid farthest from all chosen so far (so 40 groups stay tellable apart)."""
    colours = list(_TAB20[:n])
    if len(colours) < n:
        grid = np.array([colorsys.hsv_to_rgb(h / 36, s, v) for h in range(36)
                         for s in (0.45, 0.7, 0.95) for v in (0.5, 0.72, 0.95)]) * 255
        nearest = np.min(np.linalg.norm(grid[:, None, :] - np.array(colours)[None], axis=2),
                         axis=1)
        while len(colours) < n:
            pick = int(np.argmax(nearest))
            colours.append(tuple(int(round(c)) for c in grid[pick]))
            nearest = np.minimum(nearest, np.linalg.norm(grid - grid[pick], axis=1))
    return colours


def natural_key(text):
    """Sort key that orders the numbers inside text by value."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", str(text)) if part]


def _font(size):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()


# --- the map ------------------------------------------------------------------------------

LEGEND_WIDTH = 220
HEADER = 30


LAYOUTS = ("grid", "scatter")
CLIP_PERCENTILES = (1.0, 99.0)


def map_geometry(n, size):
    """(thumbnail side, margin) for n images on a size x size scatter plot: thumbnails shrink
    as the map fills, between 24 and 96 pixels."""
    thumb = int(min(96, max(24, 0.9 * size / math.sqrt(max(n, 1)))))
    return thumb, thumb // 2 + 6


def spread(xy, percentiles=CLIP_PERCENTILES):
    """``xy`` scaled to [0, 1] on each axis between the given percentiles: an outlier (t-SNE
    puts a few images far out) is clipped to the edge instead of setting the scale.

    >>> spread(np.array([[0.0, 0], [1, 1], [2, 2], [3, 3], [100, 3]]), (0, 75))[:, 0].round(2)
    array([0.  , 0.33, 0.67, 1.  , 1.  ])
    """
    xy = np.asarray(xy, dtype=np.float64)
    if not len(xy):
        return xy.reshape(0, 2)
    lo, hi = np.percentile(xy, percentiles, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.clip((xy - lo) / span, 0.0, 1.0)


def grid_shape(n):
    """(columns, rows) of the near-square grid that holds n images."""
    columns = max(1, math.ceil(math.sqrt(n)))
    return columns, max(1, math.ceil(n / columns))


def grid_cells(xy):
    """(column, row) of each point: the assignment of points to the cells of a grid_shape
    grid that minimises the total squared distance between a point's :func:`spread` position
    and its cell's centre (SciPy's ``linear_sum_assignment``), so every image gets a cell
    of its own and neighbours in 2-D stay neighbours.

    >>> grid_cells(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])).tolist()
    [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    from scipy.optimize import linear_sum_assignment

    n = len(xy)
    columns, rows = grid_shape(n)
    unit = spread(xy)
    centres = np.stack(np.meshgrid((np.arange(columns) + 0.5) / columns,
                                   (np.arange(rows) + 0.5) / rows), axis=-1).reshape(-1, 2)
    cost = ((unit[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
    points, cells = linear_sum_assignment(cost)
    out = np.empty(n, dtype=np.int64)
    out[points] = cells
    return np.stack([out % columns, out // columns], axis=1)


def thumbnail_side(n, size=800, layout="scatter", labels=False):
    """The square a thumbnail is fitted into: a grid cell less its frame (and text line), or
    :func:`map_geometry`'s side for a scatter."""
    if layout != "grid":
        return map_geometry(n, size)[0]
    cell = (size - 16) / max(grid_shape(n))
    return max(4, int(cell) - 6 - (14 if labels and cell >= 40 else 0))


def map_boxes(xy, sizes, size=800, layout="scatter", labels=False, clip=CLIP_PERCENTILES):
    """Where each thumbnail goes on the plot: (left, top, width, height) for thumbnails of
    the given (width, height), and the side they were fitted into. ``grid``: one cell each;
    ``scatter``: centred on the spread 2-D position (thumbnails may overlap)."""
    n = len(xy)
    side = thumbnail_side(n, size, layout, labels)
    if layout == "grid":
        columns, rows = grid_shape(n)
        pad = 8
        cell = (size - 2 * pad) / max(columns, rows)
        text = 14 if labels and cell >= 40 else 0
        left0 = pad + (size - 2 * pad - cell * columns) / 2
        top0 = pad + (size - 2 * pad - cell * rows) / 2
        centres = [(left0 + (c + 0.5) * cell, top0 + r * cell + (cell - text) / 2)
                   for c, r in grid_cells(xy)]
    else:
        margin = map_geometry(n, size)[1]
        margin += 14 if labels else 0  # room for the text under the lowest image
        centres = margin + spread(xy, clip) * (size - 2 * margin)
    boxes = []
    for (x, y), (w, h) in zip(centres, sizes):
        scale = min(side / max(w, 1), side / max(h, 1), 1.0) if w and h else 1.0
        tw, th = max(1, int(w * scale)), max(1, int(h * scale))
        boxes.append((int(x) - tw // 2, int(y) - th // 2 + HEADER, tw, th))
    return boxes, side


def coverage(boxes, size):
    """(share of the size x size plot that thumbnails cover, share of thumbnails that another
    one overlaps): how well a map uses its space."""
    covered = np.zeros((size, size), dtype=bool)
    for left, top, w, h in boxes:
        covered[max(top - HEADER, 0):max(top - HEADER + h, 0), max(left, 0):max(left + w, 0)] = True
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    left, top, right, bottom = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    overlapped = 0
    for i in range(len(b)):
        hits = (left[i] < right) & (left < right[i]) & (top[i] < bottom) & (top < bottom[i])
        overlapped += int(hits.sum() > 1)  # itself, and another
    return float(covered.mean()), overlapped / max(len(b), 1)


def draw_map(xy, groups, size=800, thumbnails=None, title="", labels=None, layout="scatter"):
    """PNG bytes: a size x size plot of the points xy (thumbnails where given, framed in
    their group's colour), a title band above it and the legend in a panel to its right."""
    from PIL import Image, ImageDraw

    names = sorted(set(groups), key=natural_key)
    colour = dict(zip(names, palette(len(names))))
    counts = {g: 0 for g in names}
    for g in groups:
        counts[g] += 1
    img = Image.new("RGB", (size + LEGEND_WIDTH, size + HEADER), "white")
    draw = ImageDraw.Draw(img)
    pictures = thumbnails or [None] * len(xy)
    sizes = [p.size if p is not None else (1, 1) for p in pictures]
    boxes, side = map_boxes(xy, sizes, size, layout, bool(labels))
    radius = max(3, side // 8)
    for (left, top, w, h), g, picture in zip(boxes, groups, pictures):
        if picture is not None:
            t = picture.copy()
            t.thumbnail((w, h))
            img.paste(t, (left, top))
            draw.rectangle([left - 2, top - 2, left + t.width + 1, top + t.height + 1],
                           outline=colour[g], width=2)
        else:
            x, y = left + w // 2, top + h // 2
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour[g])
    if labels:
        font = _font(11)
        for (left, top, w, h), text in zip(boxes, labels):
            if text is not None:
                below = top + (h if thumbnails else h // 2 + radius) + 3
                draw.text((left + w // 2, below), str(text)[:24 if layout == "scatter" else
                                                             max(3, side // 6)],
                          fill="black", font=font, anchor="mt",
                          stroke_width=2, stroke_fill="white")
    draw.text((10, 8), title, fill="black", font=_font(14))
    draw.line([(size, HEADER), (size, size + HEADER)], fill=(210, 210, 210))
    _legend(draw, names, colour, counts, size + 12, HEADER + 4, size - 8)
    return _png(img)


def legend_rows(n, height, row=18):
    """How many legend entries fit in ``height`` pixels (one row kept for '... more')."""
    fits = max(1, height // row)
    return n if n <= fits else fits - 1


def _legend(draw, names, colour, counts, left, top, height, row=18):
    font = _font(12)
    shown = legend_rows(len(names), height, row)
    for i, g in enumerate(names[:shown]):
        y = top + row * i
        draw.rectangle([left, y + 3, left + 12, y + 15], fill=colour[g])
        draw.text((left + 20, y + 2), f"{str(g)[:22]} ({counts[g]})", fill="black", font=font)
    if shown < len(names):
        draw.text((left, top + row * shown + 2), f"... and {len(names) - shown} more",
                  fill="grey", font=font)


def plot_map(plpy, GD, model=None, color_by="cluster", source=None, thumbnails=False,
             image_column="image", id_column="id", size=800, labels=None, layout=None):
    """PNG (bytea) of the stored 2-D map, coloured by cluster or by a classifier's labels;
    ``labels`` writes 'id' or a column's text beside each image. ``layout``: 'grid' (each
    image in a cell of its own, neighbours kept; the default with thumbnails) or 'scatter'
    (at its 2-D position; the default without)."""
    fn = FN_PLOT
    require_not_null(fn, "color_by", color_by)
    require_int_range(fn, "size", size, 200, 4000)
    if layout is not None:
        require_choice(fn, "layout", layout, LAYOUTS)
    layout = layout or ("grid" if thumbnails else "scatter")
    if thumbnails or labels not in (None, "id"):  # the columns it reads
        require_not_null(fn, "id_column", id_column)
    if thumbnails:
        require_not_null(fn, "image_column", image_column)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    rows = plpy.execute(spi.plan(plpy, GD, """
        SELECT m.image_id, m.x, m.y, m.method, c.cluster
        FROM vision.map_2d m LEFT JOIN vision.clusters c USING (model, source, image_id)
        WHERE m.model = $1 AND m.source = $2 ORDER BY m.image_id""", ["text", "oid"]),
        [model_row["name"], source])
    if not rows:
        raise PgvisionError(fn, f"model {model_row['name']!r} has no 2-D map for this table",
                            UNDEFINED_OBJECT, hint="Run vision.embed_2d(...) first.")
    if color_by == "cluster":
        groups = ["none" if r["cluster"] is None else f"cluster {r['cluster']}" for r in rows]
    else:
        predicted = dict((r["image_id"], r["label"]) for r in plpy.execute(spi.plan(
            plpy, GD, "SELECT image_id, label FROM vision.predictions WHERE classifier = $1 "
            "AND source = $2", ["text", "oid"]), [color_by, source]))
        if not predicted:
            raise PgvisionError(fn, f'argument "color_by" must be \'cluster\' or a classifier '
                                f"with predictions for this table (vision.classify_table), got "
                                f"{color_by!r}", UNDEFINED_OBJECT)
        groups = [predicted.get(r["image_id"], "unlabelled") for r in rows]
    ids = [r["image_id"] for r in rows]
    if thumbnails:
        settings.require_within_limit(plpy, GD, fn, "thumbnails (images on the map)", len(ids),
                                 "pgvision.max_picture_images")
    stored = {}
    if thumbnails or (labels is not None and labels != "id"):
        stored = _read_images(plpy, GD, fn, source, ids, id_column,
                              image_column if thumbnails else None,
                              None if labels in (None, "id") else labels, "labels")
    pictures = None
    if thumbnails:
        max_pixels = settings.max_pixels(plpy, GD)
        side = thumbnail_side(len(ids), size, layout, labels is not None)
        pictures = [_decoded(stored.get(i, {}).get("image"), side, max_pixels) for i in ids]
    texts = None
    if labels == "id":
        texts = ids
    elif labels is not None:
        texts = [stored.get(i, {}).get("label") for i in ids]
    return draw_map(np.array([[r["x"], r["y"]] for r in rows], dtype=np.float64), groups, size,
                    pictures, f"{model_row['name']} features, {rows[0]['method']}, "
                    f"{len(rows)} images", texts, layout)


# --- contact sheets -----------------------------------------------------------------------

SHEET_GAP = 10
SHEET_CAPTION = 38


def sheet_layout(n, tile=160, columns=5):
    """(width, height, boxes) of a sheet of n tiles: box i is the (left, top) of tile i's
    picture area, tile x tile pixels, filled row by row; a caption band lies under each."""
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    width = SHEET_GAP + columns * (tile + SHEET_GAP)
    height = HEADER + rows * (tile + SHEET_CAPTION + SHEET_GAP) + SHEET_GAP
    boxes = [(SHEET_GAP + (i % columns) * (tile + SHEET_GAP),
              HEADER + (i // columns) * (tile + SHEET_CAPTION + SHEET_GAP)) for i in range(n)]
    return width, height, boxes


def draw_sheet(tiles, tile=160, columns=5, title=""):
    """PNG bytes of tiles [(picture or None, [caption lines], is_query)], in order."""
    from PIL import Image, ImageDraw

    width, height, boxes = sheet_layout(len(tiles), tile, columns)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font(12)
    for (picture, caption, is_query), (left, top) in zip(tiles, boxes):
        draw.rectangle([left, top, left + tile - 1, top + tile - 1], fill=TILE_BACKGROUND)
        if picture is not None:
            t = picture.copy()
            t.thumbnail((tile, tile))
            img.paste(t, (left + (tile - t.width) // 2, top + (tile - t.height) // 2))
        else:
            draw.text((left + tile // 2, top + tile // 2), "no picture", fill="grey",
                      font=font, anchor="mm")
        if is_query:
            draw.rectangle([left - 4, top - 4, left + tile + 3, top + tile + 3],
                           outline=QUERY_FRAME, width=4)
        for line_no, line in enumerate(caption[:2]):
            draw.text((left, top + tile + 5 + 15 * line_no), line[:tile // 6], fill="black",
                      font=font)
    draw.text((SHEET_GAP, 8), title, fill="black", font=_font(14))
    return _png(img)


def contact_sheet(plpy, GD, image_id=None, image_ids=None, k=8, source=None, model=None,
                  label_column=None, image_column="image", id_column="id", tile=160,
                  columns=5):
    """PNG (bytea): a stored image and its k nearest neighbours (``image_id``), or the
    images ``image_ids`` in that order, captioned with id, ``label_column`` and distance."""
    fn = FN_SHEET
    require(fn, "image_id", "neither" if image_id is None else "both",
            (image_id is None) != (image_ids is None),
            "given, or image_ids: exactly one of them")
    require_int_range(fn, "k", k, 1, 200)
    require_int_range(fn, "tile", tile, 48, 512)
    require_int_range(fn, "columns", columns, 1, 20)
    require_not_null(fn, "id_column", id_column)
    require_not_null(fn, "image_column", image_column)
    if image_ids is not None:
        require(fn, "image_ids", f"{len(image_ids)} ids", 1 <= len(image_ids) <= 200,
                "an array of 1 to 200 image ids")
        require(fn, "image_ids", "NULL element", None not in image_ids, "an array without NULLs")
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    if image_id is not None:
        found = search.similar(plpy, GD, image_id, k, model_row["name"], "cosine", source)
        ids = [image_id] + [i for i, _, _ in found]
        distances = {i: d for i, d, _ in found}
    else:
        ids, distances = list(image_ids), {}
    stored = _read_images(plpy, GD, fn, source, ids, id_column, image_column, label_column,
                          "label_column")
    tiles, max_pixels = [], settings.max_pixels(plpy, GD)
    for position, i in enumerate(ids):
        row = stored.get(i, {})
        head = ("query " if image_id is not None and position == 0 else
                f"{position}. " if image_id is not None else "") + f"id {i}"
        if i in distances:
            head += f"  d={distances[i]:.3f}"
        caption = [head] + ([str(row["label"])] if row.get("label") is not None else [])
        tiles.append((_decoded(row.get("image"), tile, max_pixels), caption,
                      image_id is not None and position == 0))
    title = (f"{len(ids) - 1} nearest to image {image_id} ({model_row['name']}, cosine)"
             if image_id is not None else f"{len(ids)} images")
    return draw_sheet(tiles, tile, columns, f"{privileges.table_name(plpy, GD, source)}: {title}")


def _read_images(plpy, GD, fn, source, ids, id_column, image_column, label_column,
                 label_argument):
    """{id: {"image": bytes or None, "label": text or None}} of the ids, read as the caller
    (so the table's privileges and row security apply)."""
    privileges.require_column(plpy, GD, fn, "id_column", source, id_column)
    picked = [f"{plpy.quote_ident(id_column)}::pg_catalog.int8 AS id"]
    if image_column is not None:
        privileges.require_column(plpy, GD, fn, "image_column", source, image_column)
        picked.append(f"{plpy.quote_ident(image_column)} AS image")
    if label_column is not None:
        privileges.require_column(plpy, GD, fn, label_argument, source, label_column)
        picked.append(f"{plpy.quote_ident(label_column)}::pg_catalog.text AS label")
    rows = plpy.execute(plpy.prepare(
        f"SELECT {', '.join(picked)} FROM {privileges.table_name(plpy, GD, source)} "
        f"WHERE {plpy.quote_ident(id_column)} OPERATOR(pg_catalog.=) ANY ($1)", ["int8[]"]),
        [list(ids)])
    return {r["id"]: {"image": r.get("image"), "label": r.get("label")} for r in rows}


def _decoded(data, side, max_pixels):
    """An RGB picture of image bytes (decoded near ``side`` pixels), or None."""
    if data is None:
        return None
    try:
        return images.decode(data, max_pixels, (side, side))
    except ImageError:
        return None
