"""The torch k-means route (DeeperCluster Sec. 4.2) on a CUDA device: same labels
and centroids as on the CPU. Skipped without CUDA."""

import numpy as np
import pytest
import torch

from tests.clustering.synthetic import anisotropic
from vissl_clusterfit.clustering import distributed_kmeans, nearest_centroids


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
