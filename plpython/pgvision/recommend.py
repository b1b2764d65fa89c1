"""Taste from a few likes and dislikes, clusters, Thompson-sampling exploration, 2-D maps.

- Votes live in ``vision.votes`` (one per user and image, last vote wins).
- A user's taste model is an elastic-net logistic model (scikit-learn ``SGDClassifier``,
  log loss) trained with ``partial_fit`` over the user's votes after each vote, stored as
  plain arrays. With no votes, or votes of one kind only, ``recommend`` falls back to
  popularity or to similarity to the liked images, and says which in its ``strategy`` column.
- Clusters: K-means (mini-batch K-means above 10k images) with centroids and medoids.
- Bandit: a Beta(1, 1) prior per (user, cluster), updated by votes; ``bandit_next`` draws
  from each cluster's Beta, takes the cluster with the highest draw and returns an image of it
  the user has not voted on.
- Maps: t-SNE (or PCA) to 2-D, and a PNG scatter drawn with Pillow.
"""

import io
import time

import numpy as np

from . import featurestore, models
from .errors import (UNDEFINED_OBJECT, PgvisionError, require, require_choice,
                     require_int_range, require_not_null)
from .search import top_k

FN_VOTE = "vision.record_vote"
FN_RECOMMEND = "vision.recommend"
FN_CLUSTER = "vision.cluster"
FN_BANDIT = "vision.bandit_next"
FN_EMBED = "vision.embed_2d"
FN_PLOT = "vision.plot_map"
FN_SCORE = "vision._score_images"
STRATEGIES = ("taste model", "similar to likes", "popularity")
EPOCHS = 20


# --- taste model ------------------------------------------------------------------------

def fit_taste(X, liked, seed=0):
    """Elastic-net logistic model by SGD partial_fit epochs; returns (mean, scale, w, b)."""
    from sklearn.linear_model import SGDClassifier

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-6] = 1.0
    Z = (X - mean) / scale
    clf = SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=1e-3, l1_ratio=0.15,
                        learning_rate="optimal", random_state=seed)
    order = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        perm = order.permutation(len(Z))
        clf.partial_fit(Z[perm], liked[perm].astype(int), classes=[0, 1])
    return mean, scale, clf.coef_[0], float(clf.intercept_[0])


def like_probability(taste, X):
    mean, scale, w, b = taste
    z = ((X - mean) / scale) @ w + b
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def record_vote(plpy, GD, user_id, image_id, liked, model=None, source=None):
    """Store a vote (idempotent per user and image), update the bandit and taste model."""
    fn = FN_VOTE
    for argument, value in (("user_id", user_id), ("image_id", image_id), ("liked", liked)):
        require_not_null(fn, argument, value)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    has = plpy.execute(models.plan(plpy, GD, "has_feature",
                                   "SELECT 1 FROM vision.features WHERE model = $1 AND "
                                   "source = $2 AND image_id = $3", ["text", "oid", "int8"]),
                       [model_row["name"], source, image_id])
    if not has:
        raise PgvisionError(fn, f'argument "image_id": image {image_id} has no features for '
                            f"model {model_row['name']!r}", UNDEFINED_OBJECT)
    # Serialise votes on the same (user, image) so the bandit counts each change once.
    previous = plpy.execute(models.plan(plpy, GD, "vote_lock", """
        SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2 || '/' || $3::text
                                                      || '/' || $4::text, 0)),
               (SELECT liked FROM vision.votes WHERE user_id = $1 AND model = $2
                AND source = $3 AND image_id = $4) AS previous""",
        ["text", "text", "oid", "int8"]),
        [user_id, model_row["name"], source, image_id])[0]["previous"]
    if previous == liked:
        return False
    plpy.execute(models.plan(plpy, GD, "vote_upsert", """
        INSERT INTO vision.votes AS v (user_id, model, source, image_id, liked)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (user_id, model, source, image_id) DO UPDATE
          SET liked = EXCLUDED.liked, voted_at = clock_timestamp()""",
        ["text", "text", "oid", "int8", "bool"]),
        [user_id, model_row["name"], source, image_id, liked])
    # Bandit: one success or failure for the image's cluster (moved, if the vote changed).
    plpy.execute(models.plan(plpy, GD, "bandit_update", """
        INSERT INTO vision.bandit_state AS b (user_id, model, source, cluster, alpha, beta)
        SELECT $1, c.model, c.source, c.cluster, 1 + $5::int, 1 + (NOT $5)::int
        FROM vision.clusters c WHERE c.model = $2 AND c.source = $3 AND c.image_id = $4
        ON CONFLICT (user_id, model, source, cluster) DO UPDATE
          SET alpha = b.alpha + $5::int - coalesce($6::int, 0),
              beta = b.beta + (NOT $5)::int - coalesce((NOT $6)::int, 0)""",
        ["text", "text", "oid", "int8", "bool", "bool"]),
        [user_id, model_row["name"], source, image_id, liked, previous])
    _retrain_taste(plpy, GD, fn, user_id, model_row, source)
    return True


