"""k-means in bounded memory (clustering.bounded): a seeded sample, chunked assignment.

The in-memory route (preprocess_features + run_kmeans) is the reference: when the
sample is every row, the bounded route must give the same labels, centroids and
distances; otherwise only the sample may be read at once.
"""

from typing import Iterator, List, Tuple

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from tests.clustering.gloo import assert_rank0_error_on_every_rank, outcomes_on_ranks
from vissl_clusterfit.clustering import (
    apply_preprocessing,
    backend,
    bounded,
    bounded_kmeans,
    choose_backend,
    distributed_kmeans,
    nearest_centroids,
    nearest_centroids_bytes,
    preprocess_features,
    run_kmeans,
    training_sample,
)


class ArraySource:
    """A RowSource over an in-memory array, in chunks; records what was taken."""

    def __init__(self, x: np.ndarray, chunk_rows: int) -> None:
        self.x, self.chunk_rows = x, chunk_rows
        self.num_rows, self.dim = x.shape
        self.taken: List[np.ndarray] = []

    def take(self, rows: np.ndarray) -> np.ndarray:
        self.taken.append(rows)
        return self.x[rows].copy()

    def chunks(
        self, rank: int = 0, world: int = 1
    ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        starts = range(0, self.num_rows, self.chunk_rows)
        for s in list(starts)[rank::world]:
            ids = np.arange(s, min(s + self.chunk_rows, self.num_rows))
            yield ids, self.x[ids].copy()


def _blobs(n: int = 3000, d: int = 16, centers: int = 12, seed: int = 0) -> np.ndarray:
    x, _ = make_blobs(
        n, n_features=d, centers=centers, cluster_std=2.0, random_state=seed
    )
    return x.astype(np.float32)


def _bounded(x, k, chunk_rows=1000, **kw):
    labels = np.full(len(x), -1, dtype=np.int64)
    dist = np.full(len(x), -1, dtype=np.float32)
    source = ArraySource(x, chunk_rows)
    res = bounded_kmeans(source, k, labels, dist, **kw)
    return res, source


@pytest.mark.parametrize(
    "prep",
    [
        dict(pca_dim=8, whiten=True, l2_norm=True, order="pca_l2"),
        dict(
            pca_dim=6, whiten=False, l2_norm=True, order="l2_pca", pca_sample_size=900
        ),
        dict(pca_dim=0, l2_norm=False),
    ],
)
def test_equals_in_memory_route_when_the_sample_is_everything(prep) -> None:
    x, k = _blobs(), 12
    common = dict(niter=15, seed=3)
    res, source = _bounded(
        x, k, rows_per_centroid=300, backend="faiss", **common, **prep
    )
    xp, pca = preprocess_features(x.copy(), seed=3, **prep)
    ref = run_kmeans(xp, k, max_points_per_centroid=300, **common)
    assert res.sample_rows == len(x) and len(source.taken) == 1
    assert (res.labels != ref.labels).sum() == 0, np.nonzero(res.labels != ref.labels)
    np.testing.assert_array_equal(res.centroids, ref.centroids)
    np.testing.assert_array_equal(res.distances, ref.distances)
    assert res.objective == ref.objective and res.backend == "faiss-cpu"
    assert (pca is None) == (res.pca is None)
    if pca is not None:
        np.testing.assert_array_equal(res.pca.projection, pca.projection)


def test_only_the_seeded_sample_is_read_at_once_and_every_row_is_assigned() -> None:
    x, k = _blobs(n=5000), 10
    res, source = _bounded(x, k, rows_per_centroid=20, niter=10, seed=1, pca_dim=8)
    (taken,) = source.taken
    assert len(taken) == 200 == res.sample_rows
    np.testing.assert_array_equal(taken, training_sample(5000, 10, 20, seed=1))
    assert np.all(np.diff(taken) > 0)  # sorted, unique
    assert not np.array_equal(taken, training_sample(5000, 10, 20, seed=2))
    assert res.labels.min() >= 0 and res.distances.min() >= 0  # every row written
    assert np.bincount(res.labels, minlength=k).min() > 0
    # every label is the nearest centroid of the pre-processed row (no re-seed here)
    assert res.n_empty_reseeded == 0
    xp = bounded.apply_preprocessing(x.copy(), res.pca, True, "pca_l2")
    d2 = ((xp[:, None, :] - res.centroids[None]) ** 2).sum(-1)
    assert np.mean(d2.argmin(1) == res.labels) > 0.999


def test_empty_clusters_are_reseeded_on_sample_rows_only(monkeypatch) -> None:
    x, k = _blobs(n=4000), 10
    real = bounded.train_kmeans

    def with_dead_centroids(*args, **kw):
        c = real(*args, **kw)
        c[1] = c[0]  # duplicate: never the nearest (ties go to the lower index)
        c[2] = 1e3  # far from every row
        return c

    monkeypatch.setattr(bounded, "train_kmeans", with_dead_centroids)
    res, source = _bounded(x, k, rows_per_centroid=40, niter=5, seed=0, l2_norm=False)
    assert res.n_empty_reseeded == 2
    assert np.bincount(res.labels, minlength=k).min() > 0
    outside = np.setdiff1d(np.arange(len(x)), source.taken[0])
    assert not np.isin(res.labels[outside], [1, 2]).any()  # only sample rows moved


def test_torch_backend_trains_distributed_kmeans_on_the_sample() -> None:
    x, k = _blobs(n=2000), 8
    res, _ = _bounded(x, k, rows_per_centroid=100, niter=6, seed=2, backend="torch")
    assert res.backend == ("torch-cuda" if torch.cuda.is_available() else "torch-cpu")
    xp, _ = preprocess_features(x[training_sample(2000, k, 100, 2)].copy())
    ref = distributed_kmeans(xp, k, niter=6, seed=2, single_process=True)
    np.testing.assert_allclose(res.centroids, ref.centroids, atol=1e-6)
    full, _ = preprocess_features(x.copy())
    labels, _ = nearest_centroids(
        torch.from_numpy(full), torch.from_numpy(res.centroids.astype(np.float64))
    )
    np.testing.assert_array_equal(res.labels, labels.numpy())


def test_auto_backend_prefers_faiss_gpu_then_torch_on_cuda(monkeypatch) -> None:
    monkeypatch.setattr(backend, "faiss_has_gpu", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend("auto")[0] == "faiss-cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    name, device = choose_backend("auto")
    assert name == "torch-cuda" and device == torch.device("cuda", 0)
    monkeypatch.setattr(backend, "faiss_has_gpu", lambda: True)
    assert choose_backend("auto")[0] == "faiss-gpu"
    assert choose_backend("faiss")[0] == "faiss-gpu"
    with pytest.raises(ValueError, match="k-means backend 'gpu'"):
        choose_backend("gpu")


def test_device_pins_the_backend_or_says_why_not(monkeypatch) -> None:
    monkeypatch.setattr(backend, "faiss_has_gpu", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert choose_backend("torch", "cpu") == ("torch-cpu", torch.device("cpu"))
    assert choose_backend("auto", "cpu")[0] == "faiss-cpu"
    assert choose_backend("auto", "cuda")[0] == "torch-cuda"
    assert choose_backend("torch", "cuda")[0] == "torch-cuda"
    with pytest.raises(ValueError, match="needs a faiss build with GPU support"):
        choose_backend("faiss", "cuda")
    with pytest.raises(ValueError, match="k-means device 'gpu'"):
        choose_backend("torch", "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch.cuda.is_available\\(\\) is False"):
        choose_backend("torch", "cuda")


def test_torch_route_pinned_to_the_cpu_streams_every_chunk_there() -> None:
    """The code path the GPU runs, on device='cpu': the torch-cpu route trains on
    the sample and assigns chunk by chunk; the labels equal one nearest-centroid
    pass over all pre-processed rows (the chunking changes nothing)."""
    x, k = _blobs(n=2500, d=24), 10
    kw = dict(rows_per_centroid=60, niter=6, seed=4, pca_dim=12, device="cpu")
    res, source = _bounded(x, k, chunk_rows=300, backend="torch", **kw)
    assert res.backend == "torch-cpu" and res.sample_rows == 600
    np.testing.assert_array_equal(source.taken[0], training_sample(2500, k, 60, 4))
    # The PCA fitted on the sample, applied to all rows at once.
    allx = apply_preprocessing(x.copy(), res.pca, True, "pca_l2")
    labels, dist = nearest_centroids(
        torch.from_numpy(allx), torch.from_numpy(res.centroids.astype(np.float64))
    )
    np.testing.assert_array_equal(res.labels, labels.numpy())
    np.testing.assert_allclose(res.distances, dist.numpy(), rtol=1e-6)


def test_nearest_centroids_memory_bound_does_not_grow_with_the_rows() -> None:
    """Only the (n,) outputs grow with n: the row block is capped at 2**24 scores."""
    small = nearest_centroids_bytes(10**5, 256, 16000)
    large = nearest_centroids_bytes(10**8, 256, 16000)
    assert large - small == 16 * (10**8 - 10**5), (small, large)
    assert small < 2**30, small  # per-block term well under 1 GiB at K = 16,000
    assert nearest_centroids_bytes(10**5, 256, 16000, batch_size=16384) > small


def test_pca_on_the_torch_device_gives_the_labels_of_numpy_pca(monkeypatch) -> None:
    """torch-cuda fits and applies the PCA on its device; that code on the CPU
    device gives the labels of the numpy PCA the other routes use."""
    x, k = _blobs(n=2500, d=24), 10
    kw = dict(rows_per_centroid=60, niter=6, seed=4, pca_dim=12, device="cpu")
    ref, _ = _bounded(x, k, chunk_rows=300, backend="torch", **kw)
    monkeypatch.setattr(bounded, "_pca_device", lambda name, dev: torch.device(dev))
    res, _ = _bounded(x, k, chunk_rows=300, backend="torch", **kw)
    np.testing.assert_array_equal(res.labels, ref.labels)
    np.testing.assert_allclose(res.centroids, ref.centroids, atol=1e-5)
    np.testing.assert_allclose(res.pca.projection, ref.pca.projection, rtol=1e-8)


class TruncatedSource(ArraySource):
    """Rank 0 reads the training sample and finds the file cut short."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        raise ValueError("features.npy is truncated: extract the features again")


def _rank0_cannot_read_the_sample(rank: int, out_dir: str) -> None:
    x = _blobs(n=400, d=8)
    labels, dist = np.zeros(len(x), np.int64), np.zeros(len(x), np.float32)
    bounded_kmeans(TruncatedSource(x, 100), 4, labels, dist)


def test_an_error_on_rank_0_stops_every_rank_with_its_message(tmp_path) -> None:
    """Rank 1 waits for rank 0's centroids; it must raise rank 0's error, not hang."""
    got = outcomes_on_ranks(_rank0_cannot_read_the_sample, str(tmp_path))
    error = "ValueError: features.npy is truncated: extract the features again"
    assert_rank0_error_on_every_rank(got, error, "training k-means on the sample")
