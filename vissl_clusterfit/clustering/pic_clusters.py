"""Cluster post-processing of Power Iteration Clustering (DeepCluster thesis Sec. 2.4,
3.2, 4.6): pointer chains to attractors, singleton redistribution, consecutive ids and
the merge that bounds the number of clusters (used by :mod:`.pic`)."""

import heapq
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp


def resolve_pointers(pointers: np.ndarray) -> np.ndarray:
    """Roots of a pointer forest (a root points to itself), by pointer jumping.

    Every round halves the remaining depth: O(log depth) vectorised rounds.
    """
    while True:
        jumped = pointers[pointers]
        if np.array_equal(jumped, pointers):
            return pointers
        pointers = jumped


def redistribute_singletons(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Thesis Sec. 4.6: a singleton joins its nearest non-singleton neighbour's cluster.

    ``indices`` are the k-NN lists, nearest first. Every decision is taken on
    the input labels, so the order in which singletons are visited is moot; a
    singleton whose neighbours are all singletons stays one.
    """
    sizes = np.bincount(labels)
    singles = np.flatnonzero(sizes[labels] == 1)
    if singles.size == 0:
        return labels
    neighbors = indices[singles]
    usable = sizes[labels[neighbors]] > 1
    found = usable.any(axis=1)
    nearest = usable.argmax(axis=1)
    labels = labels.copy()
    labels[singles[found]] = labels[neighbors[found, nearest[found]]]
    return labels


def consecutive_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..C-1 in order of each cluster's first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse]


def cluster_adjacency(
    labels: np.ndarray, w: sp.csr_matrix, n_clusters: int
) -> List[Dict[int, float]]:
    """For each cluster, {other cluster: summed weight of the edges between them}."""
    coo = w.tocoo()
    a, b = labels[coo.row], labels[coo.col]
    between = (a != b) & (coo.data > 0)
    cross = sp.csr_matrix(
        (coo.data[between], (a[between], b[between])), shape=(n_clusters, n_clusters)
    )
    cross.sum_duplicates()
    ptr, cols, data = cross.indptr, cross.indices.tolist(), cross.data.tolist()
    return [
        dict(zip(cols[ptr[c] : ptr[c + 1]], data[ptr[c] : ptr[c + 1]]))
        for c in range(n_clusters)
    ]


def merge_to_bound(
    labels: np.ndarray,
    w: sp.csr_matrix,
    x: np.ndarray,
    v: np.ndarray,
    max_clusters: int,
) -> np.ndarray:
    """Merge clusters until at most ``max_clusters`` remain (step 5).

    ``labels`` must be consecutive. The smallest cluster merges first; among
    equal sizes the one with the lowest peak of ``v`` (its attractor's value),
    so the order does not depend on how rows or ids are numbered. It merges
    into the cluster it shares the most weight of ``w`` with (lowest id on
    ties) or, having no weighted edge to any other cluster, into the one whose
    mean over ``x`` is nearest its own (lowest id on ties).

    Returns:
        labels with at most ``max_clusters`` distinct values (not consecutive).
    """
    n_clusters = int(labels.max()) + 1
    if n_clusters <= max_clusters:
        return labels
    adjacency = cluster_adjacency(labels, w, n_clusters)
    sizes = np.bincount(labels, minlength=n_clusters)
    peaks = np.full(n_clusters, -np.inf)
    np.maximum.at(peaks, labels, v)
    parent = np.arange(n_clusters)
    heap = [(int(sizes[c]), float(peaks[c]), c) for c in range(n_clusters)]
    heapq.heapify(heap)
    sums: Optional[np.ndarray] = None  # per-cluster feature sums, built on first need
    alive = n_clusters
    while alive > max_clusters:
        size, _, c = heapq.heappop(heap)
        if parent[c] != c or size != sizes[c]:
            continue  # stale entry: merged away, or grown since it was pushed
        if adjacency[c]:
            target = max(adjacency[c].items(), key=lambda kv: (kv[1], -kv[0]))[0]
        else:
            if sums is None:
                owner = resolve_pointers(parent.copy())[labels]
                members = sp.csr_matrix(
                    (np.ones(labels.size), (owner, np.arange(labels.size))),
                    shape=(n_clusters, labels.size),
                )
                sums = members @ x.astype(np.float64)
            live = np.flatnonzero(parent == np.arange(n_clusters))
            live = live[live != c]
            gaps = ((sums[live] / sizes[live, None] - sums[c] / sizes[c]) ** 2).sum(1)
            target = int(live[np.argmin(gaps)])
        for d, weight in adjacency[c].items():
            del adjacency[d][c]
            if d != target:
                adjacency[target][d] = adjacency[target].get(d, 0.0) + weight
                adjacency[d][target] = adjacency[d].get(target, 0.0) + weight
        adjacency[c] = {}
        sizes[target] += sizes[c]
        peaks[target] = max(peaks[target], peaks[c])
        if sums is not None:
            sums[target] += sums[c]
        parent[c] = target
        alive -= 1
        heapq.heappush(heap, (int(sizes[target]), float(peaks[target]), target))
    return resolve_pointers(parent)[labels]
