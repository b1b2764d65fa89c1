"""Recommendations from a user's likes and dislikes: votes, per-user taste models, and
Thompson-sampling exploration over the catalog's clusters.

- Votes live in ``vision.votes``, one per (owning role, user, image): the last vote wins, and
  a role's user ids are its own shoppers (another role neither sees nor votes for them).
- A user's taste model is a logistic model on unit-length features (the ``logistic``
  classifier of :mod:`pgvision.learners`, regularisation chosen by cross-validation), fitted
  over the user's votes after each vote, stored as plain arrays. With no votes, or votes of one kind only, ``recommend`` falls back to
  popularity or to similarity to the liked images, and says which in its ``strategy`` column.
- Bandit: a Beta(1, 1) prior per (user, cluster), updated by votes; ``bandit_next`` draws
  from each cluster's Beta, takes the cluster with the highest draw and returns an image of it
  the user has not voted on (clusters come from :func:`pgvision.clusters.cluster`).
"""

import io

import numpy as np

from . import featurestore, learners, snapshots, spi
from .errors import (UNDEFINED_OBJECT, PgvisionError, require, require_choice,
                     require_int_range, require_not_null)
from .neighbours import top_k

FN_VOTE = "vision.record_vote"
FN_RECOMMEND = "vision.recommend"
FN_BANDIT = "vision.bandit_next"
FN_SCORE = "vision._score_images"
STRATEGIES = ("taste model", "similar to likes", "popularity")


# --- taste model ------------------------------------------------------------------------

ROCCHIO_DISLIKE = 0.5  # weight of the disliked images' direction (Rocchio's gamma / alpha)
LOGISTIC_FROM = 10     # likes and dislikes each before the logistic model takes over


def fit_taste(X, liked):
    """A user's taste as (mean, scale, w, b): P(like) = sigmoid((unit(x) - mean) / scale @ w
    + b), or with few votes a score that ranks the same way.

    - Fewer than ``LOGISTIC_FROM`` likes or dislikes: the Rocchio direction, the unit-length
      mean of the liked images minus half that of the disliked ones (a discriminative model
      on a handful of votes learns "unlike the dislikes" and ranks strangers first: on the
      demo's photos, 2 likes and 2 dislikes put the retina shots above the cat's copies).
    - From then on: the ``logistic`` classifier of :mod:`pgvision.learners` on the votes
      (unit-length features, regularisation chosen by cross-validation).

    0.6.0 standardised each dimension over the user's few votes, which blew up dimensions
    that barely varied among them: shoppers got 2.6 of 8 liked photos in their top 8, fewer
    than plain cosine similarity to their likes."""
    liked = np.asarray(liked, dtype=bool)
    if min(liked.sum(), (~liked).sum()) < LOGISTIC_FROM:
        U = learners.unit(X.astype(np.float64))
        w = learners.unit(U[liked].mean(axis=0, keepdims=True))[0]
        if (~liked).any():
            w = w - ROCCHIO_DISLIKE * learners.unit(U[~liked].mean(axis=0, keepdims=True))[0]
        return np.zeros(X.shape[1]), np.ones(X.shape[1]), w, 0.0
    clf = learners.fit("logistic", X, liked.astype(int), {}, 2)
    return (clf.mean, clf.scale, clf.weights[:, 1] - clf.weights[:, 0],
            float(clf.bias[1] - clf.bias[0]))


