"""How well a representation serves search and classification, measured on labelled images
(pure numpy and :mod:`pgvision.learners`; no server).

One protocol for everything, so figures compare: a fixed stratified split into training and
test images; **kNN precision@k** and **mAP@k** of each test image's k nearest training images
by cosine (a neighbour is relevant when it has the query's label); the **linear-probe
accuracy** of pgvision's own logistic learner (the one ``vision.train_classifier`` fits, its
C chosen by cross-validation on the training images only) on the test images; and, where
images come in groups of copies (``groups``), **near-duplicate recall@k**: the share of each
image's k nearest others, over all images, that are copies of the same original.

    >>> import numpy as np
    >>> X = np.eye(4, dtype=np.float32).repeat(3, axis=0)
    >>> y = np.arange(4).repeat(3)
    >>> round(near_duplicate_recall(X, y, 2), 2)
    1.0
"""

import numpy as np

from . import learners

K = 10


def split(labels, test_share=1 / 3, seed=0):
    """(train positions, test positions): a stratified split, the same for every
    representation of the same labels. Classes with a single image go to training."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        n_test = int(round(len(members) * test_share)) if len(members) > 1 else 0
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _nearest(gallery, queries, k, exclude_self=False):
    """Positions (n_queries, k) of each query's k most cosine-similar gallery rows."""
    G, Q = learners.unit(gallery), learners.unit(queries)
    similarity = Q @ G.T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    k = min(k, similarity.shape[1] - (1 if exclude_self else 0))
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(similarity, top, axis=1)
    return np.take_along_axis(top, np.argsort(-order, axis=1, kind="stable"), axis=1)


def retrieval(train_X, train_y, test_X, test_y, k=K):
    """(precision@k, mAP@k) of the test images' k nearest training images."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    hits = train_y[_nearest(train_X, test_X, k)] == test_y[:, None]
    precision = float(hits.mean())
    relevant = np.array([(train_y == label).sum() for label in test_y])
    ranks = np.arange(1, hits.shape[1] + 1)
    precision_at = np.cumsum(hits, axis=1) / ranks
    average = (precision_at * hits).sum(axis=1) / np.maximum(np.minimum(relevant, k), 1)
    return precision, float(average.mean())


def linear_probe(train_X, train_y, test_X, test_y, folds=3):
    """Test accuracy of pgvision's logistic learner fitted on the training images."""
    classes, train_t = np.unique(train_y, return_inverse=True)
    clf, _ = learners.train("logistic", np.asarray(train_X, dtype=np.float32), train_t, {},
                            folds, [str(c) for c in classes])
    predicted = classes[np.argmax(clf.scores(np.asarray(test_X, dtype=np.float32)), axis=1)]
    return float((predicted == np.asarray(test_y)).mean())


def near_duplicate_recall(X, groups, k=2):
    """Share of each image's k nearest other images that are copies of the same original."""
    groups = np.asarray(groups)
    near = _nearest(X, X, k, exclude_self=True)
    return float((groups[near] == groups[:, None]).mean())


def evaluate(X, labels, groups=None, k=K, seed=0):
    """Every measure of one representation ``X`` (n, d) of labelled images, on the split of
    ``labels``; ``groups`` (copies of one original share a value) adds near-duplicate
    recall@2."""
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    train, test = split(labels, seed=seed)
    precision, average = retrieval(X[train], labels[train], X[test], labels[test], k)
    out = {"precision_at_10" if k == K else f"precision_at_{k}": precision,
           "map_at_10" if k == K else f"map_at_{k}": average,
           "accuracy": linear_probe(X[train], labels[train], X[test], labels[test]),
           "train_images": int(len(train)), "test_images": int(len(test))}
    if groups is not None:
        out["near_duplicate_recall_at_2"] = near_duplicate_recall(X, groups, 2)
    return out
