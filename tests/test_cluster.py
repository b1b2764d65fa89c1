"""Sharded pgvision: a coordinator and two shard clusters (separate postmasters, started by
scripts/shards.sh), PL/Proxy fan-out, postgres_fdw reads; results equal the single node's."""

import os
import shutil
import subprocess

import numpy as np
import psycopg2
import pytest
from psycopg2 import errors as pgerr

import pgvision
from conftest import documentation, image_bytes, query
from pgvision.shardlinks import parse_conninfo
from pgvision.errors import PgvisionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "mobilenet_v2"
IDS = range(1, 11)
BAD_ID = 11


def shards_sh(env, *args):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "shards.sh"), *args], env=env,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def cluster(server):
    """Coordinator + 2 shards in a scratch directory, on ports apart from `make shards`."""
    base = f"/var/tmp/pgvision-test-shards-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    env = {**os.environ, "SHARD_BASE": base, "SHARD_PORT": "5450", "SHARDS": "2"}
    shards_sh(env, "start")
    conns = {}
    try:
        for name in ("coord", "shard0", "shard1"):
            conn = psycopg2.connect(shards_sh(env, "dsn", name))
            conn.autocommit = True
            conns[name] = conn
        yield {"env": env, **conns}
    finally:
        for conn in conns.values():
            conn.close()
        shards_sh(env, "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def products(cluster):
    """``products`` on both shards, one coordinator table over them, 10 images + 1 bad."""
    for shard in ("shard0", "shard1"):
        query(cluster[shard], "CREATE TABLE products (id bigint PRIMARY KEY, image bytea)")
    coord = cluster["coord"]
    assert query(coord, "SELECT vision_cluster.distribute_table('products')") == [(2,)]
    for image_id in IDS:
        query(coord, "INSERT INTO products VALUES (%s, %s)",
              (image_id, psycopg2.Binary(image_bytes(300 + image_id))))
    query(coord, "INSERT INTO products VALUES (%s, %s)", (BAD_ID, psycopg2.Binary(b"\xff\xd8 cut")))
    return "products"


def extract_all(coord):
    """Call vision_cluster.extract until no shard has rows left; totals per shard."""
    totals = {}
    while True:
        rows = query(coord, "SELECT node, processed, failed, remaining FROM vision_cluster.extract("
                            "'products', model => %s, batch_size => 2, max_rows => 4)", (FAST,))
        for node, processed, failed, _ in rows:
            done = totals.setdefault(node, [0, 0])
            done[0] += processed
            done[1] += failed
        if all(remaining == 0 for *_, remaining in rows):
            return totals


def test_setup_lists_every_shard_with_the_same_version(cluster):
    nodes = query(cluster["coord"], "SELECT node, version FROM vision_cluster.nodes() ORDER BY 1")
    assert nodes == [("shard0/pgvision", pgvision.__version__),
                     ("shard1/pgvision", pgvision.__version__)]


def test_rows_inserted_on_the_coordinator_land_on_their_shard(cluster, products):
    per_shard = [query(cluster[s], "SELECT count(*) FROM products")[0][0]
                 for s in ("shard0", "shard1")]
    assert sum(per_shard) == len(IDS) + 1 and min(per_shard) > 0
    assert query(cluster["coord"], "SELECT count(*) FROM products") == [(len(IDS) + 1,)]


def test_extraction_runs_on_every_shard_and_equals_the_single_node(db, make_table, cluster,
                                                                   products):
    coord = cluster["coord"]
    totals = extract_all(coord)
    assert sorted(totals) == ["shard0/pgvision", "shard1/pgvision"]
    assert sum(p for p, _ in totals.values()) == len(IDS)
    assert sum(f for _, f in totals.values()) == 1
    bad_shard = [s for s in ("shard0", "shard1")
                 if query(cluster[s], "SELECT count(*) FROM products WHERE id = %s", (BAD_ID,))[0][0]]
    errors = query(cluster[bad_shard[0]], "SELECT image_id, error FROM vision.extract_errors")
    assert [i for i, _ in errors] == [BAD_ID]
    assert errors[0][1].startswith(f"vision.extract_rows: image {BAD_ID} is not a decodable image")

    single = make_table("products_single", [(i, image_bytes(300 + i)) for i in IDS])
    query(db, f"CALL vision.extract_table('{single}', model => '{FAST}')")
    here = dict(query(db, f"SELECT image_id, feature FROM vision.features "
                          f"WHERE source = '{single}'::regclass AND model = '{FAST}'"))
    there = dict(query(coord, "SELECT image_id, feature FROM vision_cluster.features "
                              "WHERE source = 'public.products' AND model = %s", (FAST,)))
    assert sorted(here) == sorted(there) == list(IDS)
    for image_id in IDS:
        np.testing.assert_allclose(there[image_id], here[image_id], rtol=1e-4, atol=1e-5)

    for image_id in (1, 4, 7):
        local = query(db, "SELECT image_id, distance FROM vision.similar(%s, 5, %s, "
                          "source => %s)", (image_id, FAST, single))
        merged = query(coord, "SELECT image_id, distance FROM vision_cluster.similar("
                              "%s, 'products', 5, %s)", (image_id, FAST))
        assert [i for i, _ in merged] == [i for i, _ in local]
        np.testing.assert_allclose([d for _, d in merged], [d for _, d in local], atol=1e-5)
    picture = psycopg2.Binary(image_bytes(305))
    local = query(db, "SELECT image_id FROM vision.similar_to_image(%s, 3, %s, source => %s)",
                  (picture, FAST, single))
    merged = query(coord, "SELECT image_id FROM vision_cluster.similar_to_image(%s, 'products', 3,"
                          " %s)", (picture, FAST))
    assert merged == local and merged[0] == (5,)


def test_indexes_are_built_on_every_shard(cluster, products):
    extract_all(cluster["coord"])
    rows = query(cluster["coord"], "SELECT node, vectors FROM vision_cluster.create_index("
                                   "'products', %s)", (FAST,))
    assert [n for n, _ in rows] == ["shard0/pgvision", "shard1/pgvision"]
    assert sum(v for _, v in rows) == len(IDS)


def test_a_shard_with_another_version_refuses_to_answer(cluster, products):
    with pytest.raises(psycopg2.Error,
                       match=r"vision.check_node: node shard\d/pgvision runs pgvision "
                             rf"{pgvision.__version__}, the coordinator 0.0.1"):
        query(cluster["coord"], "SELECT * FROM vision_cluster._similar_to_vector('0.0.1', "
                                "(SELECT sha256 FROM vision.models WHERE name = %s), array_fill(0::real, ARRAY[1280]), 3,"
                                " %s, 'cosine', 'products')", (FAST, FAST))


def test_a_shard_with_another_model_refuses_until_the_model_is_pushed(cluster, products):
    extract_all(cluster["coord"])
    query(cluster["shard1"], "UPDATE vision.model_store SET sha256 = repeat('a', 64) "
                             "WHERE name = %s", (FAST,))
    with pytest.raises(psycopg2.Error, match=r"vision.check_node: node shard1/pgvision has "
                                             rf"another model '{FAST}'"):
        query(cluster["coord"], "SELECT * FROM vision_cluster.similar(1, 'products', 3, %s)",
              (FAST,))
    pushed = query(cluster["coord"], "SELECT node, status FROM vision_cluster.push_model(%s)",
                   (FAST,))
    assert pushed == [("shard0/pgvision", "unchanged"), ("shard1/pgvision", "registered (1280 dims)")]
    assert len(query(cluster["coord"], "SELECT * FROM vision_cluster.similar(1, 'products', 3, %s)",
                     (FAST,))) == 3


def test_cluster_arguments_are_checked(cluster, products):
    coord = cluster["coord"]
    with pytest.raises(pgerr.DuplicateObject, match=r"vision_cluster.setup: a cluster is already "
                                                    r"set up \(2 shards\)"):
        query(coord, "SELECT vision_cluster.setup(ARRAY['dbname=a', 'dbname=b'])")
    with pytest.raises(pgerr.InvalidParameterValue, match=r'argument "shards" must be 1, 2, 4'):
        query(coord, "SELECT vision_cluster.setup(ARRAY['dbname=a', 'dbname=b', 'dbname=c'], "
                     "replace => true)")
    with pytest.raises(pgerr.InvalidParameterValue,
                       match=r'vision_cluster.distribute_table: argument "name": shard 0 has no '
                             r"table public.nothing_here"):
        query(coord, "SELECT vision_cluster.distribute_table('nothing_here')")
    with pytest.raises(pgerr.UndefinedObject, match=r'vision_cluster.similar: argument "image_id":'
                                                    r" image 999 of products has no features"):
        query(coord, "SELECT * FROM vision_cluster.similar(999, 'products', 3, %s)", (FAST,))
    for call, message in [
        ("extract('products', model => 'nope')",
         r"vision_cluster.extract: argument \"model\" names no registered model: 'nope'"),
        ("push_model('nope')",
         r"vision_cluster.push_model: argument \"name\" names no registered model: 'nope'"),
        ("create_index(NULL)", r'vision_cluster.create_index: argument "source" must not be NULL'),
    ]:
        with pytest.raises(psycopg2.Error, match=message):
            query(coord, f"SELECT * FROM vision_cluster.{call}")
    with pytest.raises(pgerr.InvalidParameterValue,
                       match=r'vision_cluster.similar_to_image: argument "k" must be between 1 '
                             r"and 10000, got 0"):
        query(coord, "SELECT * FROM vision_cluster.similar_to_image(%s, 'products', 0, %s)",
              (psycopg2.Binary(image_bytes(1)), FAST))


def test_a_shard_that_is_down_is_named_and_a_rerun_resumes(cluster, products):
    extract_all(cluster["coord"])
    env = {**cluster["env"], "PGBASE": f"{cluster['env']['SHARD_BASE']}/shard1",
           "PGPORT_LOCAL": "5452"}
    cluster["shard1"].close()
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "cluster.sh"), "stop"], env=env,
                   check=True, capture_output=True)
    coord = cluster["coord"]
    for call in ("similar(1, 'products', 3, %s)", "extract('products', model => %s)"):
        with pytest.raises(pgerr.ConnectionFailure,
                           match=rf"vision_cluster.{call.split('(')[0]}: 1 shard\(s\) did not "
                                 r"answer: shard 1 \(host=\S+/shard1/run port=5452 "):
            query(coord, f"SELECT * FROM vision_cluster.{call}", (FAST,))
    shards_sh(cluster["env"], "start")
    assert len(query(coord, "SELECT * FROM vision_cluster.similar(1, 'products', 3, %s)",
                     (FAST,))) == 3