def like_probability(taste, X, l2=True):
    """P(like) of each row of X (``l2``: taste models of 0.7.0 on, which see unit-length
    rows; those stored before 0.7.0 saw raw features)."""
    mean, scale, w, b = taste
    z = (((learners.unit(X) if l2 else X) - mean) / scale) @ w + b
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def record_vote(plpy, GD, user_id, image_id, liked, model=None, source=None):
    """Store a vote (idempotent per user and image), update the bandit and taste model."""
    fn = FN_VOTE
    for argument, value in (("user_id", user_id), ("image_id", image_id), ("liked", liked)):
        require_not_null(fn, argument, value)
    require_user_id(fn, user_id)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    has = plpy.execute(spi.plan(plpy, GD, "SELECT 1 FROM vision.features WHERE model = $1 AND "
                                   "source = $2 AND image_id = $3", ["text", "oid", "int8"]),
                       [model_row["name"], source, image_id])
    if not has:
        raise PgvisionError(fn, f'argument "image_id": image {image_id} has no features for '
                            f"model {model_row['name']!r}", UNDEFINED_OBJECT)
    # Serialise votes on the same (owner, user, image) so a change is counted once.
    previous = plpy.execute(spi.plan(plpy, GD, """
        SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(
                 pg_catalog.concat_ws('/', CURRENT_USER, $1, $2, $3::oid, $4), 0)),
               (SELECT liked FROM vision.votes WHERE owner = CURRENT_USER AND user_id = $1
                AND model = $2 AND source = $3 AND image_id = $4) AS previous""",
        ["text", "text", "oid", "int8"]),
        [user_id, model_row["name"], source, image_id])[0]["previous"]
    if previous == liked:
        return False
    # The owner is the calling role (column default): its shoppers are its own.
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.votes AS v (user_id, model, source, image_id, liked)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (owner, user_id, model, source, image_id) DO UPDATE
          SET liked = EXCLUDED.liked, voted_at = pg_catalog.clock_timestamp()""",
        ["text", "text", "oid", "int8", "bool"]),
        [user_id, model_row["name"], source, image_id, liked])
    # The bandit's Beta counts (view vision.bandit_state) follow the votes by themselves.
    _retrain_taste(plpy, GD, fn, user_id, model_row, source)
    return True


def _votes(plpy, GD, user_id, model, source):
    rows = plpy.execute(spi.plan(plpy, GD, "SELECT image_id, liked FROM vision.votes "
                                 "WHERE owner = CURRENT_USER AND user_id = $1 AND model = $2 "
                                 "AND source = $3 ORDER BY image_id",
                                 ["text", "text", "oid"]), [user_id, model, source])
    return (np.array([r["image_id"] for r in rows], dtype=np.int64),
            np.array([r["liked"] for r in rows], dtype=bool))


def _retrain_taste(plpy, GD, fn, user_id, model_row, source):
    ids, liked = _votes(plpy, GD, user_id, model_row["name"], source)
    if len(set(liked.tolist())) < 2:
        return
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
    keep = np.isin(ids, matrix.ids)
    taste = fit_taste(matrix.vectors[matrix.positions(ids[keep])], liked[keep])
    buf = io.BytesIO()
    np.savez(buf, mean=taste[0], scale=taste[1], w=taste[2], b=np.array([taste[3]]),
             l2=np.array([1.0]))
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.taste_models AS t (user_id, model, source, weights, votes)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (owner, user_id, model, source) DO UPDATE SET weights = EXCLUDED.weights,
            votes = EXCLUDED.votes, updated_at = pg_catalog.clock_timestamp()""",
        ["text", "text", "oid", "bytea", "int4"]),
        [user_id, model_row["name"], source, buf.getvalue(), int(keep.sum())])


def recommend(plpy, GD, user_id, k=10, exclude_seen=True, model=None, source=None):
    """Rows (image_id, score, strategy), best first; strategy is 'taste model',
    'similar to likes' or 'popularity'."""
    fn = FN_RECOMMEND
    validate_recommend(fn, user_id, k, exclude_seen)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
    strategy, payload, seen = preferences(plpy, GD, user_id, model_row, source, lambda: matrix)
    return [(i, score, strategy)
            for i, score in best_scored(matrix, strategy, payload, seen if exclude_seen else (), k)]


MAX_USER_ID = 256


def require_user_id(fn, user_id):
    require(fn, "user_id", f"{len(user_id)} characters", len(user_id) <= MAX_USER_ID,
            f"at most {MAX_USER_ID} characters")


