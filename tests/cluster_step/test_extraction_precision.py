"""bf16 autocast and channels_last in feature extraction (cluster_step.extraction):
how far the features move from float32 NCHW, and whether the cluster labels follow."""

import numpy as np
import pytest
import torch

from vissl_clusterfit.cluster_step.extraction import extract_features
from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.extraction_trunks import SingleFeatureTrunk


class _Pooled(SingleFeatureTrunk):
    """torchvision ResNet-18 up to its global average pool (512-d)."""

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return torch.flatten(m.avgpool(x), 1)


class _Images(torch.utils.data.Dataset):
    """scikit-learn's digits as 3 x 32 x 32 images, VISSL's item layout."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images[:256], dtype=torch.float32) / 16.0
        x = torch.nn.functional.interpolate(x[:, None], size=32, mode="bilinear")
        self.x = (x.expand(-1, 3, -1, -1) - 0.3) / 0.4
        self.y = d.target[:256]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"data": [self.x[i]]}


@pytest.fixture(scope="module")
def setup():
    import torchvision

    torch.manual_seed(0)
    trunk = _Pooled(torchvision.models.resnet18(weights=None), "pool")
    return trunk, _Images()


def _features(setup, loader: ExtractionLoader) -> np.ndarray:
    trunk, data = setup
    return extract_features(
        [(trunk, "pool", "flatten")], data, 64, torch.device("cpu"), loader, shard=False
    )


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)


def test_bf16_autocast_features_and_labels_stay_close(setup):
    fp32 = _features(setup, ExtractionLoader())
    bf16 = _features(setup, ExtractionLoader(autocast="bfloat16"))
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    rel = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per op); through 18
    # layers the measured per-image relative error is at most 0.9%: bound it at 5%
    assert rel.max() < 0.05, f"relative feature error: max {rel.max():.4f}"
    assert rel.mean() > 1e-4, "bf16 features equal fp32's: autocast did not run"
    # labels: each image's nearest of ten fp32 class centroids (the clusters k-means
    # would find here) under both precisions
    labels = setup[1].y
    centroids = np.stack([fp32[labels == c].mean(0) for c in range(10)])
    agree = (_nearest(fp32, centroids) == _nearest(bf16, centroids)).mean()
    assert agree >= 0.97, f"labels agree on {agree:.3f} of the images"


def test_channels_last_features_match_fp32(setup):
    fp32 = _features(setup, ExtractionLoader())
    cl = _features(setup, ExtractionLoader(channels_last=True))
    np.testing.assert_allclose(cl, fp32, rtol=1e-4, atol=1e-4)


def test_loader_settings_reach_the_dataloader():
    kw = ExtractionLoader(4, True, 3, "fork").dataloader_kwargs(torch.device("cpu"))
    assert kw == {
        "num_workers": 4,
        "pin_memory": False,  # pinning is for CUDA copies only
        "prefetch_factor": 3,
        "multiprocessing_context": "fork",
    }
    assert "prefetch_factor" not in ExtractionLoader().dataloader_kwargs(
        torch.device("cpu")
    )


def test_worker_extraction_equals_in_process(setup):
    two = _features(
        setup, ExtractionLoader(num_workers=2, multiprocessing_method="fork")
    )
    np.testing.assert_array_equal(two, _features(setup, ExtractionLoader()))