def single_node_copy(db, make_table):
    """The cluster's images as one local table with features, for equality checks."""
    single = make_table("products_single", [(i, image_bytes(300 + i)) for i in IDS])
    query(db, f"CALL vision.extract_table('{single}', model => '{FAST}')")
    return single


LABELS = [(i, ["plain", "striped", "dotted"][i % 3]) for i in IDS]


def train_kind(coord):
    """The classifier 'kind' trained on the coordinator over every shard; its CV metrics."""
    extract_all(coord)
    query(coord, "DROP TABLE IF EXISTS product_labels")
    query(coord, "CREATE TABLE product_labels (image_id bigint, label text)")
    query(coord, "INSERT INTO product_labels SELECT * FROM unnest(%s::bigint[], %s::text[])",
          ([i for i, _ in LABELS], [label for _, label in LABELS]))
    return query(coord, "SELECT vision_cluster.train_classifier('kind', 'product_labels', "
                        "'products', %s, 'logistic', folds => 2, replace => true)", (FAST,))[0][0]


def test_a_classifier_trained_on_the_coordinator_labels_every_shard_like_the_single_node(
        db, make_table, cluster, products):
    coord = cluster["coord"]
    metrics = train_kind(coord)
    labelled = query(coord, "SELECT node, labelled FROM vision_cluster.classify_table('kind')")
    assert [n for n, _ in labelled] == ["shard0/pgvision", "shard1/pgvision"]
    assert sum(n for _, n in labelled) == len(IDS) and min(n for _, n in labelled) > 0
    there = query(coord, "SELECT image_id, label, probability FROM vision_cluster.predictions "
                         "WHERE classifier = 'kind' ORDER BY image_id")

    single = single_node_copy(db, make_table)
    query(db, "DROP TABLE IF EXISTS single_labels")
    query(db, "CREATE TABLE single_labels (image_id bigint, label text)")
    try:
        query(db, "INSERT INTO single_labels SELECT * FROM unnest(%s::bigint[], %s::text[])",
              ([i for i, _ in LABELS], [label for _, label in LABELS]))
        expected = query(db, "SELECT vision.train_classifier('kind_single', 'single_labels', "
                             "%s, %s, 'logistic', folds => 2)", (single, FAST))[0][0]
        query(db, "SELECT vision.classify_table('kind_single')")
        here = query(db, "SELECT image_id, label, probability FROM vision.predictions "
                         "WHERE classifier = 'kind_single' ORDER BY image_id")
    finally:
        query(db, "DELETE FROM vision.classifiers WHERE name = 'kind_single'")
        query(db, "DROP TABLE single_labels")
    assert metrics["accuracy"] == expected["accuracy"]
    assert [(i, label) for i, label, _ in there] == [(i, label) for i, label, _ in here]
    np.testing.assert_allclose([p for *_, p in there], [p for *_, p in here], atol=1e-4)


