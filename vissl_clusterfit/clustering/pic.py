"""Power Iteration Clustering on a k-NN graph, the variant DeepCluster ran.

DeepCluster thesis (Caron 2018): Sec. 2.4 introduces PIC (Lin & Cohen, ICML
2010) in the simplified variant of Douze et al. [24]; Sec. 3.2 uses it instead
of k-means to turn features into pseudo-labels without fixing K; Sec. 4.6 gives
the graph (5 nearest neighbours, Eq. 4.1, symmetrised, Gaussian kernel
exp(-x^2 / sigma^2) on L2 distances) and the singleton redistribution. In
ClusterFit terms (Yan et al., CVPR 2020, Sec. 3.1) it replaces the k-means step.

The thesis leaves the walk/restart weights, the number of iterations and the
climbing rule unstated, so this module implements the variant of the authors'
code (facebookresearch/deepcluster, ``clustering.py``: ``make_adjacencyW``,
``run_pic``, ``find_maxima_cluster``, ``PIC.cluster``) with its defaults:

1. Graph: exact ``n_neighbors``-NN (self excluded), A_ij = exp(-||x_i - x_j||^2
   / sigma^2) on those edges, W = A + A^T (an edge found from both ends gets
   both weights).
2. Power iteration: v_0 = 1/N, then ``n_iter`` = 200 times
   v <- (alpha W v + (1 - alpha) / N) / sum(...), alpha = 0.001: the walk gets
   weight 0.1 %, the uniform restart 99.9 %, and W v is mixed in unnormalised.
   To first order in alpha the fixed point is (1 + alpha (W 1 - mean)) / N:
   v ranks the nodes by weighted degree, higher powers of W breaking ties.
3. Attractors: node i points to the neighbour j with the largest
   W_ij (v_j - v_i) when that is > 0, else to itself; a cluster is a tree of
   that pointer forest, i.e. the basin of a local maximum of v.
4. Singletons (Sec. 4.6, on by default): a one-node cluster joins the cluster
   of its nearest of the ``n_neighbors`` neighbours that is not a singleton; if
   all are singletons it stays one. Decided on PIC's clusters, all at once, as
   the reference does. With positive weights and no ties in v a singleton's
   neighbours all climb (to it or elsewhere), so none stays alone.
5. Bound (ours; the reference instead resizes the classifier every round):
   with ``max_clusters`` set, while there are more clusters the smallest one
   (on ties, the one with the lowest peak of v) merges into the neighbouring
   cluster it shares the most edge weight with; a cluster with no weighted
   edge to another (a whole graph component) merges into the cluster with the
   nearest mean instead. Merging only joins whole clusters, so it gives exactly
   ``max_clusters`` clusters when PIC found more and changes nothing otherwise.

Numerics: with a 99.9 % restart, v is 1/N plus a perturbation of relative size
about alpha * degree; with the thesis sigma = 0.2 on L2-normalised features the
edge weights go down to exp(-100). On 5,000 L2-normalised 64-d Gaussian points
(weights 3e-15 to 4e-9) the reference's float32 v comes out exactly flat, so
all 5,000 nodes are their own local maximum, and a float64 v takes only 473
distinct values. Here the same recurrence is carried as v = beta + gamma u,
with u >= 0 of order one and the weights divided by the largest one, so the
differences between nodes keep float64's relative precision; the climbing
rule only depends on the sign and argmax of W_ij (v_j - v_i), which these
positive rescalings leave unchanged. What float64 cannot hold is a weight
below exp(-708) times the largest one: run_pic warns when any is lost.
"""

import warnings
from typing import Optional, Tuple

import faiss
import numpy as np
import scipy.sparse as sp

from .pic_clusters import (
    consecutive_labels,
    merge_to_bound,
    redistribute_singletons,
    resolve_pointers,
)
from .validation import validate_features as _validate_features


__all__ = ["make_knn_graph", "run_pic"]