def _votes(plpy, GD, user_id, model, source):
    rows = plpy.execute(models.plan(plpy, GD, "user_votes",
                                    "SELECT image_id, liked FROM vision.votes WHERE user_id = $1 "
                                    "AND model = $2 AND source = $3 ORDER BY image_id",
                                    ["text", "text", "oid"]), [user_id, model, source])
    return (np.array([r["image_id"] for r in rows], dtype=np.int64),
            np.array([r["liked"] for r in rows], dtype=bool))


def _retrain_taste(plpy, GD, fn, user_id, model_row, source):
    ids, liked = _votes(plpy, GD, user_id, model_row["name"], source)
    if len(set(liked.tolist())) < 2:
        return
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    keep = np.isin(ids, matrix.ids)
    taste = fit_taste(matrix.vectors[matrix.positions(ids[keep])], liked[keep])
    buf = io.BytesIO()
    np.savez(buf, mean=taste[0], scale=taste[1], w=taste[2], b=np.array([taste[3]]))
    plpy.execute(models.plan(plpy, GD, "taste_upsert", """
        INSERT INTO vision.taste_models AS t (user_id, model, source, weights, votes)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (user_id, model, source) DO UPDATE SET weights = EXCLUDED.weights,
            votes = EXCLUDED.votes, updated_at = clock_timestamp()""",
        ["text", "text", "oid", "bytea", "int4"]),
        [user_id, model_row["name"], source, buf.getvalue(), int(keep.sum())])


def recommend(plpy, GD, user_id, k=10, exclude_seen=True, model=None, source=None):
    """Rows (image_id, score, strategy), best first; strategy is 'taste model',
    'similar to likes' or 'popularity'."""
    fn = FN_RECOMMEND
    _validate_recommend(fn, user_id, k, exclude_seen)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    strategy, payload, seen = preferences(plpy, GD, user_id, model_row, source, lambda: matrix)
    return [(i, score, strategy)
            for i, score in best_scored(matrix, strategy, payload, seen if exclude_seen else (), k)]


def _validate_recommend(fn, user_id, k, exclude_seen):
    require_not_null(fn, "user_id", user_id)
    require_int_range(fn, "k", k, 1, 10_000)
    require_not_null(fn, "exclude_seen", exclude_seen)