def test_a_shard_with_another_version_of_a_classifier_is_named(cluster, products):
    coord = cluster["coord"]
    train_kind(coord)
    shard1 = psycopg2.connect(shards_sh(cluster["env"], "dsn", "shard1"))  # may have restarted
    shard1.autocommit = True
    query(shard1, "UPDATE vision.classifiers SET trained_at = now() WHERE name = 'kind'")
    shard1.close()
    with pytest.raises(pgerr.ObjectInUse, match=r"vision_cluster.classify_table: classifier "
                                                r"'kind' on shard1/pgvision is not the "
                                                r"coordinator's"):
        query(coord, "SELECT * FROM vision_cluster.classify_table('kind')")
    query(coord, "SELECT vision_cluster.train_classifier('kind', 'product_labels', 'products', "
                 "%s, 'logistic', folds => 2, replace => true)", (FAST,))
    assert len(query(coord, "SELECT * FROM vision_cluster.classify_table('kind')")) == 2


VOTES = [("ann", 1, True), ("ann", 2, False), ("ann", 6, True), ("ann", 9, False),
         ("ann", 3, True), ("ann", 4, False), ("bob", 3, True), ("bob", 8, True),
         ("bob", 9, False), ("cy", 4, True)]


def test_recommendations_across_shards_equal_the_single_node(db, make_table, cluster, products):
    coord = cluster["coord"]
    extract_all(coord)
    single = single_node_copy(db, make_table)
    for user, image_id, liked in VOTES:
        assert query(coord, "SELECT vision_cluster.record_vote(%s, %s, %s, 'products', %s)",
                     (user, image_id, liked, FAST)) == [(True,)]
        query(db, "SELECT vision.record_vote(%s, %s, %s, %s, %s)",
              (user + "_single", image_id, liked, FAST, single))
    try:
        for user, strategy in (("ann", "nearest liked + taste model"), ("bob", "nearest liked + Rocchio"),
                               ("dee", "popularity")):
            merged = query(coord, "SELECT image_id, score, strategy, node FROM "
                                  "vision_cluster.recommend(%s, 'products', 5, model => %s)",
                           (user, FAST))
            local = query(db, "SELECT image_id, score, strategy FROM vision.recommend(%s, 5, "
                              "model => %s, source => %s)", (user + "_single", FAST, single))
            assert {s for _, _, s, _ in merged} == {strategy}
            assert [i for i, *_ in merged] == [i for i, *_ in local]
            np.testing.assert_allclose([s for _, s, *_ in merged], [s for _, s, _ in local],
                                       atol=1e-4)
            assert {n for *_, n in merged} <= {"shard0/pgvision", "shard1/pgvision"}
            voted = {i for u, i, _ in VOTES if u == user}
            assert not voted & {i for i, *_ in merged}
    finally:
        query(db, "DELETE FROM vision.votes WHERE source = %s::regclass", (single,))
        query(db, "DELETE FROM vision.taste_models WHERE source = %s::regclass", (single,))