def make_knn_graph(x: np.ndarray, n_neighbors: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k-NN graph with a faiss ``IndexFlatL2`` (thesis Sec. 4.6, Eq. 4.1).

    L2 rather than inner product: the thesis defines both the neighbourhoods
    and the Gaussian kernel on Euclidean distances, and the two agree anyway
    on L2-normalised features (||a - b||^2 = 2 - 2 <a, b>). faiss searches in
    blocks of queries, so memory stays O(N * n_neighbors) beyond ``x``.

    Args:
        x: (N, D) features.
        n_neighbors: neighbours per node, excluding the node itself; < N.

    Returns:
        (indices int64 (N, n_neighbors), squared L2 distances float32
        (N, n_neighbors)), nearest first.
    """
    x = _validate_features(x)
    n = x.shape[0]
    if int(n_neighbors) != n_neighbors or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}")
    n_neighbors = int(n_neighbors)
    if n_neighbors >= n:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be smaller than the number of samples N={n}; "
            "lower n_neighbors or use more data"
        )
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    distances, indices = index.search(x, n_neighbors + 1)
    # A node is normally its own first hit, but with duplicate points a twin
    # may come first; drop the self entry wherever it is, else the farthest hit.
    is_self = indices == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    indices = indices[keep].reshape(n, n_neighbors).astype(np.int64)
    distances = np.maximum(distances[keep].reshape(n, n_neighbors), 0.0).astype(
        np.float32
    )
    return indices, distances


def _relative_affinity(
    indices: np.ndarray, sq_distances: np.ndarray, sigma: float
) -> Tuple[sp.csr_matrix, float]:
    """W = A + A^T of the module docstring, returned as (W / w_max, w_max).

    A_ij = exp(-d_ij^2 / sigma^2) on the k-NN edges. Each weight is computed
    relative to the largest, exp(-(d^2 - min d^2) / sigma^2), so no weight
    underflows only because all distances are large; ``w_max`` may itself be
    0.0 then, which :func:`_power_iteration` handles as its limit w_max -> 0.

    Returns:
        (canonical CSR (N, N), symmetric, no self loops; float w_max).
    """
    n, k = indices.shape
    d2 = sq_distances.astype(np.float64)
    d2_min = float(d2.min())
    rel = np.exp(-(d2 - d2_min) / (sigma * sigma)).ravel()
    rows = np.repeat(np.arange(n), k)
    cols = indices.ravel()
    # COO -> CSR sums the duplicates: a mutual edge gets A_ij + A_ji, as in A + A^T.
    w = sp.csr_matrix(
        (
            np.concatenate([rel, rel]),
            (np.concatenate([rows, cols]), np.concatenate([cols, rows])),
        ),
        shape=(n, n),
    )
    w.sum_duplicates()
    return w, float(np.exp(-d2_min / (sigma * sigma)))


def _power_iteration(
    w_rel: sp.csr_matrix, w_max: float, alpha: float, n_iter: int
) -> Tuple[np.ndarray, float, float]:
    """The reference's v <- (alpha W v + (1 - alpha)/N) / sum, from v_0 = 1/N.

    Carried as v = beta + gamma u with W = w_max W_rel and u >= 0. Then
    W v = beta w_max (W_rel 1 + (gamma / beta) W_rel u), so each step is
    u <- W_rel 1 + (gamma / beta) W_rel u, s = 1 - alpha + alpha beta w_max sum(u),
    beta <- (1 - alpha) / (N s), gamma <- alpha beta w_max / s: the same sequence
    in exact arithmetic. u is a sum of non-negative terms (weighted degree plus
    longer walks), so it keeps every node's relative precision, however small
    alpha and the weights are and however widely the degrees range.

    Returns:
        (u float64 (N,), beta, gamma) with v = beta + gamma * u.
    """
    n = w_rel.shape[0]
    degree = np.asarray(w_rel.sum(axis=1), dtype=np.float64).ravel()
    u, beta, gamma = np.zeros(n), 1.0 / n, 0.0
    for _ in range(n_iter):
        u = degree + (gamma / beta) * (w_rel @ u)
        s = (1.0 - alpha) + alpha * beta * w_max * float(u.sum())
        beta, gamma = (1.0 - alpha) / (n * s), alpha * beta * w_max / s
    return u, beta, gamma


def _attractor_clusters(graph: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
    """Label each node with the local maximum of ``v`` it climbs to (step 3).

    Node i points to the neighbour j with the largest graph[i, j] (v_j - v_i)
    when that is > 0 (lowest j on ties, so the result does not depend on the
    storage order), else to itself. Pointers strictly increase ``v``, so they
    form a forest whose roots are the local maxima; the clusters are its trees.

    Returns:
        int64 labels, numbered by their root's row.
    """
    n = v.shape[0]
    graph = sp.csr_matrix(graph, copy=True)
    graph.sum_duplicates()  # canonical: columns sorted within each row
    counts = np.diff(graph.indptr)
    rows = np.repeat(np.arange(n), counts)
    cols = graph.indices
    score = graph.data * (v[cols] - v[rows])
    pointers = np.arange(n)
    if score.size:
        has_edges = counts > 0
        row_max = np.zeros(n)
        row_max[has_edges] = np.maximum.reduceat(score, graph.indptr[:-1][has_edges])
        best = np.flatnonzero((score == row_max[rows]) & (score > 0))
        climbing, first = np.unique(rows[best], return_index=True)
        pointers[climbing] = cols[best[first]]
    _, labels = np.unique(resolve_pointers(pointers), return_inverse=True)
    return labels.astype(np.int64)


def run_pic(
    x: np.ndarray,
    n_neighbors: int = 5,
    sigma: float = 0.2,
    alpha: float = 0.001,
    n_iter: int = 200,
    seed: int = 0,
    distribute_singletons: bool = True,
    max_clusters: Optional[int] = None,
) -> np.ndarray:
    """Power Iteration Clustering, DeepCluster reference variant (thesis Sec. 2.4 / 4.6).

    Steps 1-5 of the module docstring. The number of clusters is an output:
    ``int(labels.max()) + 1``, since labels are always consecutive. The thesis
    parameters (sigma=0.2, 5 neighbours) assume L2-normalised, PCA-reduced
    features (``preprocess_features``), where squared distances lie in [0, 4].

    Args:
        x: (N, D) features.
        n_neighbors: neighbours per node in the graph (thesis: 5).
        sigma: Gaussian kernel bandwidth (reference: 0.2).
        alpha: weight of the walk W v in each power iteration; the uniform
            restart gets 1 - alpha (reference: 0.001). In (0, 1).
        n_iter: number of power iterations (reference: 200).
        seed: accepted for call compatibility with ``run_kmeans``; the
            reference variant is deterministic (uniform start, lowest-index
            tie-breaks), so it does not change the result.
        distribute_singletons: move each singleton into the cluster of its
            nearest non-singleton neighbour (thesis Sec. 4.6; reference default).
        max_clusters: if set and PIC finds more clusters, merge the smallest
            into their most strongly connected neighbour until exactly this
            many remain (step 5), e.g. the size of a fixed classifier head.

    Returns:
        int64 labels (N,) in [0, C), every id used, numbered by the first row
        of each cluster; C = ``labels.max() + 1`` (<= ``max_clusters``).
    """
    del seed  # deterministic; see Args
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(
            f"alpha (weight of the walk; the restart gets 1 - alpha) must be in (0, 1), "
            f"got {alpha}; the reference uses 0.001"
        )
    if int(n_iter) != n_iter or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    if max_clusters is not None and (
        int(max_clusters) != max_clusters or max_clusters < 1
    ):
        raise ValueError(
            f"max_clusters must be None or a positive integer, got {max_clusters!r}"
        )
    x = _validate_features(x)
    indices, sq_distances = make_knn_graph(x, n_neighbors)
    w_rel, w_max = _relative_affinity(indices, sq_distances, float(sigma))
    # Subnormal or zero relative weights have lost precision: below exp(-708).
    n_lost = int((w_rel.data < np.finfo(np.float64).tiny).sum())
    if n_lost:
        warnings.warn(
            f"{n_lost} of {w_rel.nnz} k-NN edge weights exp(-d^2/sigma^2) are below "
            f"exp(-708) times the largest, out of float64's range (sigma={sigma}, "
            f"squared neighbour distances {float(sq_distances.min()):.3g} to "
            f"{float(sq_distances.max()):.3g}); PIC cannot climb along them reliably "
            "and their nodes may stay singletons. L2-normalise the features "
            "(sigma=0.2 assumes squared distances in [0, 4]) or raise sigma",
            RuntimeWarning,
            stacklevel=2,
        )
    u, _, _ = _power_iteration(w_rel, w_max, float(alpha), int(n_iter))
    # v = beta + gamma u, W = w_max W_rel with gamma, w_max > 0 in exact
    # arithmetic: the rule's sign and argmax on (W_rel, u) are those on (W, v).
    labels = _attractor_clusters(w_rel, u)
    if distribute_singletons:
        labels = consecutive_labels(redistribute_singletons(labels, indices))
    if max_clusters is not None:
        labels = merge_to_bound(labels, w_rel, x, u, int(max_clusters))
    return consecutive_labels(labels)
