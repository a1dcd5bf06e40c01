"""Each compat patch: the upstream code path works with it, and the upstream problem it
fixes is shown to exist (so the test fails if the patch stops being applied)."""

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

import vissl_clusterfit  # noqa: F401  applies the patches
from vissl_clusterfit import compat


def test_numpy_aliases_restore_vissl_svm_utils():
    from vissl.utils.svm_utils.evaluate import get_precision_recall

    targets, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    saved = np.__dict__.pop("float")
    try:
        with pytest.raises(AttributeError):
            get_precision_recall(targets, scores)  # upstream breaks on numpy >= 1.24
    finally:
        np.float = saved
    precision, recall, _, ap = get_precision_recall(targets, scores)
    assert np.float is float
    assert 0.0 < ap <= 1.0, ap


@pytest.fixture
def gloo_group(tmp_path):
    if dist.is_initialized():
        yield
        return
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_broadcast_object_is_patched_and_round_trips(gloo_group, monkeypatch):
    import classy_vision.generic.distributed_util as du

    assert du.broadcast_object is compat._fast_broadcast_object
    # upstream builds torch.ByteTensor(memoryview), byte by byte: the patch must not
    monkeypatch.setattr(
        torch,
        "ByteTensor",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("slow path")),
    )
    obj = {"w": torch.randn(64, 32), "step": 3, "name": "x"}
    out = du.broadcast_object(obj)
    assert out["step"] == 3 and out["name"] == "x"
    torch.testing.assert_close(out["w"], obj["w"])


def test_fast_broadcast_receiver_side_deserialises(monkeypatch):
    """The receiving rank's path (rank != src) with a stubbed broadcast."""
    import classy_vision.generic.distributed_util as du

    payload = io.BytesIO()
    torch.save({"a": torch.arange(5)}, payload)
    data = torch.frombuffer(bytearray(payload.getvalue()), dtype=torch.uint8)
    monkeypatch.setattr(du, "get_rank", lambda: 1)

    def fake_broadcast(t, src):
        return torch.tensor([len(data)]) if t.dtype == torch.long else data.clone()

    monkeypatch.setattr(du, "broadcast", fake_broadcast)
    out = compat._fast_broadcast_object(None, src=0)
    assert out["a"].tolist() == [0, 1, 2, 3, 4]


def test_cluster_assignment_files_load(tmp_path):
    from vissl.config import AttrDict
    from vissl.utils.cluster_utils import ClusterAssignment, ClusterAssignmentLoader

    assignment = ClusterAssignment(
        config=AttrDict({"K": 3}), cluster_assignments={"TRAIN": {0: 1}}
    )
    ClusterAssignmentLoader.save_cluster_assignment(str(tmp_path), assignment)
    path = os.path.join(tmp_path, "cluster_assignments.torch")
    with pytest.raises(Exception):
        torch.load(path)  # torch>=2.6 default weights_only=True refuses the AttrDict
    loaded = ClusterAssignmentLoader.load_cluster_assigment(path)
    assert loaded.config["K"] == 3 and loaded.cluster_assignments["TRAIN"][0] == 1


def test_compose_sets_hydra_version_base():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = compat.compose_hydra_configuration(
            ["config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu"]
        )
    assert cfg.config.MODEL.TRUNK.NAME == "vcf_resnet"
    assert not [w for w in caught if "version_base" in str(w.message)], [
        str(w.message) for w in caught
    ]
    from vissl.utils import hydra_config

    assert (
        hydra_config.compose_hydra_configuration is compat.compose_hydra_configuration
    )


def test_apply_all_is_idempotent():
    compat.apply_all()
    compat.apply_all()
    import classy_vision.generic.distributed_util as du
    from vissl.trainer.trainer_main import SelfSupervisionTrainer

    assert du.broadcast_object is compat._fast_broadcast_object
    assert (
        SelfSupervisionTrainer._extract_split_features
        is compat._extract_split_features_any_device
    )


def test_vissl_own_compose_finds_our_configs_without_importing_us():
    """VISSL's unmodified compose (as its tools/run_distributed_engines.py calls it)
    finds config=vissl_clusterfit/... through our hydra SearchPathPlugin."""
    code = (
        "import sys\n"
        "from vissl.utils.hydra_config import compose_hydra_configuration\n"
        "assert 'vissl_clusterfit' not in sys.modules\n"
        "cfg = compose_hydra_configuration(['config=vissl_clusterfit/clusterfit/ncf_fmnist_cpu'])\n"
        "print(cfg.config.MODEL.TRUNK.NAME, cfg.config.VCF.CLUSTERFIT.NUM_CLUSTERS)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["vcf_resnet", "100"], out.stdout
