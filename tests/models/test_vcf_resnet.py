import pytest
import torch
from vissl.config import AttrDict
from vissl.models.trunks import get_model_trunk

import vissl_clusterfit  # noqa: F401


def _trunk(depth=18, width=8, sobel=False):
    cfg = AttrDict(
        {
            "TRUNK": {
                "NAME": "vcf_resnet",
                "VCF_RESNET": {"DEPTH": depth, "WIDTH": width, "SOBEL": sobel},
            }
        }
    )
    return get_model_trunk("vcf_resnet")(cfg, "vcf_resnet").eval()


def test_feature_names_and_shapes_match_vissl_resnet():
    trunk = _trunk()
    names = ["conv1", "res1", "res2", "res3", "res4", "res5", "res5avg", "flatten"]
    assert list(trunk.feat_eval_mapping) == names
    outs = trunk(torch.randn(2, 3, 28, 28), out_feat_keys=names)
    shapes = [tuple(o.shape) for o in outs]
    assert shapes == [
        (2, 8, 28, 28),
        (2, 8, 28, 28),
        (2, 8, 28, 28),
        (2, 16, 14, 14),
        (2, 32, 7, 7),
        (2, 64, 4, 4),
        (2, 64, 1, 1),
        (2, 64),
    ], shapes
    assert tuple(trunk(torch.randn(2, 3, 28, 28))[0].shape) == (2, 64)


def test_depth_34_has_more_blocks_and_bad_depth_errors():
    assert len(_trunk(34)._feature_blocks["layer3"]) == 6
    with pytest.raises(ValueError, match="DEPTH=50"):
        _trunk(50)


def test_sobel_stem_is_fixed_and_ignores_colour():
    trunk = _trunk(sobel=True)
    sobel = trunk._feature_blocks["conv1"][0]
    assert not list(sobel.parameters())  # fixed weights: buffers only
    x = torch.rand(1, 3, 16, 16)
    gray = x.mean(1, keepdim=True).repeat(1, 3, 1, 1)
    torch.testing.assert_close(sobel(x), sobel(gray))
    # a constant image has no edges in the interior
    flat = sobel(torch.ones(1, 3, 8, 8))[..., 1:-1, 1:-1]
    assert flat.abs().max() < 1e-5
