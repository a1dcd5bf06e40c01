"""``vcf_sobel_resnet``: VISSL's ResNet-50 behind the fixed Sobel layer."""

import pytest
import torch
from vissl.models.trunks import get_model_trunk

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.config import compose_config


@pytest.fixture(scope="module")
def trunks(tmp_path_factory):
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/deepcluster/deepcluster_resnet50_in1k_gpu",
            f"config.CHECKPOINT.DIR={tmp_path_factory.mktemp('sobel')}",
        ],
        dump_config=False,
    )
    torch.manual_seed(0)
    sobel = get_model_trunk("vcf_sobel_resnet")(cfg.MODEL, "vcf_sobel_resnet")
    plain = get_model_trunk("resnet")(cfg.MODEL, "resnet")
    return sobel.eval(), plain.eval()


def test_vissl_resnet_plus_sobel_buffers(trunks):
    sobel, plain = trunks
    keys, vissl_keys = set(sobel.state_dict()), set(plain.state_dict())
    assert keys - vissl_keys == {
        "_feature_blocks.sobel.gray",
        "_feature_blocks.sobel.sobel",
    }, (
        keys - vissl_keys
    )
    assert keys >= vissl_keys
    assert sobel.state_dict()["_feature_blocks.conv1.weight"].shape == (64, 2, 7, 7)
    assert sobel.feat_eval_mapping == plain.feat_eval_mapping


def test_colour_blind_and_vissl_feature_names(trunks):
    sobel, _ = trunks
    x = torch.rand(2, 3, 64, 64)
    swapped = x[:, [2, 0, 1]]  # same grayscale, other colours
    with torch.no_grad():
        a = sobel(x, out_feat_keys=["res5", "flatten"])
        b = sobel(swapped, out_feat_keys=["res5", "flatten"])
    assert a[0].shape == (2, 2048, 2, 2) and a[1].shape == (2, 2048)
    torch.testing.assert_close(a[1], b[1])
    with torch.no_grad():
        other = sobel(torch.rand(2, 3, 64, 64), [])[0]  # VISSL: [] = last feature
    assert not torch.allclose(other, a[1])


def test_refuses_non_rgb_input(tmp_path):
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/deepcluster/deepcluster_resnet50_in1k_gpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            "config.MODEL.INPUT_TYPE=bgr",
        ],
        dump_config=False,
    )
    with pytest.raises(ValueError, match="INPUT_TYPE=rgb"):
        get_model_trunk("vcf_sobel_resnet")(cfg.MODEL, "vcf_sobel_resnet")
