"""Recommendations, clusters, the bandit and 2-D maps against the real server.

The catalog is synthetic 1280-d features in 4 well-separated groups (stored as mobilenet_v2
features), so a simulated user who likes one group has a knowable right answer.
"""

import io
import threading

import numpy as np
import pytest
from PIL import Image
from psycopg2 import errors as pgerr

from conftest import query
from test_search import clustered, store

MODEL = "mobilenet_v2"
GROUPS = 4


@pytest.fixture(scope="module")
def shop(db):
    rng = np.random.default_rng(3)
    vectors = clustered(200, seed=11, centres=GROUPS)
    # recover each vector's group by its nearest centre of the 4 densest directions
    from sklearn.cluster import KMeans
    group = KMeans(GROUPS, n_init=5, random_state=0).fit_predict(vectors)
    query(db, "DROP TABLE IF EXISTS shop_items; CREATE TABLE shop_items (id bigint PRIMARY KEY)")
    store(db, "shop_items", range(1, 201), vectors)
    yield {"group": dict(zip(range(1, 201), group.tolist())), "rng": rng}
    query(db, "DROP TABLE shop_items")


def vote(db, user, image_id, liked):
    return query(db, f"SELECT vision.record_vote(%s, %s, %s, '{MODEL}', 'shop_items')",
                 (user, image_id, liked))[0][0]


def recommend(db, user, k=10, **kwargs):
    args = "".join(f", {key} => %({key})s" for key in kwargs)
    return query(db, f"SELECT image_id, score, strategy FROM vision.recommend(%(u)s, %(k)s, "
                     f"model => '{MODEL}', source => 'shop_items'{args})",
                 {"u": user, "k": k, **kwargs})


def test_votes_of_both_kinds_beat_random_for_a_user_who_likes_one_group(db, shop):
    group = shop["group"]
    rng = np.random.default_rng(0)
    for image_id in rng.choice(np.arange(1, 201), 40, replace=False):
        vote(db, "alice", int(image_id), group[int(image_id)] == 0)
    rows = recommend(db, "alice", 10)
    assert {r[2] for r in rows} == {"nearest liked + taste model"}
    precision = np.mean([group[r[0]] == 0 for r in rows])
    base_rate = np.mean([g == 0 for g in group.values()])
    assert precision >= 0.8 and precision > base_rate + 0.4
    seen = {r[0] for r in query(db, "SELECT image_id FROM vision.votes WHERE user_id = 'alice'")}
    assert not seen & {r[0] for r in rows}
    assert seen & {r[0] for r in recommend(db, "alice", 200, exclude_seen=False)}


def test_cold_start_says_which_fallback_it_used(db, shop):
    assert {r[2] for r in recommend(db, "newcomer", 5)} == {"popularity"}
    vote(db, "newcomer", 1, True)
    rows = recommend(db, "newcomer", 5)
    assert {r[2] for r in rows} == {"nearest liked + Rocchio"}
    assert all(shop["group"][r[0]] == shop["group"][1] for r in rows)


def test_votes_are_idempotent_and_the_last_one_wins(db, shop):
    assert vote(db, "bob", 5, True) is True
    assert vote(db, "bob", 5, True) is False
    assert vote(db, "bob", 5, False) is True
    assert query(db, "SELECT liked FROM vision.votes WHERE user_id = 'bob'") == [(False,)]


