"""The catalog as a whole: K-means clusters of a table's images, 2-D maps (t-SNE or PCA),
and PNG plots of them.

- Clusters: K-means (mini-batch K-means above 10k images) with centroids and medoids; the
  recommendation bandit (:mod:`pgvision.recommend`) explores them.
- Maps: t-SNE (or PCA) to 2-D, and a PNG scatter drawn with Pillow.
"""

import io
import time

import numpy as np

from . import featurestore, spi
from .errors import (UNDEFINED_OBJECT, PgvisionError, require, require_choice,
                     require_int_range, require_not_null)

FN_CLUSTER = "vision.cluster"
FN_EMBED = "vision.embed_2d"
FN_PLOT = "vision.plot_map"


# --- clusters ---------------------------------------------------------------------------

def kmeans(X, k, seed=0):
    """(labels, centroids): K-means, mini-batch above 10k rows."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(X) > 10_000:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=2048, n_init=3)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=3)
    labels = model.fit_predict(X)
    return labels, model.cluster_centers_.astype(np.float32)


def cluster(plpy, GD, model=None, k=8, method="kmeans", source=None):
    """Cluster a table's images; store assignments, centroids, sizes and medoids."""
    fn = FN_CLUSTER
    require_choice(fn, "method", method, ("kmeans",))
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    require_not_null(fn, "k", k)
    require(fn, "k", k, 1 <= k <= len(matrix.ids),
            f"between 1 and the number of images with features ({len(matrix.ids)})")
    labels, centroids = kmeans(matrix.unit, k)
    name = model_row["name"]
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.clusters WHERE model = $1 "
                                 "AND source = $2", ["text", "oid"]), [name, source])
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.cluster_centroids WHERE "
                                 "model = $1 AND source = $2", ["text", "oid"]), [name, source])
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.clusters (model, source, image_id, cluster)
        SELECT $1, $2, pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::int4[])""",
        ["text", "oid", "int8[]", "int4[]"]),
        [name, source, matrix.ids.tolist(), labels.tolist()])
    for c in range(k):
        members = np.flatnonzero(labels == c)
        gaps = np.linalg.norm(matrix.unit[members] - centroids[c], axis=1)
        medoid = int(matrix.ids[members[np.argmin(gaps)]]) if len(members) else None
        spi.write(plpy, GD, spi.plan(plpy, GD, """
            INSERT INTO vision.cluster_centroids (model, source, cluster, size, medoid_image_id,
                                                  centroid)
            VALUES ($1, $2, $3, $4, $5, $6)""",
            ["text", "oid", "int4", "int4", "int8", "float4[]"]),
            [name, source, c, len(members), medoid, centroids[c].tolist()])
    # The bandit's Beta counts (view vision.bandit_state) follow the new clusters by themselves.
    return k



# --- 2-D maps ---------------------------------------------------------------------------

def embed(X, method, seed=0):
    from sklearn.decomposition import PCA

    if method == "pca" or len(X) < 5:
        return PCA(n_components=2, random_state=seed).fit_transform(X)
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(50, X.shape[1], len(X)), random_state=seed).fit_transform(X)
    perplexity = float(min(30, max(2, (len(X) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=500).fit_transform(reduced)


def embed_2d(plpy, GD, model=None, method="tsne", source=None):
    fn = FN_EMBED
    require_choice(fn, "method", method, ("tsne", "pca"))
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    require(fn, "model", model_row["name"], len(matrix.ids) >= 3,
            "a model with features for at least 3 images in this table")
    plpy.notice(f"{fn}: {method} of {len(matrix.ids)} images x {matrix.dims} dims ...")
    started = time.monotonic()
    xy = embed(matrix.unit, method)
    seconds = time.monotonic() - started
    plpy.notice(f"{fn}: done in {seconds:.1f} s")
    name = model_row["name"]
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.map_2d WHERE model = $1 "
                                 "AND source = $2", ["text", "oid"]), [name, source])
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.map_2d (model, source, image_id, method, x, y)
        SELECT $1, $2, pg_catalog.unnest($3::int8[]), $4, pg_catalog.unnest($5::float4[]),
               pg_catalog.unnest($6::float4[])""",
        ["text", "oid", "int8[]", "text", "float4[]", "float4[]"]),
        [name, source, matrix.ids.tolist(), method, xy[:, 0].tolist(), xy[:, 1].tolist()])
    return float(seconds)


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def draw_map(xy, groups, size=800, thumbnails=None, title=""):
    """PNG bytes: points at xy coloured by group (legend), or thumbnails where given."""
    from PIL import Image, ImageDraw

    margin = 40
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pts = margin + (xy - lo) / span * (size - 2 * margin)
    names = sorted(set(groups), key=str)
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)}
    for (x, y), g, thumb in zip(pts, groups, thumbnails or [None] * len(pts)):
        if thumb is not None:
            t = thumb.copy()
            t.thumbnail((36, 36))
            img.paste(t, (int(x) - t.width // 2, int(y) - t.height // 2))
            draw.rectangle([int(x) - t.width // 2 - 1, int(y) - t.height // 2 - 1,
                            int(x) + t.width // 2, int(y) + t.height // 2], outline=colour[g])
        else:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour[g])
    shown = names[:20]
    draw.rectangle([size - 156, 4, size - 4, 14 + 14 * len(shown)], fill="white", outline="grey")
    for i, g in enumerate(shown):
        draw.rectangle([size - 150, 10 + 14 * i, size - 140, 20 + 14 * i], fill=colour[g])
        draw.text((size - 135, 8 + 14 * i), str(g)[:20], fill="black")
    draw.text((10, 10), title, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def plot_map(plpy, GD, model=None, color_by="cluster", source=None, thumbnails=False,
             image_column="image", id_column="id", size=800):
    """PNG (bytea) of the stored 2-D map, coloured by cluster or by a classifier's labels."""
    fn = FN_PLOT
    require_not_null(fn, "color_by", color_by)
    require_int_range(fn, "size", size, 200, 4000)
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
        labels = dict((r["image_id"], r["label"]) for r in plpy.execute(plpy.prepare(
            "SELECT image_id, label FROM vision.predictions WHERE classifier = $1 "
            "AND source = $2", ["text", "oid"]), [color_by, source]))
        if not labels:
            raise PgvisionError(fn, f'argument "color_by" must be \'cluster\' or a classifier '
                                f"with predictions for this table (vision.classify_table), got "
                                f"{color_by!r}", UNDEFINED_OBJECT)
        groups = [labels.get(r["image_id"], "unlabelled") for r in rows]
    thumbs = None
    if thumbnails:
        from PIL import Image

        table = featurestore.table_name(plpy, GD, source)
        for argument, column in (("id_column", id_column), ("image_column", image_column)):
            require_not_null(fn, argument, column)
            if not plpy.execute(spi.plan(plpy, GD, "SELECT 1 FROM pg_catalog.pg_attribute "
                                         "WHERE attrelid = $1 AND attname = $2 AND attnum > 0 "
                                         "AND NOT attisdropped", ["oid", "name"]),
                                [source, column]):
                raise PgvisionError(fn, f'argument "{argument}": table {table} has no column '
                                    f"{column!r}", UNDEFINED_OBJECT)
        data = dict((r["id"], r["img"]) for r in plpy.execute(
            f"SELECT {plpy.quote_ident(id_column)}::bigint AS id, "
            f"{plpy.quote_ident(image_column)} AS img FROM {table}"))
        thumbs = []
        for r in rows:
            try:
                thumbs.append(Image.open(io.BytesIO(bytes(data[r["image_id"]]))).convert("RGB"))
            except Exception:  # an undecodable row is drawn as a point
                thumbs.append(None)
    xy = np.array([[r["x"], r["y"]] for r in rows], dtype=np.float64)
    return draw_map(xy, groups, size, thumbs,
                    f"{model_row['name']} features, {rows[0]['method']}, {len(rows)} images")