def preferences(plpy, GD, user_id, model_row, source, voted_matrix):
    """What a user's candidates are scored with: (strategy, payload, ids the user voted on).

    The payload is the taste model's ``.npz`` bytes, the mean unit vector of the liked images
    (``voted_matrix()`` must hold them), or (image ids, net votes) for popularity. It is all
    a shard needs to score its own images (vision_cluster.recommend)."""
    ids, liked = _votes(plpy, GD, user_id, model_row["name"], source)
    taste = plpy.execute(models.plan(plpy, GD, "taste", "SELECT weights FROM vision.taste_models "
                                     "WHERE user_id = $1 AND model = $2 AND source = $3",
                                     ["text", "text", "oid"]), [user_id, model_row["name"], source])
    if taste and liked.any() and (~liked).any():
        return "taste model", bytes(taste[0]["weights"]), ids
    if liked.any():
        matrix = voted_matrix()
        return "similar to likes", matrix.unit[matrix.positions(ids[liked])].mean(axis=0), ids
    popular = plpy.execute(models.plan(plpy, GD, "popularity", """
        SELECT image_id, sum(CASE WHEN liked THEN 1 ELSE -1 END) AS s
        FROM vision.votes WHERE model = $1 AND source = $2 GROUP BY image_id ORDER BY 1""",
        ["text", "oid"]), [model_row["name"], source])
    return "popularity", (np.array([r["image_id"] for r in popular], dtype=np.int64),
                          np.array([r["s"] for r in popular], dtype=np.float64)), ids


def scores(matrix, strategy, payload):
    """The score of every image of ``matrix`` under a strategy of :func:`preferences`."""
    if strategy == "taste model":
        with np.load(io.BytesIO(payload), allow_pickle=False) as a:
            params = (a["mean"], a["scale"], a["w"], float(a["b"][0]))
        return like_probability(params, matrix.vectors)
    if strategy == "similar to likes":
        return matrix.unit @ payload
    known, net = payload
    score = np.zeros(len(matrix.ids))
    present = np.isin(known, matrix.ids)
    score[matrix.positions(known[present])] = net[present]
    return score


def best_scored(matrix, strategy, payload, exclude, k):
    """[(image_id, score)] of the k best-scored images not in ``exclude``; ties by id."""
    candidates = np.ones(len(matrix.ids), dtype=bool)
    if len(exclude):
        candidates &= ~np.isin(matrix.ids, np.asarray(exclude, dtype=np.int64))
    score = scores(matrix, strategy, payload)
    found, dist = top_k(matrix.ids[candidates], -score[candidates].astype(np.float64), k)
    return [(int(i), float(-d)) for i, d in zip(found, dist)]


def score_images(plpy, GD, model, source, k, exclude, strategy, taste, centre, popular_ids,
                 popular_net):
    """This node's k best images for a user's preferences computed elsewhere (a coordinator):
    rows (image_id, score). Internal to vision_cluster.recommend."""
    fn = FN_SCORE
    require_int_range(fn, "k", k, 1, 10_000)
    require_choice(fn, "strategy", strategy, STRATEGIES)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    if strategy == "taste model":
        require_not_null(fn, "taste", taste)
        payload = bytes(taste)
    elif strategy == "similar to likes":
        require_not_null(fn, "centre", centre)
        payload = np.asarray(centre, dtype=np.float32)
        require(fn, "centre", f"{len(payload)}-d", len(payload) == model_row["dims"],
                f"a {model_row['dims']}-d vector")
    else:
        payload = (np.asarray(popular_ids or [], dtype=np.int64),
                   np.asarray(popular_net or [], dtype=np.float64))
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)  # after the checks
    return best_scored(matrix, strategy, payload, exclude or (), k)