def validate_recommend(fn, user_id, k, exclude_seen):
    require_not_null(fn, "user_id", user_id)
    require_user_id(fn, user_id)
    require_int_range(fn, "k", k, 1, 10_000)
    require_not_null(fn, "exclude_seen", exclude_seen)


def preferences(plpy, GD, user_id, model_row, source, voted_matrix):
    """What a user's candidates are scored with: (strategy, payload, ids the user voted on).

    The payload is the taste model's ``.npz`` bytes, the mean unit vector of the liked images
    (``voted_matrix()`` must hold them), or (image ids, net votes) for popularity. It is all
    a shard needs to score its own images (vision_cluster.recommend)."""
    ids, liked = _votes(plpy, GD, user_id, model_row["name"], source)
    taste = plpy.execute(spi.plan(plpy, GD, "SELECT weights FROM vision.taste_models "
                                  "WHERE owner = CURRENT_USER AND user_id = $1 AND model = $2 "
                                  "AND source = $3", ["text", "text", "oid"]),
                         [user_id, model_row["name"], source])
    if taste and liked.any() and (~liked).any():
        return "taste model", bytes(taste[0]["weights"]), ids
    if liked.any():
        matrix = voted_matrix()
        return "similar to likes", matrix.unit[matrix.positions(ids[liked])].mean(axis=0), ids
    popular = plpy.execute(spi.plan(plpy, GD, """
        SELECT image_id, pg_catalog.sum(CASE WHEN liked THEN 1 ELSE -1 END) AS s
        FROM vision.votes WHERE owner = CURRENT_USER AND model = $1 AND source = $2
        GROUP BY image_id ORDER BY 1""",
        ["text", "oid"]), [model_row["name"], source])
    return "popularity", (np.array([r["image_id"] for r in popular], dtype=np.int64),
                          np.array([r["s"] for r in popular], dtype=np.float64)), ids


def scores(matrix, strategy, payload):
    """The score of every image of ``matrix`` under a strategy of :func:`preferences`."""
    if strategy == "taste model":
        with np.load(io.BytesIO(payload), allow_pickle=False) as a:
            params = (a["mean"], a["scale"], a["w"], float(a["b"][0]))
            l2 = "l2" in a and bool(a["l2"][0])
        return like_probability(params, matrix.vectors, l2)
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
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)  # after the checks
    return best_scored(matrix, strategy, payload, exclude or (), k)



# --- bandit -----------------------------------------------------------------------------

def bandit_next(plpy, GD, user_id, model=None, source=None, seed=None):
    """Thompson sampling over clusters: (cluster, image_id, draw) of an unseen image."""
    fn = FN_BANDIT
    require_not_null(fn, "user_id", user_id)
    require_user_id(fn, user_id)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    name = model_row["name"]
    arms = plpy.execute(spi.plan(plpy, GD, """
        SELECT c.cluster, coalesce(b.alpha, 1) AS alpha, coalesce(b.beta, 1) AS beta,
               (SELECT array_agg(cl.image_id ORDER BY cl.image_id) FROM vision.clusters cl
                WHERE cl.model = c.model AND cl.source = c.source AND cl.cluster = c.cluster
                  AND NOT EXISTS (SELECT 1 FROM vision.votes v WHERE v.owner = CURRENT_USER
                                  AND v.user_id = $1
                                  AND v.model = cl.model AND v.source = cl.source
                                  AND v.image_id = cl.image_id)) AS unseen
        FROM (SELECT DISTINCT model, source, cluster FROM vision.clusters
              WHERE model = $2 AND source = $3) c
        LEFT JOIN vision.bandit_state b ON b.owner = CURRENT_USER AND b.user_id = $1
             AND b.model = c.model AND b.source = c.source AND b.cluster = c.cluster
        ORDER BY c.cluster""", ["text", "text", "oid"]), [user_id, name, source])
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
