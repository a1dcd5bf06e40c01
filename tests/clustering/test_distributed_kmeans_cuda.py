"""The torch k-means route (DeeperCluster Sec. 4.2) on a CUDA device: same labels
and centroids as on the CPU, alone, sharded (KMEANS_BACKEND=distributed) and in the
bounded route (FEATURE_SHARDS.KMEANS=torch). Skipped without CUDA."""

import numpy as np
import pytest
import torch

from tests.clustering.synthetic import anisotropic
from vissl_clusterfit.clustering import (
    bounded_kmeans,
    distributed_kmeans,
    nearest_centroids,
    nearest_centroids_bytes,
    sharded_kmeans,
)


pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.fixture
def fp32_matmul():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: the CPU's arithmetic
    yield
    torch.set_float32_matmul_precision(previous)


def test_distributed_kmeans_on_cuda_matches_cpu(fp32_matmul) -> None:
    x = anisotropic(n=3000, d=32, seed=0)
    kw = dict(k=25, niter=10, seed=3, single_process=True)
    on_cpu = distributed_kmeans(torch.from_numpy(x), **kw)
    on_gpu = distributed_kmeans(torch.from_numpy(x).cuda(), **kw)
    assert np.array_equal(on_gpu.labels, on_cpu.labels), np.mean(
        on_gpu.labels != on_cpu.labels
    )
    np.testing.assert_allclose(on_gpu.centroids, on_cpu.centroids, rtol=0, atol=1e-4)
    assert on_gpu.iterations == on_cpu.iterations
    assert on_gpu.objective == pytest.approx(on_cpu.objective, rel=1e-9)


def test_nearest_centroids_on_cuda_matches_cpu(fp32_matmul) -> None:
    x = torch.from_numpy(anisotropic(n=2000, d=16, seed=1))
    c = x[:40].to(torch.float64) + 0.01
    lab_cpu, d_cpu = nearest_centroids(x, c, batch_size=128)
    lab_gpu, d_gpu = nearest_centroids(x.cuda(), c.cuda(), batch_size=512)
    assert lab_gpu.device.type == "cuda"
    assert torch.equal(lab_gpu.cpu(), lab_cpu)
    torch.testing.assert_close(d_gpu.cpu(), d_cpu, rtol=1e-12, atol=1e-9)


def test_sharded_kmeans_on_cuda_matches_cpu(fp32_matmul) -> None:
    x = anisotropic(n=2500, d=24, seed=2)
    kw = dict(k=20, niter=8, seed=1, pca_dim=12)
    on_cpu = sharded_kmeans(x.copy(), **kw)
    on_gpu = sharded_kmeans(x.copy(), device=torch.device("cuda"), **kw)
    assert np.array_equal(on_gpu.labels, on_cpu.labels)
    np.testing.assert_allclose(on_gpu.centroids, on_cpu.centroids, atol=1e-4)


def test_bounded_torch_route_on_cuda_matches_cpu(fp32_matmul, monkeypatch) -> None:
    x = anisotropic(n=3000, d=16, seed=3)

    def run():
        labels = np.zeros(len(x), np.int64)
        dist = np.zeros(len(x), np.float32)
        source = _Rows(x)
        res = bounded_kmeans(
            source, 12, labels, dist, niter=6, rows_per_centroid=100, backend="torch"
        )
        return res

    on_gpu = run()
    assert on_gpu.backend == "torch-cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu = run()
    assert on_cpu.backend == "torch-cpu"
    assert np.array_equal(on_gpu.labels, on_cpu.labels)
    np.testing.assert_allclose(on_gpu.centroids, on_cpu.centroids, atol=1e-4)


def test_bounded_torch_route_device_cuda_equals_device_cpu(fp32_matmul) -> None:
    """The streamed assignment on the GPU (FEATURE_SHARDS.KMEANS=torch, device
    'cuda') gives the labels of the same code on device 'cpu', with PCA."""
    x = anisotropic(n=4000, d=32, seed=4)

    def run(device: str):
        labels = np.zeros(len(x), np.int64)
        dist = np.zeros(len(x), np.float32)
        return bounded_kmeans(
            _Rows(x),
            15,
            labels,
            dist,
            niter=8,
            rows_per_centroid=100,
            pca_dim=16,
            backend="torch",
            device=device,
        )

    torch.cuda.reset_peak_memory_stats()
    on_gpu = run("cuda")
    assert on_gpu.backend == "torch-cuda"
    on_cpu = run("cpu")
    assert on_cpu.backend == "torch-cpu"
    assert np.array_equal(on_gpu.labels, on_cpu.labels), np.mean(
        on_gpu.labels != on_cpu.labels
    )
    np.testing.assert_allclose(on_gpu.distances, on_cpu.distances, rtol=1e-5)
    np.testing.assert_allclose(on_gpu.centroids, on_cpu.centroids, atol=1e-4)


def test_nearest_centroids_stays_within_its_memory_bound(fp32_matmul) -> None:
    n, d, k = 50000, 64, 3000
    x = torch.randn(n, d, device="cuda")
    c = torch.randn(k, d, device="cuda", dtype=torch.float64)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    nearest_centroids(x, c)
    torch.cuda.synchronize()
    used = torch.cuda.max_memory_allocated() - before
    bound = nearest_centroids_bytes(n, d, k)
    assert used <= bound, (used, bound)


class _Rows:
    """A RowSource over an array, in chunks of 700 rows."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.num_rows, self.dim = x.shape

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows].copy()

    def chunks(self, rank: int = 0, world: int = 1):
        for s in list(range(0, self.num_rows, 700))[rank::world]:
            ids = np.arange(s, min(s + 700, self.num_rows))
            yield ids, self.x[ids].copy()