def test_cluster_classification_and_votes_check_their_arguments(cluster, products):
    coord = cluster["coord"]
    extract_all(coord)
    for call, error, message in [
        ("train_classifier('k2', 'product_labels', 'products', %s, 'knn')",
         pgerr.InvalidParameterValue,
         r'vision_cluster.train_classifier: argument "method" must be one of softmax, logistic, '
         r"sgd \(knn votes"),
        ("train_classifier('kind', 'product_labels', 'products', %s)", pgerr.DuplicateObject,
         r'vision_cluster.train_classifier: argument "name": a classifier named .kind. exists'),
        ("classify_table('nope')", pgerr.UndefinedObject,
         r'vision_cluster.classify_table: argument "classifier" names no classifier of the '
         r"coordinator: 'nope'"),
        ("record_vote('ann', 999, true, 'products', %s)", pgerr.UndefinedObject,
         r'vision_cluster.record_vote: argument "image_id": image 999 of public.products has no '
         r"features for model 'mobilenet_v2' on any shard"),
        ("recommend('ann', 'products', 0, model => %s)", pgerr.InvalidParameterValue,
         r'vision_cluster.recommend: argument "k" must be between 1 and 10000, got 0'),
        ("recommend(NULL, 'products', model => %s)", pgerr.NullValueNotAllowed,
         r'vision_cluster.recommend: argument "user_id" must not be NULL'),
    ]:
        with pytest.raises(error, match=message):
            query(coord, f"SELECT * FROM vision_cluster.{call}",
                  (FAST,) if "%s" in call else None)


