"""Recommendations from a user's likes and dislikes: votes, per-user taste models, and
Thompson-sampling exploration over the catalog's clusters.

- Votes live in ``vision.votes``, one per (owning role, user, image): the last vote wins, and
  a role's user ids are its own shoppers (another role neither sees nor votes for them).
- Scorers, chosen by measurement (``make bench-recommend``: Rocchio, the cross-validated
  logistic taste model of 0.7.0-0.12.0, cosine to the mean like, nearest liked, and blends):
  - likes and dislikes, ``'nearest liked + taste model'``: the sum of two standardised
    scores, the similarity to the nearest liked image minus half that to the nearest
    disliked one (it finds other shots of a liked product, which an average of the likes
    blurs), and a logistic taste model on the votes (it generalises where the nearest vote
    is noise); neither alone wins on both photos and synthetic catalogs, the sum is within
    noise of the best of the two or above it;
  - likes only, or fewer than TASTE_FROM of a kind, ``'nearest liked + Rocchio'``: the
    standardised nearest-vote score plus half the standardised Rocchio score (cosine to the
    mean like less half that to the mean dislike). The nearest vote finds other shots of a
    liked product (on photos, 0.96 of the top 10 liked after 5 votes, where cosine to the
    mean like gets 0.91); Rocchio's average keeps a few noisy votes from steering alone
    (200 simulated users on an overlapping synthetic catalog, 5 votes: 0.719, where the
    nearest vote alone gets 0.704 and Rocchio 0.716);
  - no likes, ``'popularity'``: net votes of all of the role's shoppers.
  Ties are broken by the similarity to the mean like, then by id.
- A user's taste model (``vision.taste_models``) is the logistic model, refitted after each
  vote in milliseconds (:func:`pgvision.learners.binary_logistic`). Rows stored before
  0.13.0 hold another model: a recommendation refits it from the votes and says so.
- Bandit: a Beta(1, 1) prior per (user, cluster), updated by votes; ``bandit_next`` draws
  from each cluster's Beta, takes the cluster with the highest draw and returns its unseen
  image the user's scorer ranks first (clusters come from :func:`pgvision.clusters.cluster`).
"""

import io

import numpy as np

from . import featurestore, learners, snapshots, spi
from .errors import (UNDEFINED_OBJECT, PgvisionError, require, require_choice,
                     require_int_range, require_not_null)

FN_VOTE = "vision.record_vote"
FN_RECOMMEND = "vision.recommend"
FN_BANDIT = "vision.bandit_next"
FN_SCORE = "vision._score_images"
BOTH = "nearest liked + taste model"
LIKES = "nearest liked + Rocchio"
POPULARITY = "popularity"
STRATEGIES = (BOTH, LIKES, POPULARITY)


# --- scorers (numpy only) ---------------------------------------------------------------

DISLIKE_WEIGHT = 0.5  # nearest liked − DISLIKE_WEIGHT × nearest disliked (and in Rocchio)
ROCCHIO_WEIGHT = 0.5  # of the standardised Rocchio score beside the nearest vote's
TASTE_C = 10.0        # inverse L2 penalty of the taste model, on unit-length rows
TASTE_VERSION = 2     # stored taste models: 1 (0.7.0-0.12.0, mean/scale/w/b), 2 (w, b)
# likes and dislikes each before the taste model joins in: a logistic model on a handful of
# votes learns "unlike the dislikes" and ranks strangers first (the demo's shopper, 2 + 2
# votes: the retina shots above the cat's copies); measured, 3 keeps every gain it brings
TASTE_FROM = 3


def fit_taste(X, liked):
    """A user's taste model (w, b): P(like) = sigmoid(unit(x) @ w + b), a logistic model
    on the voted rows ``X`` (both kinds of vote needed)."""
    return learners.binary_logistic(learners.unit(np.asarray(X, dtype=np.float64)),
                                    np.asarray(liked, dtype=float), TASTE_C)


def nearest_vote_scores(U, likes, dislikes):
    """Similarity of each unit row of ``U`` to its nearest like, minus DISLIKE_WEIGHT times
    that to its nearest dislike (none: 0)."""
    score = (U @ likes.T).max(axis=1)
    if len(dislikes):
        score = score - DISLIKE_WEIGHT * (U @ dislikes.T).max(axis=1)
    return score


