"""k-nearest-neighbour math over feature matrices (pure numpy, no server): distances,
the k smallest of them, and exact search over a matrix or a live view.

Distances, smaller is closer: ``cosine`` = 1 − cos, ``l2`` = Euclidean, ``ip`` = −dot
(as pgvector's ``<#>``). Ties are broken by ascending image id, so results are deterministic.

>>> import numpy as np
>>> from pgvision.featurestore import FeatureMatrix
>>> m = FeatureMatrix(np.array([1, 2, 3]), np.eye(3, dtype=np.float32))
>>> ids, dist = exact(m, np.array([1, 0.1, 0], np.float32), "cosine", 2)
>>> ids.tolist()
[1, 2]
"""

import numpy as np

from . import float16

METRICS = ("cosine", "l2", "ip")


def distances(matrix, query, metric, rows=None):
    """Distances from ``query`` to the matrix rows (all, or the ``rows`` positions)."""
    vectors = matrix.vectors if rows is None else matrix.vectors[rows]
    norms = matrix.norms if rows is None else matrix.norms[rows]
    dots = float16.dots(vectors, query)  # a shared snapshot may be float16
    if metric == "ip":
        return -dots
    qnorm = float(np.linalg.norm(query))
    if metric == "cosine":
        return 1.0 - dots / np.maximum(norms * qnorm, 1e-12)
    return np.sqrt(np.maximum(norms ** 2 - 2.0 * dots + qnorm ** 2, 0.0))


def top_k(ids, dist, k):
    """The k smallest distances, ties by ascending id: (ids, distances) sorted."""
    if len(ids) > k:
        # argpartition, widened to every row tied with the k-th distance
        kth = np.partition(dist, k - 1)[k - 1]
        keep = np.flatnonzero(dist <= kth)
        ids, dist = ids[keep], dist[keep]
    order = np.lexsort((ids, dist))[:k]
    return ids[order], dist[order]


def exact(matrix, query, metric, k, exclude=None, candidates=None):
    """Exact k-NN over the matrix, optionally restricted to candidate ids."""
    rows = None
    if candidates is not None:
        rows = np.flatnonzero(np.isin(matrix.ids, np.asarray(candidates, dtype=np.int64)))
    ids = matrix.ids if rows is None else matrix.ids[rows]
    dist = distances(matrix, query, metric, rows)
    if exclude is not None:
        keep = ids != exclude
        ids, dist = ids[keep], dist[keep]
    return top_k(ids, dist, k)


def exact_live(view, query, metric, k, exclude=None, candidates=None):
    """Exact k-NN over a snapshots.Live view: the mapped snapshot (rows changed since it
    masked out) and the changes, without copying the snapshot."""
    base, delta = view.snapshot, view.delta
    rows = None
    if candidates is not None:
        rows = np.flatnonzero(np.isin(base.ids, np.asarray(candidates, dtype=np.int64)))
    dist = distances(base, query, metric, rows)
    ids = base.ids if rows is None else base.ids[rows]
    if view.alive is not None:
        alive = view.alive if rows is None else view.alive[rows]
        dist = np.where(alive, dist, np.inf)
    found, dist = top_k(ids, dist, k + 1)
    keep = np.isfinite(dist)
    found, dist = found[keep], dist[keep]
    if len(delta.ids):
        more = exact(delta, query, metric, k + 1, candidates=candidates)
        found, dist = top_k(np.concatenate([found, more[0]]), np.concatenate([dist, more[1]]),
                            k + 1)
    if exclude is not None:
        keep = found != exclude
        found, dist = found[keep], dist[keep]
    return found[:k], dist[:k]
