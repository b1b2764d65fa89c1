"""Server-free: each pooling against a hand-written numpy reference and against the Keras
graph extraction builds; the evaluation measures on small cases worked out by hand."""

import numpy as np
import pytest

from pgvision import evaluation, pooling


def test_grid_is_the_global_average_then_the_four_quadrants():
    maps = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    got = pooling.pool(maps, "grid")
    want = [maps.mean(axis=(1, 2)), maps[:, :2, :2].mean(axis=(1, 2)),
            maps[:, :2, 2:].mean(axis=(1, 2)), maps[:, 2:, :2].mean(axis=(1, 2)),
            maps[:, 2:, 2:].mean(axis=(1, 2))]
    np.testing.assert_allclose(got, np.concatenate(want, axis=1), rtol=1e-6)
    assert got.shape == (2, pooling.output_dims(3, "grid"))


def test_an_odd_middle_row_belongs_to_both_halves():
    maps = np.zeros((1, 3, 3, 1), dtype=np.float32)
    maps[0, 1, 1, 0] = 9.0  # the centre cell only
    cells = pooling.pool(maps, "grid")[0]
    np.testing.assert_allclose(cells, [1.0, 9 / 4, 9 / 4, 9 / 4, 9 / 4])


def test_gem_lies_between_average_and_max():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 2, (3, 5, 5, 4)).astype(np.float32)
    gem = pooling.pool(maps, "gem")
    np.testing.assert_allclose(gem, np.cbrt((maps ** 3).mean(axis=(1, 2))), rtol=1e-5)
    assert (gem >= pooling.pool(maps, "avg") - 1e-6).all()
    assert (gem <= pooling.pool(maps, "max") + 1e-6).all()


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        pooling.pool(np.zeros((1, 2, 2, 1)), "sum")


@pytest.mark.parametrize("how", ["avg", "max", "gem", "grid"])
@pytest.mark.parametrize("side", [4, 5])
def test_the_keras_graph_pools_as_the_reference_does(how, side):
    keras = pytest.importorskip("keras")
    maps = np.random.default_rng(side).uniform(0, 3, (2, side, side, 6)).astype(np.float32)
    inputs = keras.Input((side, side, 6))
    model = keras.Model(inputs, pooling.keras_pooling(inputs, how))
    np.testing.assert_allclose(model.predict_on_batch(maps), pooling.pool(maps, how),
                               rtol=1e-5, atol=1e-6)


def test_split_is_stratified_and_repeatable():
    labels = np.repeat([0, 1, 2], [9, 6, 1])
    train, test = evaluation.split(labels)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(16))
    assert np.bincount(labels[test], minlength=3).tolist() == [3, 2, 0]
    assert [a.tolist() for a in evaluation.split(labels)] == [train.tolist(), test.tolist()]


def test_retrieval_counts_the_neighbours_that_share_the_label():
    train_X = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    train_y = np.array([0, 0, 1, 1])
    # the query sits on class 0's side: its 3 nearest are 0, 0, then a 1
    precision, average = evaluation.retrieval(train_X, train_y, np.array([[1, 0.05]]),
                                              np.array([0]), k=3)
    assert precision == pytest.approx(2 / 3)
    assert average == pytest.approx(1.0)  # both relevant images are ranked first
    precision, average = evaluation.retrieval(train_X, train_y, np.array([[0.05, 1]]),
                                              np.array([0]), k=3)
    assert precision == pytest.approx(1 / 3)  # ranks 1 and 2 are class 1, rank 3 is class 0
    assert average == pytest.approx((1 / 3) / 2)


def test_near_duplicate_recall_leaves_the_image_itself_out():
    X = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], dtype=np.float32)
    assert evaluation.near_duplicate_recall(X, [0, 0, 1, 1], k=1) == 1.0
    assert evaluation.near_duplicate_recall(X, [0, 1, 0, 1], k=1) == 0.0


def test_a_separable_set_is_learnt_by_the_linear_probe():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    X = np.eye(3)[y] * 5 + rng.normal(0, 0.3, (60, 3))
    result = evaluation.evaluate(X, y)
    assert result["accuracy"] == 1.0 and result["precision_at_10"] > 0.9
    assert result["train_images"] + result["test_images"] == 60


def test_neighbours_found_block_by_block_are_those_of_the_whole_matrix(monkeypatch):
    """Similarities are computed a block of queries at a time (memory); the answer is the
    brute-force one of the whole matrix, the image itself left out."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    want = np.argsort(-similarity, axis=1, kind="stable")[:, :4]
    monkeypatch.setattr(evaluation, "QUERY_BLOCK", 64)
    np.testing.assert_array_equal(evaluation._nearest(X, X, 4, exclude_self=True), want)
    np.testing.assert_array_equal(evaluation._nearest(X, X[:70], 4)[:, 0], np.arange(70))