# DB-free -------------------------------------------------------------------------------

def test_text_is_read_and_searched_on_every_shard_like_the_single_node(db, make_table, cluster):
    """vision_cluster.extract reads each shard's images with the OCR model;
    vision_cluster.search_text merges every shard's best and equals one node's answer."""
    from conftest import label_image

    coord = cluster["coord"]
    shards = []  # connections of its own: a test above restarts a shard
    for name in ("shard0", "shard1"):
        shards.append(psycopg2.connect(shards_sh(cluster["env"], "dsn", name)))
        shards[-1].autocommit = True
        query(shards[-1], "CREATE TABLE shelf (id bigint PRIMARY KEY, image bytea)")
    assert query(coord, "SELECT vision_cluster.distribute_table('shelf')") == [(2,)]
    texts = ["COFFEE ITEM", "GREEN TEA ITEM", "COFFEE FILTERS ITEM", "BLACK TEA ITEM",
             "OAT MILK ITEM", "DARK COFFEE ITEM"]
    rows = [(i, label_image(text)[0]) for i, text in enumerate(texts, start=1)]
    for image_id, data in rows:
        query(coord, "INSERT INTO shelf VALUES (%s, %s)", (image_id, psycopg2.Binary(data)))
    assert all(query(shard, "SELECT count(*) FROM shelf")[0][0] for shard in shards)
    for shard in shards:
        shard.close()
    while not all(r == 0 for (r,) in query(coord, "SELECT remaining FROM vision_cluster.extract("
                                                  "'shelf', model => 'pp_ocr_v6')")):
        pass
    single = make_table("shelf_single", rows)
    query(db, f"CALL vision.extract_table('{single}', model => 'pp_ocr_v6')")
    for words in ("coffee", "tea or filters", '"green tea"', "item", "item -coffee"):
        local = query(db, "SELECT image_id, rank, text FROM vision.search_text(%s, %s)",
                      (words, single))
        merged = query(coord, "SELECT image_id, rank, text FROM vision_cluster.search_text("
                              "%s, 'shelf')", (words,))
        assert merged == local and local, words
    nodes = query(coord, "SELECT DISTINCT node FROM vision_cluster.search_text('item', 'shelf')")
    assert sorted(nodes) == [("shard0/pgvision",), ("shard1/pgvision",)]
    assert len(query(coord, "SELECT * FROM vision_cluster.search_text('item', 'shelf', k => 2)")) == 2
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match=r"vision_cluster.search_text: "
                       r"argument \"model\": model 'mobilenet_v2' makes feature vectors"):
        query(coord, "SELECT * FROM vision_cluster.search_text('tea', 'shelf', model => "
                     "'mobilenet_v2')")


def test_parse_conninfo_reads_libpq_key_value_strings():
    assert parse_conninfo("f", "shards", "host=/tmp/x port=5 dbname=db password='a b\\'c'") == \
        {"host": "/tmp/x", "port": "5", "dbname": "db", "password": "a b'c"}
    with pytest.raises(PgvisionError, match='argument "shards" must be a connection string with '
                                            "dbname"):
        parse_conninfo("f", "shards", "host=x")
    with pytest.raises(PgvisionError, match="is not a libpq connection string"):
        parse_conninfo("f", "shards", "postgresql://x/db")



def test_every_cluster_example_of_the_docs_runs(cluster, products):
    import re

    blocks = re.findall(r"^```sql cluster\n(.*?)^```", documentation(), flags=re.S | re.M)
    assert len(blocks) >= 4
    for block in blocks:
        query(cluster["coord"], block)  # raises on any error
    assert query(cluster["coord"], "SELECT count(*) FROM vision_cluster.features "
                                   "WHERE model = %s", (FAST,)) == [(len(IDS),)]
