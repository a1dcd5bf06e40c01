"""N_pre from foreign checkpoints: torchvision, timm, MoCo v2/v3, DINO, SwAV /
DeepClusterV2, VISSL's model zoo; .pth and .safetensors; partial loads refused.

Every checkpoint here is synthetic: one torchvision ResNet-50 with random weights (and
random BatchNorm statistics, so that a wrongly loaded BN shows), saved in each
project's key layout (read from their public training scripts). The reference is
torchvision's own forward: res5 average-pooled = the input of its ``fc``.
"""

import argparse
import os
from typing import Any, Callable, Dict

import pytest
import torch
import torchvision

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.cluster_step import extraction_trunks
from vissl_clusterfit.cluster_step.checkpoint_files import read_checkpoint_file
from vissl_clusterfit.cluster_step.checkpoint_formats import load_trunk_weights
from vissl_clusterfit.cluster_step.npre import build_npre_trunk, npre_model_config
from vissl_clusterfit.cluster_step.weights_init import WeightsInit


NPRE_CONFIG = "vissl_clusterfit/npre/resnet50"
# same operations in the same order; only the summation order of the pooling may differ
ATOL, RTOL = 1e-5, 1e-4


def _random_resnet(arch: Callable[..., torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = arch(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def tv_resnet50() -> torch.nn.Module:
    return _random_resnet(torchvision.models.resnet50)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(tv_resnet50, images) -> torch.Tensor:
    body = torch.nn.Sequential(*list(tv_resnet50.children())[:-1])  # all but fc
    with torch.no_grad():
        return body(images).flatten(1)


@pytest.fixture(scope="module")
def trunk() -> torch.nn.Module:
    """One N_pre trunk from NPRE_CONFIG, reloaded by each test (composing the config
    and building a ResNet-50 per layout would take most of this file's time)."""
    return build_npre_trunk_from_config()


def build_npre_trunk_from_config() -> torch.nn.Module:
    from vissl.models.trunks import get_model_trunk

    model_cfg = npre_model_config("", NPRE_CONFIG, [])
    return get_model_trunk(model_cfg.TRUNK.NAME)(model_cfg, model_cfg.TRUNK.NAME)


def features(trunk: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return extraction_trunks.pool_features(trunk.eval()(images, ["res5"])[0], "avg")


def npre_features(
    trunk: torch.nn.Module, path: str, images: torch.Tensor, **init: Any
) -> torch.Tensor:
    """Features after loading ``path`` into ``trunk``, whose tensors are zeroed first
    so that nothing of an earlier load survives."""
    with torch.no_grad():
        for v in trunk.state_dict().values():
            v.zero_()
    load_trunk_weights(trunk, path, WeightsInit(**init))
    return features(trunk, images)


def test_plain_torchvision_state_dict_end_to_end(
    tv_resnet50, images, reference, tmp_path
):
    """Through build_npre_trunk, as the cluster step calls it."""
    path = str(tmp_path / "resnet50.pth")
    torch.save(tv_resnet50.state_dict(), path)
    trunk = build_npre_trunk(path, NPRE_CONFIG)
    torch.testing.assert_close(features(trunk, images), reference, atol=ATOL, rtol=RTOL)


def _prefixed(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def _other(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A second copy of the network with other values (key / momentum encoder...)."""
    return {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}


def _body(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


# each project's layout (their training scripts' save calls); sd = torchvision keys
LAYOUTS: Dict[str, Callable[[Dict[str, torch.Tensor]], Any]] = {
    "torchvision": lambda sd: sd,
    "state_dict+module.": lambda sd: {"state_dict": _prefixed(sd, "module.")},
    "model+backbone.": lambda sd: {"model": _prefixed(sd, "backbone.")},
    # timm train.py: state_dict and state_dict_ema of the same model
    "timm": lambda sd: {
        "epoch": 3,
        "arch": "resnet50",
        "state_dict": sd,
        "state_dict_ema": _other(sd),
    },
    # moco main_moco.py: DDP(MoCo) with encoder_q / encoder_k, queue, an MLP fc
    "moco_v2": lambda sd: {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": {
            **_prefixed(_body(sd), "module.encoder_q."),
            **_prefixed(_other(_body(sd)), "module.encoder_k."),
            "module.encoder_q.fc.0.weight": torch.zeros(2048, 2048),
            "module.encoder_q.fc.2.weight": torch.zeros(128, 2048),
            "module.queue": torch.zeros(128, 16),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        },
    },
    # moco-v3 main_moco.py: base_encoder / momentum_encoder and a predictor
    "moco_v3": lambda sd: {
        "epoch": 100,
        "arch": "resnet50",
        "state_dict": {
            **_prefixed(_body(sd), "module.base_encoder."),
            **_prefixed(_other(_body(sd)), "module.momentum_encoder."),
            "module.base_encoder.fc.0.weight": torch.zeros(4096, 2048),
            "module.predictor.0.weight": torch.zeros(4096, 256),
        },
    },
    # dino main_dino.py: student and teacher, both DDP(MultiCropWrapper(backbone, head))
    # for a ResNet (BatchNorm), backbone.fc = Identity
    "dino": lambda sd: {
        "student": {
            **_prefixed(_other(_body(sd)), "module.backbone."),
            "module.head.mlp.0.weight": torch.zeros(2048, 2048),
        },
        "teacher": {
            **_prefixed(_body(sd), "module.backbone."),
            "module.head.mlp.0.weight": torch.zeros(2048, 2048),
        },
        "epoch": 100,
    },
    # swav / deepclusterv2 main_swav.py: DDP(ResNet) with projection_head + prototypes
    "swav": lambda sd: {
        "epoch": 800,
        "state_dict": {
            **_prefixed(_body(sd), "module."),
            "module.projection_head.0.weight": torch.zeros(2048, 2048),
            "module.prototypes.weight": torch.zeros(3000, 128),
        },
    },
    # VISSL model zoo / training: classy_state_dict, trunk under _feature_blocks.
    "vissl_model_zoo": lambda sd: {
        "classy_state_dict": {
            "base_model": {
                "model": {
                    "trunk": _prefixed(_body(sd), "_feature_blocks."),
                    "heads": {"0.clf.0.weight": torch.zeros(1000, 2048)},
                }
            }
        }
    },
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_gives_torchvisions_features(
    layout, trunk, tv_resnet50, images, reference, tmp_path
):
    path = str(tmp_path / "npre.pth")
    torch.save(LAYOUTS[layout](tv_resnet50.state_dict()), path)
    feats = npre_features(trunk, path, images)
    assert feats.shape == reference.shape == (2, 2048)
    torch.testing.assert_close(feats, reference, atol=ATOL, rtol=RTOL)


def test_safetensors_gives_the_same_features(
    trunk, tv_resnet50, images, reference, tmp_path
):
    from safetensors.torch import save_file

    path = str(tmp_path / "npre.safetensors")
    save_file({k: v.contiguous() for k, v in tv_resnet50.state_dict().items()}, path)
    torch.testing.assert_close(
        npre_features(trunk, path, images), reference, atol=ATOL, rtol=RTOL
    )


def test_explicit_weights_init_keys(trunk, tv_resnet50, images, reference, tmp_path):
    """VISSL's WEIGHTS_INIT keys pin the mapping; VISSL's whole-model APPEND_PREFIX
    form (trunk._feature_blocks.) is accepted; a secondary copy can be chosen."""
    path = str(tmp_path / "moco.pth")
    torch.save(LAYOUTS["moco_v2"](tv_resnet50.state_dict()), path)
    init = dict(
        STATE_DICT_KEY_NAME="state_dict",
        REMOVE_PREFIX="module.encoder_q.",
        APPEND_PREFIX="trunk._feature_blocks.",
    )
    pinned = npre_features(
        trunk, path, images, **_lower(WeightsInit.from_mapping(init, "k"))
    )
    torch.testing.assert_close(pinned, reference, atol=ATOL, rtol=RTOL)
    key_encoder = npre_features(
        trunk,
        path,
        images,
        state_dict_key_name="state_dict",
        remove_prefix="module.encoder_k.",
    )
    assert not torch.allclose(key_encoder, reference), "encoder_k has other weights"


def _lower(init: WeightsInit) -> Dict[str, Any]:
    return {
        "state_dict_key_name": init.state_dict_key_name,
        "remove_prefix": init.remove_prefix,
        "append_prefix": init.append_prefix,
    }


def test_resnet18_checkpoint_with_resnet50_config_names_the_shapes(tmp_path):
    path = str(tmp_path / "r18.pth")
    torch.save(_random_resnet(torchvision.models.resnet18).state_dict(), path)
    with pytest.raises(ValueError) as e:
        build_npre_trunk(path, NPRE_CONFIG)
    msg = str(e.value)
    assert "differ in shape" in msg, msg
    # layer1.0.conv1 is 3x3 in a BasicBlock, 1x1 in a Bottleneck
    assert "checkpoint [64, 64, 3, 3] vs model [64, 64, 1, 1]" in msg, msg
    assert "missing" in msg and "NPRE_CONFIG" in msg, msg


def test_missing_tensor_is_never_silent(trunk, tv_resnet50, tmp_path):
    state = dict(tv_resnet50.state_dict())
    del state["layer4.2.bn3.running_var"]
    path = str(tmp_path / "partial.pth")
    torch.save(state, path)
    missing = (
        r"1 trunk tensors are missing: _feature_blocks\.layer4\.2\.bn3\.running_var"
    )
    with pytest.raises(ValueError, match=missing):
        load_trunk_weights(trunk, path)
    # on purpose: SKIP_LAYERS keeps that layer as it is (here: zeroed)
    npre_features(trunk, path, torch.zeros(1, 3, 32, 32), skip_layers=("layer4.2.bn3",))
    got = trunk.state_dict()["_feature_blocks.layer4.2.bn3.running_var"]
    assert torch.equal(got, torch.zeros_like(got))
    assert torch.equal(
        trunk.state_dict()["_feature_blocks.layer4.2.bn2.running_var"],
        state["layer4.2.bn2.running_var"],
    )


def test_unknown_tensor_inside_the_prefix_is_refused(trunk, tv_resnet50, tmp_path):
    state = dict(tv_resnet50.state_dict(), **{"layer5.0.conv1.weight": torch.zeros(1)})
    path = str(tmp_path / "extra.pth")
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"1 tensors are not in the trunk: _feature_blocks\.layer5"
    ):
        load_trunk_weights(trunk, path)


def test_no_matching_names_says_what_the_file_holds(trunk, tmp_path):
    path = str(tmp_path / "vit.pth")
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(ValueError, match=r"no tensor named like.*blocks\.0\.attn"):
        load_trunk_weights(trunk, path)


def test_weights_only_by_default_with_the_opt_out(
    trunk, tv_resnet50, images, reference, tmp_path
):
    """A training checkpoint holding an argparse Namespace (timm, DINO): refused by
    torch.load(weights_only=True) with the key to set; loads once the user opts out."""
    path = str(tmp_path / "with_args.pth")
    torch.save(
        {
            "args": argparse.Namespace(arch="resnet50"),
            "state_dict": tv_resnet50.state_dict(),
        },
        path,
    )
    with pytest.raises(ValueError, match="NPRE_WEIGHTS_INIT.WEIGHTS_ONLY=false"):
        read_checkpoint_file(path, key="config.VCF.CLUSTERFIT.NPRE_WEIGHTS_INIT")
    feats = npre_features(trunk, path, images, weights_only=False)
    torch.testing.assert_close(feats, reference, atol=ATOL, rtol=RTOL)


def test_unknown_weights_init_key_is_refused():
    with pytest.raises(ValueError, match="unknown keys.*REMOVE_PREFX"):
        WeightsInit.from_mapping({"REMOVE_PREFX": "module."}, "NPRE_WEIGHTS_INIT")


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"{os.path.basename(path)} is corrupt"):
        read_checkpoint_file(str(path))


def test_vissl_training_checkpoint_with_numpy_state_loads_weights_only(
    trunk, tv_resnet50, images, reference, tmp_path
):
    """VISSL's training checkpoints hold numpy arrays in hook states (DeepCluster's
    targets): numpy arrays are allowed under weights_only=True, other objects are not.
    """
    import numpy as np

    checkpoint = LAYOUTS["vissl_model_zoo"](tv_resnet50.state_dict())
    checkpoint["classy_state_dict"]["hooks"] = {
        "DeepClusterHook": {"labels": np.arange(5), "round": np.int64(2)}
    }
    path = str(tmp_path / "model_final_checkpoint_phase2.torch")
    torch.save(checkpoint, path)
    feats = npre_features(trunk, path, images)
    torch.testing.assert_close(feats, reference, atol=ATOL, rtol=RTOL)