def rocchio_scores(U, likes, dislikes):
    """Cosine of each unit row of ``U`` to the mean like, less DISLIKE_WEIGHT times that to
    the mean dislike (none: 0)."""
    direction = learners.unit(likes.mean(axis=0, keepdims=True))[0]
    if len(dislikes):
        direction = direction - DISLIKE_WEIGHT * learners.unit(
            dislikes.mean(axis=0, keepdims=True))[0]
    return U @ direction


def standardised(score):
    """Zero mean, unit deviation over the finite scores (a row whose stored features are not
    finite keeps its NaN and ranks last, without spoiling the others)."""
    return (score - np.nanmean(score)) / (np.nanstd(score) + 1e-12)


def _parts(U, payload):
    """(nearest-vote score, second score) of each unit row of ``U``: the second is the taste
    model's margin where the payload holds one (``w``, ``b``), else the Rocchio score."""
    likes = payload["likes"]
    dislikes = payload.get("dislikes", likes[:0])
    nearest = nearest_vote_scores(U, likes, dislikes)
    if "w" in payload:
        return nearest, U @ payload["w"] + float(payload["b"])
    return nearest, rocchio_scores(U, likes, dislikes)


def score_rows(U, strategy, payload):
    """(score, tie-breaker) of each unit row of ``U`` under a strategy whose payload is
    :func:`preferences`' dict (or, for popularity, a score per row already)."""
    if strategy == POPULARITY:
        return payload, np.zeros(len(U))
    likes = payload["likes"]
    tie = U @ learners.unit(likes.mean(axis=0, keepdims=True))[0]
    nearest, second = _parts(U, payload)
    weight = 1.0 if strategy == BOTH else ROCCHIO_WEIGHT
    if "moments" in payload:  # a sharded catalog's: every shard standardises alike
        mean_nearest, sd_nearest, mean_second, sd_second = payload["moments"]
        return ((nearest - mean_nearest) / (sd_nearest + 1e-12)
                + weight * (second - mean_second) / (sd_second + 1e-12)), tie
    return standardised(nearest) + weight * standardised(second), tie


def raw_moments(U, payload):
    """[n, Σ nearest, Σ nearest², Σ second, Σ second²] over the unit rows ``U`` (the
    second score: taste model or Rocchio, see :func:`_parts`): what a shard tells its
    coordinator, which adds them up into the catalog's mean and deviation."""
    nearest, second = (part.astype(np.float64) for part in _parts(U, payload))
    finite = np.isfinite(nearest) & np.isfinite(second)
    nearest, second = nearest[finite], second[finite]
    return [float(finite.sum()), float(nearest.sum()), float((nearest ** 2).sum()),
            float(second.sum()), float((second ** 2).sum())]


def moments_of(raw):
    """(mean, sd of nearest, mean, sd of the second score) from the shards'
    :func:`raw_moments`."""
    n, s1, s2, t1, t2 = np.asarray(raw, dtype=np.float64).sum(axis=0)
    n = max(n, 1.0)
    return [s1 / n, np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)),
            t1 / n, np.sqrt(max(t2 / n - (t1 / n) ** 2, 0.0))]


def payload_bytes(payload):
    """A strategy's payload as ``.npz`` bytes (what a coordinator sends its shards)."""
    buf = io.BytesIO()
    np.savez(buf, **{key: np.asarray(value, dtype=np.float32) for key, value in payload.items()})
    return buf.getvalue()


