"""k-means in bounded memory: train on a seeded sample, assign the rest in chunks.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1/4) clusters 1.28M ImageNet features into
K = 16,000 groups and DeeperCluster (Caron et al., ICCV 2019, Sec. 4) 96M images; no
single process should hold those features. faiss itself trains on at most
``K * max_points_per_centroid`` rows (its own sub-sampling); this module draws that
sample itself, with ``numpy.random.default_rng(seed)``, from features kept on disk
(any :class:`RowSource`, e.g. memory-mapped shards), so memory is the sample plus
O(chunk), whatever N is:

1. sample: ``min(N, K * rows_per_centroid)`` sorted row ids, read from the source;
2. pre-processing fitted on the sample (PCA-whitening and L2, DeepCluster thesis
   Sec. 4.2), exactly as :func:`.preprocess.preprocess_features` does in memory
   (on the torch route's GPU, the PCA moments and projections there, in chunks);
3. centroids trained on the sample (faiss, or the torch Lloyd iterations of
   :func:`.distributed_kmeans` on a GPU when faiss has none);
4. every row assigned in chunks (each rank its share of the chunks) into label and
   distance arrays the caller provides (memory-mapped files);
5. empty clusters re-seeded on the sample as :func:`.kmeans.run_kmeans` does on all
   rows (thesis Sec. 3.2): the sample rows of a split cluster change label.

When the sample is the whole data set (N <= K * rows_per_centroid) every step is the
in-memory route's, so the labels are the same.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Protocol, Tuple

import numpy as np
import torch

from .assign import nearest_centroids
from .backend import choose_backend
from .comm import Comm, barrier, run_on_rank0
from .distributed_kmeans import distributed_kmeans
from .kmeans import assign_to_centroids, fix_empty_clusters, train_kmeans
from .pca import PCAWhitening
from .pca_state import pca_from_state_dict, pca_state_dict
from .preprocess import apply_preprocessing, preprocess_features
from .validation import check_num_clusters


__all__ = ["BoundedClustering", "RowSource", "bounded_kmeans", "training_sample"]

logger = logging.getLogger(__name__)


class RowSource(Protocol):
    """Rows of an (N, D) feature matrix that need not fit in memory."""

    num_rows: int
    dim: int

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), D) rows for sorted, unique row ids."""

    def chunks(
        self, rank: int = 0, world: int = 1
    ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """(row ids, float32 rows) of this rank's share of the chunks; the shares of
        all ranks cover every row once."""


@dataclass
class BoundedClustering:
    """Result of :func:`bounded_kmeans` (the arrays on rank 0; None elsewhere)."""

    labels: Optional[np.ndarray]  # (N,) int64: the caller's array, filled
    distances: Optional[np.ndarray]  # (N,) float32 squared distances
    centroids: np.ndarray  # (K, D') float32
    pca: Optional[PCAWhitening]
    n_empty_reseeded: int
    objective: float
    sample_rows: int
    backend: str  # "faiss-cpu", "faiss-gpu", "torch-cuda", "torch-cpu"
    clustered_dim: int
    time_s: Dict[str, float] = field(default_factory=dict)


class _Phases:
    """Wall time of each phase; ``on_phase(name)`` is called as each one ends (a
    benchmark marks its memory counters there, a caller may log progress)."""

    def __init__(self, on_phase: Optional[Callable[[str], None]]) -> None:
        self.times: Dict[str, float] = {}
        self.on_phase = on_phase
        self._t = time.time()

    def done(self, name: str) -> None:
        now = time.time()
        self.times[name] = now - self._t
        self._t = now
        if self.on_phase is not None:
            self.on_phase(name)


def training_sample(n: int, k: int, rows_per_centroid: int, seed: int) -> np.ndarray:
    """Sorted row ids of the training sample: all rows when ``n <= k * rows_per_centroid``,
    else that many drawn without replacement by ``default_rng(seed)`` (faiss' rule for
    ``max_points_per_centroid``, with a seeded numpy draw instead of faiss' own)."""
    size = k * rows_per_centroid
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _train(
    x: np.ndarray,
    k: int,
    niter: int,
    seed: int,
    rows_per_centroid: int,
    backend: str,
    device: torch.device,
) -> np.ndarray:
    """(K, D') float32 centroids trained on the pre-processed sample ``x``."""
    if backend.startswith("faiss"):
        # The sample has <= K * rows_per_centroid rows: faiss does not sub-sample again.
        return train_kmeans(
            x, k, niter, seed, rows_per_centroid, backend == "faiss-gpu"
        )
    res = distributed_kmeans(
        torch.from_numpy(x).to(device), k, niter=niter, seed=seed, single_process=True
    )
    return res.centroids


def _pca_device(backend: str, device: torch.device) -> Optional[torch.device]:
    """Where the PCA is fitted and applied: on the GPU of the torch route (the float64
    D x D moments of the sample are its largest CPU cost), else numpy."""
    return device if backend == "torch-cuda" else None


class _Assigner:
    """Nearest centroid of each streamed chunk, on the backend's device.

    The torch route moves the (K, D') float64 centroids to the device once, then each
    chunk's pre-processed rows; :func:`.assign.nearest_centroids` works on row blocks
    of at most ``2**24`` scores, so device memory is the centroids plus one chunk plus
    a bounded block (:func:`.assign.nearest_centroids_bytes`), whatever N is.
    """

    def __init__(self, centroids: np.ndarray, backend: str, device: torch.device):
        self.centroids, self.backend, self.device = centroids, backend, device
        self.c64: Optional[torch.Tensor] = None
        if not backend.startswith("faiss"):
            self.c64 = torch.from_numpy(centroids.astype(np.float64)).to(device)

    def __call__(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.c64 is None:
            return assign_to_centroids(
                x, self.centroids, use_gpu=self.backend == "faiss-gpu"
            )
        labels, dist = nearest_centroids(torch.from_numpy(x).to(self.device), self.c64)
        return labels.cpu().numpy(), dist.to(torch.float32).cpu().numpy()


def _fit_on_sample(
    source: RowSource,
    k: int,
    niter: int,
    seed: int,
    rows_per_centroid: int,
    prep: Dict[str, Any],
    backend: str,
    device: torch.device,
    phases: "_Phases",
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[PCAWhitening]]:
    """(sample ids, pre-processed sample, centroids, PCA): phases 1-3 (rank 0)."""
    ids = training_sample(source.num_rows, k, rows_per_centroid, seed)
    x = source.take(ids)
    phases.done("read_sample")
    x, pca = preprocess_features(
        x, inplace=True, seed=seed, device=_pca_device(backend, device), **prep
    )
    phases.done("pca")
    logger.info(
        "bounded k-means: training K=%d on %d of %d rows (%s)",
        k,
        len(ids),
        source.num_rows,
        backend,
    )
    centroids = _train(x, k, niter, seed, rows_per_centroid, backend, device)
    phases.done("train")
    return ids, x, centroids, pca


def bounded_kmeans(
    source: RowSource,
    k: int,
    labels_out: Optional[np.ndarray],
    distances_out: Optional[np.ndarray],
    niter: int = 20,
    seed: int = 0,
    rows_per_centroid: int = 256,
    pca_dim: int = 0,
    whiten: bool = True,
    l2_norm: bool = True,
    order: str = "pca_l2",
    pca_sample_size: int = 0,
    backend: str = "auto",
    on_phase: Optional[Callable[[str], None]] = None,
    device: str = "auto",
) -> BoundedClustering:
    """Cluster ``source`` with the sample trained on rank 0 and the assignment shared.

    Called on every rank of ``torch.distributed`` (or in one process). ``labels_out``
    (N,) int64 and ``distances_out`` (N,) float32 are views of the same files on every
    rank (e.g. ``numpy.lib.format.open_memmap``); each rank writes its chunks, rank 0
    then fixes empty clusters. Labels do not depend on the number of ranks.

    Args:
        source: the features, N x D (see :class:`RowSource`).
        k: number of clusters.
        niter, seed: k-means iterations and the seed of the sample, the PCA
            sub-sample and the k-means initialisation.
        rows_per_centroid: training sample = ``min(N, k * rows_per_centroid)`` rows.
        pca_dim, whiten, l2_norm, order, pca_sample_size: pre-processing, fitted on
            the sample (see :func:`.preprocess.preprocess_features`).
        backend: ``auto``, ``faiss`` or ``torch`` (see :func:`choose_backend`).
        device: ``auto``, ``cpu`` or ``cuda``: where the backend runs (see
            :func:`choose_backend`; ``auto`` takes the GPU when there is one).
        on_phase: called with each phase's name as it ends (``read_sample``, ``pca``,
            ``train`` on rank 0; ``assign``; ``fixup`` on rank 0).
    """
    check_num_clusters(k, source.num_rows, key="K")
    if rows_per_centroid < 1:
        raise ValueError(f"rows_per_centroid must be >= 1, got {rows_per_centroid}")
    comm = Comm()
    name, torch_dev = choose_backend(backend, device)
    prep = dict(
        pca_dim=pca_dim,
        whiten=whiten,
        l2_norm=l2_norm,
        order=order,
        pca_sample_size=pca_sample_size,
    )
    phases = _Phases(on_phase)
    fitted = None

    def fit() -> Tuple[np.ndarray, Optional[Dict[str, Any]]]:
        nonlocal fitted
        fitted = _fit_on_sample(
            source, k, niter, seed, rows_per_centroid, prep, name, torch_dev, phases
        )
        return fitted[2], fitted[3] and pca_state_dict(fitted[3])

    centroids, pca_state = run_on_rank0(fit, "training k-means on the sample")
    pca = pca_from_state_dict(pca_state) if pca_state is not None else None
    phases.done("broadcast")  # on ranks > 0: waiting for rank 0's training
    done, last = 0, time.time()
    assign = _Assigner(centroids, name, torch_dev)
    pca_device = _pca_device(name, torch_dev)
    for ids, rows in source.chunks(comm.rank, comm.world_size):
        x = apply_preprocessing(rows, pca, l2_norm, order, True, pca_device)
        labels, dist = assign(x)
        labels_out[ids] = labels
        distances_out[ids] = dist
        done += len(ids)
        if time.time() - last > 30:
            last = time.time()
            logger.info("bounded k-means: rank %d assigned %d rows", comm.rank, done)
    barrier()
    phases.done("assign")
    if fitted is None:
        return BoundedClustering(
            None, None, centroids, pca, 0, float("nan"), 0, name, centroids.shape[1]
        )
    ids, x_sample, _, _ = fitted
    centroids, n_reseeded = _fix_on_sample(
        x_sample, ids, centroids, labels_out, distances_out
    )
    objective = sum(
        float(distances_out[s : s + (1 << 20)].sum(dtype=np.float64))
        for s in range(0, source.num_rows, 1 << 20)
    )
    phases.done("fixup")
    return BoundedClustering(
        labels_out,
        distances_out,
        centroids,
        pca,
        n_reseeded,
        objective,
        len(ids),
        name,
        int(centroids.shape[1]),
        phases.times,
    )


def _fix_on_sample(
    x_sample: np.ndarray,
    ids: np.ndarray,
    centroids: np.ndarray,
    labels: np.ndarray,
    distances: np.ndarray,
) -> Tuple[np.ndarray, int]:
    """Re-seed empty clusters (thesis Sec. 3.2) by splitting on the sample rows; only
    their labels and distances change. (centroids, number of re-seeds)."""
    k = centroids.shape[0]
    counts = np.zeros(k, dtype=np.int64)
    for s in range(0, len(labels), 1 << 20):
        counts += np.bincount(labels[s : s + (1 << 20)], minlength=k)
    if (counts > 0).all():
        return centroids, 0
    sample_labels = np.asarray(labels[ids])
    # Clusters with members outside the sample are not empty: never re-seeded.
    outside = counts - np.bincount(sample_labels, minlength=k) > 0
    centroids, new_labels, new_dist, n = fix_empty_clusters(
        x_sample, centroids, sample_labels, np.asarray(distances[ids]), keep=outside
    )
    labels[ids] = new_labels
    distances[ids] = new_dist
    return centroids, n
