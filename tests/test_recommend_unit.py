"""The recommendation scorers without a server: against numpy written out here, ties, the
shards' standardisation, and the taste model against scikit-learn."""

import numpy as np
import pytest

from pgvision import recommend
from pgvision.featurestore import FeatureMatrix
from pgvision.learners import binary_logistic


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture
def votes():
    rng = np.random.default_rng(7)
    U = unit(rng.random((60, 16)))
    liked, disliked = U[[0, 1, 2]], U[[3, 4]]
    w, b = recommend.fit_taste(np.vstack([liked, disliked]), [1, 1, 1, 0, 0])
    return U, {"likes": liked, "dislikes": disliked, "w": w, "b": b}


def test_the_scorers_equal_their_definitions(votes):
    U, payload = votes
    nearest = np.array([max(u @ l for l in payload["likes"])
                        - 0.5 * max(u @ d for d in payload["dislikes"]) for u in U])
    taste = U @ payload["w"] + payload["b"]
    z = lambda s: (s - s.mean()) / s.std()  # noqa: E731
    score, tie = recommend.score_rows(U, recommend.BOTH, payload)
    np.testing.assert_allclose(score, z(nearest) + z(taste), rtol=1e-6, atol=1e-9)
    mean_like = payload["likes"].mean(axis=0)
    np.testing.assert_allclose(tie, U @ (mean_like / np.linalg.norm(mean_like)), rtol=1e-6)
    direction = lambda V: V.mean(axis=0) / np.linalg.norm(V.mean(axis=0))  # noqa: E731
    rocchio = U @ (direction(payload["likes"]) - 0.5 * direction(payload["dislikes"]))
    few, _ = recommend.score_rows(U, recommend.LIKES, {"likes": payload["likes"],
                                                       "dislikes": payload["dislikes"]})
    np.testing.assert_allclose(few, z(nearest) + 0.5 * z(rocchio), rtol=1e-6, atol=1e-9)
    likes_only, _ = recommend.score_rows(U, recommend.LIKES, {"likes": payload["likes"]})
    np.testing.assert_allclose(likes_only, z((U @ payload["likes"].T).max(axis=1))
                               + 0.5 * z(U @ direction(payload["likes"])), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("strategy", [recommend.BOTH, recommend.LIKES])
def test_shards_standardise_as_one_node_does(votes, strategy):
    """Raw moments of two halves, added up, standardise like the whole catalog."""
    U, payload = votes
    if strategy == recommend.LIKES:  # no taste model: the second score is Rocchio's
        payload = {"likes": payload["likes"], "dislikes": payload["dislikes"]}
    whole, _ = recommend.score_rows(U, strategy, payload)
    shared = dict(payload, moments=recommend.moments_of(
        [recommend.raw_moments(U[:25], payload), recommend.raw_moments(U[25:], payload)]))
    halves = np.concatenate([recommend.score_rows(U[:25], strategy, shared)[0],
                             recommend.score_rows(U[25:], strategy, shared)[0]])
    np.testing.assert_allclose(halves, whole, rtol=1e-6, atol=1e-9)


def test_ties_are_broken_by_the_tie_breaker_not_by_id():
    """Images 1 and 2 are exactly as near the nearest like (e1), and a taste model that says
    nothing (w = 0) leaves them tied; image 2 is nearer the mean of the likes, so it comes
    first; two copies of one vector (3 and 4) fall back to id."""
    c, s = np.cos(0.3), np.sin(0.3)
    likes = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    dislikes = np.array([[0.0, 0.0, 0.0, 1.0]])  # as far from all four
    vectors = np.array([[c, 0.0, s, 0.0], [c, s, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0]], dtype=np.float32)
    matrix = FeatureMatrix(np.array([1, 2, 3, 4]), vectors)
    payload = {"likes": likes, "dislikes": dislikes, "w": np.zeros(4), "b": 0.0}
    ranked = recommend.best_scored(matrix, recommend.BOTH, payload, (), 4)
    assert [i for i, _ in ranked] == [2, 1, 3, 4]
    assert ranked[0][1] == ranked[1][1]


def test_the_taste_model_is_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = unit(rng.random((40, 300)))
    y = (rng.random(40) < 0.4).astype(int)
    w, b = binary_logistic(X, y, C=10.0)
    reference = LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(w, reference.coef_[0], atol=1e-5)
    assert abs(b - reference.intercept_[0]) < 1e-5


def test_a_payload_round_trips_without_pickle(votes):
    _, payload = votes
    back = recommend.payload_from_bytes(recommend.payload_bytes(payload))
    assert set(back) == set(payload)
    np.testing.assert_allclose(back["likes"], payload["likes"], rtol=1e-6)