# --- clusters and bandit ----------------------------------------------------------------

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
    plpy.execute(models.plan(plpy, GD, "clear_clusters",
                             "DELETE FROM vision.clusters WHERE model = $1 AND source = $2",
                             ["text", "oid"]), [name, source])
    plpy.execute(models.plan(plpy, GD, "clear_centroids",
                             "DELETE FROM vision.cluster_centroids WHERE model = $1 AND "
                             "source = $2", ["text", "oid"]), [name, source])
    plpy.execute(models.plan(plpy, GD, "clear_bandit",
                             "DELETE FROM vision.bandit_state WHERE model = $1 AND source = $2",
                             ["text", "oid"]), [name, source])
    plpy.execute(models.plan(plpy, GD, "save_clusters", """
        INSERT INTO vision.clusters (model, source, image_id, cluster)
        SELECT $1, $2, unnest($3::int8[]), unnest($4::int4[])""",
        ["text", "oid", "int8[]", "int4[]"]),
        [name, source, matrix.ids.tolist(), labels.tolist()])
    for c in range(k):
        members = np.flatnonzero(labels == c)
        gaps = np.linalg.norm(matrix.unit[members] - centroids[c], axis=1)
        medoid = int(matrix.ids[members[np.argmin(gaps)]]) if len(members) else None
        plpy.execute(models.plan(plpy, GD, "save_centroid", """
            INSERT INTO vision.cluster_centroids (model, source, cluster, size, medoid_image_id,
                                                  centroid)
            VALUES ($1, $2, $3, $4, $5, $6)""",
            ["text", "oid", "int4", "int4", "int8", "float4[]"]),
            [name, source, c, len(members), medoid, centroids[c].tolist()])
    # Votes already cast count for the new clusters.
    plpy.execute(models.plan(plpy, GD, "replay_bandit", """
        INSERT INTO vision.bandit_state (user_id, model, source, cluster, alpha, beta)
        SELECT v.user_id, v.model, v.source, c.cluster, 1 + count(*) FILTER (WHERE v.liked),
               1 + count(*) FILTER (WHERE NOT v.liked)
        FROM vision.votes v JOIN vision.clusters c USING (model, source, image_id)
        WHERE v.model = $1 AND v.source = $2
        GROUP BY v.user_id, v.model, v.source, c.cluster""", ["text", "oid"]), [name, source])
    return k


def bandit_next(plpy, GD, user_id, model=None, source=None, seed=None):
    """Thompson sampling over clusters: (cluster, image_id, draw) of an unseen image."""
    fn = FN_BANDIT
    require_not_null(fn, "user_id", user_id)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    name = model_row["name"]
    arms = plpy.execute(models.plan(plpy, GD, "bandit_arms", """
        SELECT c.cluster, coalesce(b.alpha, 1) AS alpha, coalesce(b.beta, 1) AS beta,
               (SELECT array_agg(cl.image_id ORDER BY cl.image_id) FROM vision.clusters cl
                WHERE cl.model = c.model AND cl.source = c.source AND cl.cluster = c.cluster
                  AND NOT EXISTS (SELECT 1 FROM vision.votes v WHERE v.user_id = $1
                                  AND v.model = cl.model AND v.source = cl.source
                                  AND v.image_id = cl.image_id)) AS unseen
        FROM vision.cluster_centroids c
        LEFT JOIN vision.bandit_state b ON b.user_id = $1 AND b.model = c.model
             AND b.source = c.source AND b.cluster = c.cluster
        WHERE c.model = $2 AND c.source = $3 ORDER BY c.cluster""",
        ["text", "text", "oid"]), [user_id, name, source])
    if not arms:
        raise PgvisionError(fn, f"model {name!r} has no clusters for this table",
                            UNDEFINED_OBJECT, hint="Run vision.cluster(...) first.")
    open_arms = [a for a in arms if a["unseen"]]
    if not open_arms:
        return []
    rng = np.random.default_rng(seed)
    draws = [rng.beta(a["alpha"], a["beta"]) for a in open_arms]
    best = open_arms[int(np.argmax(draws))]
    return [(best["cluster"], int(rng.choice(best["unseen"])), float(max(draws)))]


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
    plpy.execute(models.plan(plpy, GD, "clear_map",
                             "DELETE FROM vision.map_2d WHERE model = $1 AND source = $2",
                             ["text", "oid"]), [name, source])
    plpy.execute(models.plan(plpy, GD, "save_map", """
        INSERT INTO vision.map_2d (model, source, image_id, method, x, y)
        SELECT $1, $2, unnest($3::int8[]), $4, unnest($5::float4[]), unnest($6::float4[])""",
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
    rows = plpy.execute(models.plan(plpy, GD, "map_rows", """
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