def payload_from_bytes(data):
    with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def record_vote(plpy, GD, user_id, image_id, liked, model=None, source=None):
    """Store a vote (idempotent per user and image), update the bandit and taste model."""
    fn = FN_VOTE
    for argument, value in (("user_id", user_id), ("image_id", image_id), ("liked", liked)):
        require_not_null(fn, argument, value)
    require_user_id(fn, user_id)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    has = plpy.execute(spi.plan(plpy, GD, "SELECT 1 FROM vision.stored_features WHERE model = $1 AND "
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
    ids, liked = _scorable(plpy, matrix, ids, liked)
    if len(set(liked.tolist())) < 2:
        return
    w, b = fit_taste(matrix.vectors[matrix.positions(ids)], liked)
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.taste_models AS t (user_id, model, source, weights, votes)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (owner, user_id, model, source) DO UPDATE SET weights = EXCLUDED.weights,
            votes = EXCLUDED.votes, updated_at = pg_catalog.clock_timestamp()""",
        ["text", "text", "oid", "bytea", "int4"]),
        [user_id, model_row["name"], source,
         payload_bytes({"version": [TASTE_VERSION], "w": w, "b": [b]}), len(ids)])


def _scorable(plpy, matrix, ids, liked):
    """The votes whose images have usable features now: present (a deleted image's vote no
    longer counts) and finite (a NOTICE names any that are not)."""
    keep = featurestore.members(ids, matrix.ids)
    ids, liked = ids[keep], liked[keep]
    finite = np.isfinite(matrix.vectors[matrix.positions(ids)]).all(axis=1)
    if not finite.all():
        plpy.notice(f"{FN_RECOMMEND}: votes on image(s) {ids[~finite][:5].tolist()} are "
                    "ignored: their stored features are not finite numbers")
    return ids[finite], liked[finite]


def recommend(plpy, GD, user_id, k=10, exclude_seen=True, model=None, source=None):
    """Rows (image_id, score, strategy), best first; strategy names the scorer: 'nearest
    liked + taste model', 'nearest liked' or 'popularity'."""
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

    With likes, the payload is a dict of the liked and disliked images' unit vectors
    (``voted_matrix()`` must hold them) and the taste model's ``w`` and ``b``; for
    popularity, (image ids, net votes). It is all a shard needs to score its own images
    (vision_cluster.recommend)."""
    ids, liked = _votes(plpy, GD, user_id, model_row["name"], source)
    if liked.any():
        matrix = voted_matrix()
        scorable, scorable_liked = _scorable(plpy, matrix, ids, liked)
        if scorable_liked.any():
            rows = matrix.positions(scorable)
            U = matrix.unit[rows]
            payload = {"likes": U[scorable_liked], "dislikes": U[~scorable_liked]}
            if min(scorable_liked.sum(), (~scorable_liked).sum()) < TASTE_FROM:
                return LIKES, payload, ids
            payload["w"], payload["b"] = _taste(plpy, GD, user_id, model_row, source,
                                                matrix.vectors[rows], scorable_liked)
            return BOTH, payload, ids
    popular = plpy.execute(spi.plan(plpy, GD, """
        SELECT image_id, pg_catalog.sum(CASE WHEN liked THEN 1 ELSE -1 END) AS s
        FROM vision.votes WHERE owner = CURRENT_USER AND model = $1 AND source = $2
        GROUP BY image_id ORDER BY 1""",
        ["text", "oid"]), [model_row["name"], source])
    return POPULARITY, (np.array([r["image_id"] for r in popular], dtype=np.int64),
                        np.array([r["s"] for r in popular], dtype=np.float64)), ids


def _taste(plpy, GD, user_id, model_row, source, X, liked):
    """(w, b) of the user's stored taste model when it is of this version and fitted on as
    many votes as count now, else fitted here (milliseconds)."""
    rows = plpy.execute(spi.plan(plpy, GD, "SELECT weights, votes FROM vision.taste_models "
                                 "WHERE owner = CURRENT_USER AND user_id = $1 AND model = $2 "
                                 "AND source = $3", ["text", "text", "oid"]),
                        [user_id, model_row["name"], source])
    if rows:
        stored = payload_from_bytes(rows[0]["weights"])
        if int(stored.get("version", [1])[0]) == TASTE_VERSION and rows[0]["votes"] == len(liked):
            return stored["w"], float(stored["b"][0])
        if "version" not in stored:
            plpy.notice(f"{FN_RECOMMEND}: the taste model of user {user_id!r} was stored by "
                        "pgvision 0.12.0 or earlier; it is refitted from the votes here (and "
                        "stored again at the user's next vote)")
    return fit_taste(X, liked)


def scores(matrix, strategy, payload):
    """(score, tie-breaker) of every image of ``matrix`` under a strategy of
    :func:`preferences`."""
    if strategy != POPULARITY:
        return score_rows(matrix.unit, strategy, payload)
    known, net = payload
    score = np.zeros(len(matrix.ids))
    present = featurestore.members(known, matrix.ids)
    score[matrix.positions(known[present])] = net[present]
    return score_rows(matrix.unit, strategy, score)


def best_scored(matrix, strategy, payload, exclude, k, among=None):
    """[(image_id, score)] of the k best-scored images not in ``exclude`` (and in ``among``
    when given): ties by the tie-breaker, then by id."""
    candidates = np.ones(len(matrix.ids), dtype=bool)
    if len(exclude):
        candidates &= ~np.isin(matrix.ids, np.asarray(exclude, dtype=np.int64))
    if among is not None:
        candidates &= np.isin(matrix.ids, np.asarray(among, dtype=np.int64))
    score, tie = scores(matrix, strategy, payload)
    rows = np.flatnonzero(candidates)
    order = rows[np.lexsort((matrix.ids[rows], -tie[rows], -score[rows]))][:k]
    return [(int(matrix.ids[r]), float(score[r])) for r in order]


FN_MOMENTS = "vision._score_moments"


def score_moments(plpy, GD, model, source, taste):
    """This node's :func:`raw_moments` for the payload of a user scored with likes (with a
    taste model or not). Internal to vision_cluster.recommend."""
    fn = FN_MOMENTS
    require_not_null(fn, "taste", taste)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    payload = _received(fn, None, taste, model_row["dims"])
    return raw_moments(snapshots.load_for(plpy, GD, fn, model_row, source).unit, payload)


def _received(fn, strategy, taste, dims):
    """The payload a coordinator sent (not NULL: checked before any query), checked against
    the model's dimension."""
    try:
        payload = payload_from_bytes(taste)
    except (ValueError, OSError) as err:
        raise PgvisionError(fn, f'argument "taste" is not a pgvision payload ({err})') \
            from None
    shapes_ok = "likes" in payload and payload["likes"].ndim == 2 and \
        payload["likes"].shape[1] == dims and len(payload["likes"]) > 0
    if shapes_ok and "dislikes" in payload:
        shapes_ok = payload["dislikes"].shape[1:] == (dims,)
    if shapes_ok and strategy == BOTH:
        shapes_ok = {"dislikes", "w", "b"} <= set(payload) and payload["w"].shape == (dims,)
    require(fn, "taste", "a payload of other dimensions", shapes_ok,
            f"the likes (and dislikes, w, b) of {dims}-d features")
    return payload


def score_images(plpy, GD, model, source, k, exclude, strategy, taste, popular_ids,
                 popular_net):
    """This node's k best images for a user's preferences computed elsewhere (a coordinator):
    rows (image_id, score). ``taste`` carries the payload of the two scorers with likes (as
    :func:`payload_bytes`). Internal to vision_cluster.recommend."""
    fn = FN_SCORE
    require_int_range(fn, "k", k, 1, 10_000)
    require_choice(fn, "strategy", strategy, STRATEGIES)
    if strategy != POPULARITY:
        require_not_null(fn, "taste", taste)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    if strategy == POPULARITY:
        payload = (np.asarray(popular_ids or [], dtype=np.int64),
                   np.asarray(popular_net or [], dtype=np.float64))
    else:
        payload = _received(fn, strategy, taste, model_row["dims"])
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)  # after the checks
    return best_scored(matrix, strategy, payload, exclude or (), k)


# --- bandit -----------------------------------------------------------------------------

def bandit_next(plpy, GD, user_id, model=None, source=None, seed=None):
    """Thompson sampling over clusters: (cluster, image_id, draw) of an unseen image of the
    cluster with the highest draw, the one the user's scorer ranks first (any, before a
    like)."""
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
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
    strategy, payload, _ = preferences(plpy, GD, user_id, model_row, source, lambda: matrix)
    ranked = [] if strategy == POPULARITY else \
        best_scored(matrix, strategy, payload, (), 1, among=best["unseen"])
    # the cluster's unseen image the user's scorer ranks first; before a like, any of them
    image_id = ranked[0][0] if ranked else int(rng.choice(best["unseen"]))
    return [(best["cluster"], image_id, float(max(draws)))]
