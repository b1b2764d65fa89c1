"""Clusters of a table's images (K-means) and their 2-D map (t-SNE or PCA): the catalog seen
as a whole.

- Clusters: K-means (mini-batch K-means above 10k images) with centroids and medoids; the
  recommendation bandit (:mod:`pgvision.recommend`) explores them.
- Maps: t-SNE (or PCA) to 2-D, stored in vision.map_2d; :mod:`pgvision.pictures` draws them.
"""

import time

import numpy as np

from . import featurestore, privileges, snapshots, spi
from .errors import require, require_choice, require_not_null

FN_CLUSTER = "vision.cluster"
FN_EMBED = "vision.embed_2d"


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
    privileges.require_table_owner(plpy, GD, fn, source, "clusters")
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
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
    privileges.require_table_owner(plpy, GD, fn, source, "the 2-D map")
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
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
