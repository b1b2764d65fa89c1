"""Every SQL-facing function refuses bad input before it runs any query, with an error that
names the function, the argument and the value (server-free: tests/fakeplpy.py)."""

import pytest

from fakeplpy import FakePlpy
from pgvision import catalog, classify, extract, handles, recommend, registry, search, shards
from pgvision.errors import NULL_VALUE, PgvisionError


def refused(call):
    """The PgvisionError ``call(plpy, GD)`` raises, having run no query."""
    plpy = FakePlpy()
    with pytest.raises(PgvisionError) as info:
        call(plpy, {})
    assert plpy.queries == [], f"queried before validating: {plpy.queries[0][0][:80]}"
    return info.value


CASES = [
    # (function, call, the message must contain)
    ("vision.similar", lambda p, g: search.similar(p, g, None), 'argument "image_id" must not be NULL'),
    ("vision.similar", lambda p, g: search.similar(p, g, 1, k=0),
     'argument "k" must be between 1 and 10000, got 0'),
    ("vision.similar", lambda p, g: search.similar(p, g, 1, metric="manhattan"),
     "argument \"metric\" must be one of 'cosine', 'l2', 'ip', got 'manhattan'"),
    ("vision.similar_many", lambda p, g: search.similar_many(p, g, []),
     'argument "image_ids" must be an array of 1 to 100000 image ids'),
    ("vision.similar_many", lambda p, g: search.similar_many(p, g, [1, None]),
     'argument "image_ids" must be an array without NULLs'),
    ("vision.similar_to_vector", lambda p, g: search.similar_to_vector(p, g, None),
     'argument "feature" must not be NULL'),
    ("vision.similar_to_image", lambda p, g: search.similar_to_image(p, g, b"x", k=10001),
     'argument "k" must be between 1 and 10000, got 10001'),
    ("vision.create_index", lambda p, g: search.create_index(p, g, None),
     'argument "source" must not be NULL'),
    ("vision.create_index", lambda p, g: search.create_index(p, g, "t", m=1),
     'argument "m" must be between 2 and 128, got 1'),
    ("vision.create_index", lambda p, g: search.create_index(p, g, "t", ef_search=0),
     'argument "ef_search" must be between 1 and 4096, got 0'),
    ("vision.refresh_index", lambda p, g: search.refresh_index(p, g, None),
     'argument "source" must not be NULL'),
    ("vision.refresh_neighbours", lambda p, g: search.refresh_neighbours(p, g, "t", k=0),
     'argument "k" must be between 1 and 10000, got 0'),
    ("vision.extract_table", lambda p, g: extract.extract_table(p, g, None),
     'argument "source" must not be NULL'),
    ("vision.extract_table", lambda p, g: extract.extract_table(p, g, "t", batch_size=0),
     'argument "batch_size" must be between 1 and 1024, got 0'),
    ("vision.extract_table", lambda p, g: extract.extract_table(p, g, "t", parts=2, part=2),
     'argument "part" must be between 0 and 1, got 2'),
    ("vision.extract_table", lambda p, g: extract.extract_table(p, g, "t", id_column=None),
     'argument "id_column" must not be NULL'),
    ("vision.extract_rows", lambda p, g: extract.extract_rows(p, g, "t", max_rows=None),
     'argument "max_rows" must not be NULL'),
    ("vision.extract_features_with", lambda p, g: extract.extract_features_with(g, b"x", None),
     'argument "model_handle" must not be NULL'),
    ("vision.extract_features_with",
     lambda p, g: extract.extract_features_with(g, b"x", "{}", on_error="skip"),
     "argument \"on_error\" must be one of 'error', 'null', got 'skip'"),
    ("vision.extract_features_with",
     lambda p, g: extract.extract_features_with(g, b"x", "not json"),
     "argument \"model_handle\" is not a handle made by vision.model_handle(): 'not json'"),
    ("vision.register_model", lambda p, g: registry.register_model(p, g, None),
     'argument "name" must not be NULL'),
    ("vision.register_model", lambda p, g: registry.register_model(p, g, "Bad Name", b"x"),
     "argument \"name\" must be a lower-case identifier (letters, digits, _; at most 63 "
     "characters), got 'Bad Name'"),
    ("vision.register_model", lambda p, g: registry.register_model(p, g, "ok"),
     'give exactly one of "model_bytes" and "model_path"'),
    ("vision.register_model", lambda p, g: registry.register_model(p, g, "ok", b"x", pooling="mean"),
     "argument \"pooling\" must be one of 'avg', 'max', 'none', got 'mean'"),
    ("vision.register_model",
     lambda p, g: registry.register_model(p, g, "ok", b"x", input_height=4),
     'argument "input_height" must be between 8 and 4096, got 4'),
    ("vision.register_model",
     lambda p, g: registry.register_model(p, g, "ok", b"x", model_path="/x.keras"),
     'give exactly one of "model_bytes" and "model_path"'),
    ("vision.register_model",
     lambda p, g: registry.register_model(p, g, "ok", None, model_path="relative.keras"),
     "argument \"model_path\" must be an absolute path, got 'relative.keras'"),
    ("vision.register_model", lambda p, g: registry.register_model(p, g, "ok", b"not a zip"),
     'argument "model_bytes" is not a .keras model archive'),
    ("vision.register_keras_application",
     lambda p, g: registry.register_keras_application(p, g, "x", "ResNet9000"),
     "argument \"application\" must be one of"),
    ("vision.register_keras_application",
     lambda p, g: registry.register_keras_application(p, g, "x", "VGG16", weights="mine"),
     "argument \"weights\" must be 'imagenet' or NULL, got 'mine'"),
    ("vision.drop_model", lambda p, g: registry.drop_model(p, g, None),
     'argument "name" must not be NULL'),
    ("vision.model_handle", lambda p, g: handles.model_handle(p, g, None),
     'argument "model" must not be NULL'),
    ("vision.train_classifier", lambda p, g: classify.train_classifier(p, g, None, "labels"),
     'argument "name" must not be NULL'),
    ("vision.train_classifier", lambda p, g: classify.train_classifier(p, g, "Kind", "labels"),
     "argument \"name\" must be a lower-case identifier, got 'Kind'"),
    ("vision.train_classifier",
     lambda p, g: classify.train_classifier(p, g, "kind", "labels", folds=1),
     'argument "folds" must be between 2 and 20, got 1'),
    ("vision.classify", lambda p, g: classify.classify(p, g, None, "kind"),
     'argument "image_id" must not be NULL'),
    ("vision.classify", lambda p, g: classify.classify(p, g, 1, "kind", top_k=0),
     'argument "top_k" must be between 1 and 1000, got 0'),
    ("vision.classify_image", lambda p, g: classify.classify_image(p, g, b"x", "kind", top_k=0),
     'argument "top_k" must be between 1 and 1000, got 0'),
    ("vision.classify_table", lambda p, g: classify.classify_table(p, g, "kind", batch_size=0),
     'argument "batch_size" must be between 1 and 100000, got 0'),
    ("vision.compare_classifiers",
     lambda p, g: classify.compare_classifiers(p, g, "labels", methods=["magic"]),
     "argument \"methods\" must be one of 'knn', 'softmax', 'logistic', 'sgd', got 'magic'"),
    ("vision.compare_classifiers",
     lambda p, g: classify.compare_classifiers(p, g, "labels", methods=[]),
     "argument \"methods\" must be NULL (every method) or an array of methods, got 'an empty "
     "array'"),
    ("vision.evaluate_classifier", lambda p, g: classify.evaluate_classifier(p, g, None),
     'argument "classifier" must not be NULL'),
    ("vision.drop_index", lambda p, g: search.drop_index(p, g, None),
     'argument "source" must not be NULL'),
    ("vision.compare_classifiers",
     lambda p, g: classify.compare_classifiers(p, g, "labels", rank_by="speed"),
     "argument \"rank_by\" must be one of 'accuracy', 'macro_f1', 'roc_auc', got 'speed'"),
    ("vision._put_classifier",
     lambda p, g: classify.put_classifier(p, g, "c", "m", "t", "knn", "{}", ["a", "b"], 4, b"x",
                                          [], [], "{}", "2026-01-01"),
     "argument \"method\" must be a method that keeps no per-node training set (not knn)"),
    ("vision.record_vote", lambda p, g: recommend.record_vote(p, g, None, 1, True),
     'argument "user_id" must not be NULL'),
    ("vision.record_vote", lambda p, g: recommend.record_vote(p, g, "ann", 1, None),
     'argument "liked" must not be NULL'),
    ("vision.record_vote", lambda p, g: recommend.record_vote(p, g, "x" * 10 ** 6, 1, True),
     "argument \"user_id\" must be at most 256 characters, got '1000000 characters'"),
    ("vision.recommend", lambda p, g: recommend.recommend(p, g, None),
     'argument "user_id" must not be NULL'),
    ("vision.recommend", lambda p, g: recommend.recommend(p, g, "ann", k=0),
     'argument "k" must be between 1 and 10000, got 0'),
    ("vision.bandit_next", lambda p, g: recommend.bandit_next(p, g, None),
     'argument "user_id" must not be NULL'),
    ("vision._score_images",
     lambda p, g: recommend.score_images(p, g, "m", "t", 5, [], "magic", None, None, None, None),
     "argument \"strategy\" must be one of 'taste model', 'similar to likes', 'popularity', "
     "got 'magic'"),
    ("vision.cluster", lambda p, g: catalog.cluster(p, g, method="dbscan"),
     "argument \"method\" must be one of 'kmeans', got 'dbscan'"),
    ("vision.embed_2d", lambda p, g: catalog.embed_2d(p, g, method="umap"),
     "argument \"method\" must be one of 'tsne', 'pca', got 'umap'"),
    ("vision.plot_map", lambda p, g: catalog.plot_map(p, g, color_by=None),
     'argument "color_by" must not be NULL'),
    ("vision.plot_map", lambda p, g: catalog.plot_map(p, g, size=10),
     'argument "size" must be between 200 and 4000, got 10'),
    ("vision_cluster.setup", lambda p, g: shards.setup(p, g, None),
     'argument "shards" must not be NULL'),
    ("vision_cluster.setup", lambda p, g: shards.setup(p, g, ["dbname=a", "dbname=b", "dbname=c"]),
     'argument "shards" must be 1, 2, 4, ... or 64 connection strings'),
    ("vision_cluster.setup", lambda p, g: shards.setup(p, g, ["dbname=a", "dbname=a"]),
     'argument "shards" must be distinct connection strings'),
    ("vision_cluster.setup", lambda p, g: shards.setup(p, g, ["host=x", "dbname=b"]),
     "argument \"shards[1]\" must be a connection string with dbname, got 'host=x'"),
    ("vision_cluster.similar", lambda p, g: shards.similar(p, g, None, "t"),
     'argument "image_id" must not be NULL'),
    ("vision_cluster.similar_to_vector", lambda p, g: shards.similar_to_vector(p, g, [1.0], None),
     'argument "source" must not be NULL'),
    ("vision_cluster.classify_table", lambda p, g: shards.classify_table(p, g, None),
     'argument "classifier" must not be NULL'),
    ("vision_cluster.train_classifier",
     lambda p, g: shards.train_classifier(p, g, "c", "l", "t", method="knn"),
     "argument \"method\" must be one of softmax, logistic, sgd"),
    ("vision_cluster.recommend", lambda p, g: shards.recommend(p, g, "ann", None),
     'argument "source" must not be NULL'),
]


@pytest.mark.parametrize("function,call,message", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_before_any_query(function, call, message):
    error = refused(call)
    assert str(error).startswith(f"{function}: "), str(error)
    assert message in str(error)


def test_null_arguments_carry_the_null_value_sqlstate():
    assert refused(lambda p, g: search.similar(p, g, None)).sqlstate == NULL_VALUE