def test_clusters_bandit_and_concurrent_votes(db, shop, connect):
    assert query(db, f"SELECT vision.cluster('{MODEL}', {GROUPS}, source => 'shop_items')")[0][0] == GROUPS
    sizes = query(db, "SELECT cluster, size, medoid_image_id FROM vision.cluster_centroids "
                      "WHERE source = 'shop_items'::regclass ORDER BY cluster")
    assert sum(r[1] for r in sizes) == 200 and all(r[2] is not None for r in sizes)
    clusters = dict(query(db, "SELECT image_id, cluster FROM vision.clusters "
                              "WHERE source = 'shop_items'::regclass"))
    # K-means finds the 4 groups
    assert len({(shop["group"][i], c) for i, c in clusters.items()}) == GROUPS
    # 8 sessions vote at once on different images: nothing is lost
    users_votes = [(f"crowd{i % 2}", image_id) for i, image_id in enumerate(range(100, 180))]
    conns = [connect() for _ in range(8)]

    def work(n):
        for user, image_id in users_votes[n::8]:
            vote(conns[n], user, image_id, image_id % 3 == 0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert query(db, "SELECT count(*) FROM vision.votes WHERE user_id LIKE 'crowd%'")[0][0] == 80
    totals = query(db, "SELECT sum(alpha - 1 + beta - 1) FROM vision.bandit_state "
                       "WHERE user_id LIKE 'crowd%'")[0][0]
    assert totals == 80
    # the bandit returns an unseen image
    pick = query(db, f"SELECT cluster, image_id FROM vision.bandit_next('crowd0', '{MODEL}', "
                     "'shop_items')")[0]
    assert clusters[pick[1]] == pick[0]
    assert not query(db, "SELECT 1 FROM vision.votes WHERE user_id = 'crowd0' AND image_id = %s",
                     (pick[1],))


def test_thompson_sampling_regret_is_below_random(db, shop):
    """40 rounds (fewer than the liked cluster's ~50 images, so a perfect policy has no
    regret), a user who likes one cluster: far fewer dislikes than picking at random."""
    query(db, f"SELECT vision.cluster('{MODEL}', {GROUPS}, source => 'shop_items')")
    clusters = dict(query(db, "SELECT image_id, cluster FROM vision.clusters "
                              "WHERE source = 'shop_items'::regclass"))
    liked_cluster = clusters[next(i for i, g in shop["group"].items() if g == 2)]
    regret = 0
    for _ in range(40):
        rows = query(db, f"SELECT cluster, image_id FROM vision.bandit_next('thompson', "
                         f"'{MODEL}', 'shop_items')")
        if not rows:
            break
        cluster, image_id = rows[0]
        liked = cluster == liked_cluster
        regret += not liked
        vote(db, "thompson", image_id, liked)
    rounds = query(db, "SELECT count(*) FROM vision.votes WHERE user_id = 'thompson'")[0][0]
    random_regret = rounds * (1 - sum(c == liked_cluster for c in clusters.values()) / 200)
    assert rounds == 40 and regret < 0.5 * random_regret


def test_map_embeds_and_plots_a_png(db, shop, tmp_path):
    seconds = query(db, f"SELECT vision.embed_2d('{MODEL}', 'tsne', 'shop_items')")[0][0]
    assert seconds >= 0
    assert query(db, "SELECT count(*) FROM vision.map_2d WHERE source = 'shop_items'::regclass")[0][0] == 200
    png = bytes(query(db, f"SELECT vision.plot_map('{MODEL}', source => 'shop_items')")[0][0])
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (800 + 220, 800 + 30)  # map, legend, title
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert len({tuple(p) for p in pixels[::7]}) > 5  # coloured points, not a blank canvas
    (tmp_path / "map.png").write_bytes(png)


@pytest.mark.parametrize("call,error,message", [
    (f"vision.record_vote('u', 99999, true, '{MODEL}', 'shop_items')", pgerr.UndefinedObject,
     'argument "image_id": image 99999 has no features'),
    (f"vision.record_vote(NULL, 1, true, '{MODEL}', 'shop_items')", pgerr.NullValueNotAllowed,
     'argument "user_id" must not be NULL'),
    (f"vision.recommend('u', 0, model => '{MODEL}', source => 'shop_items')",
     pgerr.InvalidParameterValue, 'argument "k" must be between 1 and 10000, got 0'),
    (f"vision.cluster('{MODEL}', 0, source => 'shop_items')", pgerr.InvalidParameterValue,
     'argument "k" must be between 1 and the number of images with features (200), got 0'),
    (f"vision.cluster('{MODEL}', 201, source => 'shop_items')", pgerr.InvalidParameterValue,
     "got 201"),
    (f"vision.embed_2d('{MODEL}', 'umap', 'shop_items')", pgerr.InvalidParameterValue,
     "argument \"method\" must be one of 'tsne', 'pca', got 'umap'"),
    (f"vision.plot_map('{MODEL}', 'no_such_classifier', 'shop_items')", pgerr.UndefinedObject,
     "argument \"color_by\" must be 'cluster' or a classifier"),
])
def test_bad_input_is_named(db, shop, call, error, message):
    query(db, f"SELECT vision.embed_2d('{MODEL}', 'pca', 'shop_items')")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        query(db, f"SELECT * FROM {call}")


def test_shard_scoring_checks_the_preferences_it_is_sent(db):
    """vision._score_images and vision._score_moments (what vision_cluster.recommend runs
    on each shard)."""
    from pgvision.recommend import payload_bytes

    call = ("SELECT * FROM vision._score_images('mobilenet_v2', 'pg_class', %s, NULL, %s, "
            "%s, NULL, NULL)")
    small = payload_bytes({"likes": np.ones((1, 3)), "dislikes": np.ones((1, 3)),
                           "w": np.ones(3), "b": 0.0})
    for k, strategy, taste, error, message in [
        (0, "popularity", None, pgerr.InvalidParameterValue,
         r'vision._score_images: argument "k" must be between 1 and 10000, got 0'),
        (5, "newest", None, pgerr.InvalidParameterValue,
         r'vision._score_images: argument "strategy" must be one of'),
        (5, "nearest liked + taste model", None, pgerr.NullValueNotAllowed,
         r'vision._score_images: argument "taste" must not be NULL'),
        (5, "nearest liked + Rocchio", b"not an npz", pgerr.InvalidParameterValue,
         r'vision._score_images: argument "taste" is not a pgvision payload'),
        (5, "nearest liked + taste model", small, pgerr.InvalidParameterValue,
         r'vision._score_images: argument "taste" must be the likes \(and dislikes, w, b\) of '
         r"1280-d features, got 'a payload of other dimensions'"),
    ]:
        with pytest.raises(error, match=message):
            query(db, call, (k, strategy, taste))
    for taste, error, message in [
        (None, pgerr.NullValueNotAllowed,
         r'vision._score_moments: argument "taste" must not be NULL'),
        (b"not an npz", pgerr.InvalidParameterValue,
         r'vision._score_moments: argument "taste" is not a pgvision payload'),
        (small, pgerr.InvalidParameterValue,
         r'vision._score_moments: argument "taste" must be the likes'),
    ]:
        with pytest.raises(error, match=message):
            query(db, "SELECT vision._score_moments('mobilenet_v2', 'pg_class', %s)", (taste,))


def test_a_taste_model_stored_by_0_12_is_refitted_and_said(db, shop):
    """Taste models of 0.7.0-0.12.0 (mean, scale, w, b) are not the scorer's: recommend
    refits from the votes, says so, and answers as with a fresh model."""
    group = shop["group"]
    same = [i for i in range(1, 201) if group[i] == group[1]][:3]
    other = [i for i in range(1, 201) if group[i] != group[1]][:3]
    for image_id in same + other:
        vote(db, "olden", image_id, image_id in same)
    fresh = recommend(db, "olden", 5)
    buf = io.BytesIO()
    np.savez(buf, mean=np.zeros(1280), scale=np.ones(1280), w=np.ones(1280), b=np.array([0.0]),
             l2=np.array([1.0]))
    # as a superuser (past the policies), what the row of an older version held
    assert query(db, "UPDATE vision.taste_models SET weights = %s WHERE user_id = 'olden' "
                     "RETURNING 1", (buf.getvalue(),)) == [(1,)]
    del db.notices[:]
    refitted = recommend(db, "olden", 5)
    assert [(i, strategy) for i, _, strategy in refitted] == [(i, st) for i, _, st in fresh]
    np.testing.assert_allclose([r[1] for r in refitted], [r[1] for r in fresh], rtol=1e-5)
    assert any("stored by pgvision 0.12.0 or earlier" in n for n in db.notices)


def test_only_dislikes_fall_back_to_popularity_and_ties_are_not_broken_by_id(db, shop):
    for image_id in (11, 12):
        vote(db, "grump", image_id, False)
    assert {r[2] for r in recommend(db, "grump", 3)} == {"popularity"}
    # two liked copies of one vector: both nearest scores tie; the tie-breaker (similarity
    # to the mean like) and not the id orders the rest
    vote(db, "grump", 13, True)
    rows = recommend(db, "grump", 20)
    scores = [r[1] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_votes_on_deleted_or_broken_images_are_left_out(db, shop):
    """A voted image whose features are gone no longer counts; one whose stored features
    are not finite numbers is named in a NOTICE and left out; the rest still scores."""
    group = shop["group"]
    same = [i for i in range(1, 201) if group[i] == group[2]][:4]
    for image_id in same:
        vote(db, "careful", image_id, True)
    query(db, "DELETE FROM vision.features WHERE source = 'shop_items'::regclass "
              "AND model = %s AND image_id = %s", (MODEL, same[0]))
    query(db, "UPDATE vision.features SET feature[1] = 'NaN' WHERE source = "
              "'shop_items'::regclass AND model = %s AND image_id = %s", (MODEL, same[1]))
    del db.notices[:]
    try:
        rows = recommend(db, "careful", 5)
        assert {r[2] for r in rows} == {"nearest liked + Rocchio"}
        assert all(group[r[0]] == group[2] for r in rows)
        assert np.isfinite([r[1] for r in rows]).all()
        assert any(f"votes on image(s) [{same[1]}] are ignored" in n for n in db.notices)
    finally:  # the fixture's features, as they were
        query(db, "DELETE FROM vision.features WHERE source = 'shop_items'::regclass "
                  "AND model = %s AND image_id = ANY(%s)", (MODEL, same[:2]))
        vectors = clustered(200, seed=11, centres=GROUPS)
        store(db, "shop_items", same[:2], vectors[[same[0] - 1, same[1] - 1]])
