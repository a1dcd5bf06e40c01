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
from vissl_clusterfit.compat import patches as compat, run_lifecycle as compat_run


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


def test_broadcast_object_is_patched_and_round_trips(gloo_group, monkeypatch):
    import classy_vision.generic.distributed_util as du

    assert du.broadcast_object is compat.fast_broadcast_object
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
    out = compat.fast_broadcast_object(None, src=0)
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

    assert du.broadcast_object is compat.fast_broadcast_object
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


@pytest.fixture
def vissl_logging():
    """VISSL's setup_logging makes its own logger ``logging.root``, writing to the
    sys.stdout of the moment (pytest's capture here): restore the real root after."""
    import logging

    saved = logging.root
    yield
    logging.root = saved


def run_failing_launch(cfg):
    import vissl.utils.distributed_launcher as dl

    with pytest.raises(RuntimeError, match="boom in the engine"):
        dl.launch_distributed(
            cfg, node_id=0, engine_name="train", hook_generator=lambda c: []
        )


def test_launcher_reports_a_run_error_without_logging_errors(
    tmp_path, capsys, monkeypatch, vissl_logging
):
    """launch_distributed logs a RuntimeError of the run with
    ``logging.error("Wrapping up, caught exception: ", e)``."""
    import logging

    import vissl.utils.distributed_launcher as dl

    from vissl_clusterfit.config import compose_config

    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
        ],
        dump_config=False,
    )

    def engine(*args, **kwargs):
        raise RuntimeError("boom in the engine")

    monkeypatch.setattr(dl, "run_engine", engine)
    assert isinstance(dl.logging, compat_run._LauncherLogging)
    run_failing_launch(cfg)
    out, err = capsys.readouterr()
    assert "--- Logging error ---" not in err, err
    line = [x for x in out.splitlines() if "Wrapping up" in x]
    assert line and "distributed_launcher.py" in line[0], out[-2000:]
    assert line[0].endswith("Wrapping up, caught exception: boom in the engine")
    # upstream: each handler prints a formatting traceback around the real error
    monkeypatch.setattr(dl, "logging", logging)
    run_failing_launch(cfg)
    assert "--- Logging error ---" in capsys.readouterr().err


def test_apex_syncbn_without_apex_falls_back_to_pytorch_syncbn(caplog, monkeypatch):
    from vissl.trainer import train_task as tt
    from vissl.trainer.trainer_main import build_task
    from vissl.utils.misc import is_apex_available

    from vissl_clusterfit.config import compose_config

    assert not is_apex_available(), "this test is about machines without apex"
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_gpu",
            "config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN=true",
            "config.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE=apex",
            "config.MODEL.SYNC_BN_CONFIG.GROUP_SIZE=0",
        ],
        dump_config=False,
    )
    task = build_task(cfg)
    with caplog.at_level("WARNING"):
        model = task._build_model()  # the trainer's model building (no GPU needed)
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.SyncBatchNorm in kinds, kinds
    assert torch.nn.BatchNorm2d not in kinds, kinds
    assert "apex is not installed: using PyTorch's SyncBatchNorm" in caplog.text
    assert cfg.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE == "apex"  # the user's config kept
    # upstream: the model cannot be built at all
    monkeypatch.setattr(tt, "convert_sync_bn", tt.convert_sync_bn.__wrapped__)
    with pytest.raises(NameError, match="apex"):
        task._build_model()


# Python keeps the GIL in the main thread (huge switch interval) and releases it only in
# a __del__ that runs while the interpreter finalizes: a gloo worker thread that frees
# the tensors of a collective then has to exit inside a C++ destructor.
GLOO_EXIT_RACE = """
import socket, sys, time
import torch, torch.distributed as dist
sys.setswitchinterval(1000.0)
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
sock.close()
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                        world_size=1)

class SleepWhileFinalizing:
    def __del__(self):
        time.sleep(0.5)

keeper = SleepWhileFinalizing()
for _ in range(2):
    dist.broadcast(torch.ones(10), 0, async_op=True)
if sys.argv[1] == "shutdown":
    from vissl_clusterfit.compat.patches import shutdown_process_group
    shutdown_process_group()
"""


def run_exit_race(tmp_path, mode):
    script = tmp_path / "gloo_exit_race.py"
    script.write_text(GLOO_EXIT_RACE)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_shutdown_process_group_prevents_abort_at_exit(tmp_path):
    """The vcf_cluster engine's exit code 134 ("terminate called without an active
    exception" after "All Done!"), made deterministic enough to test."""
    for _ in range(5):  # upstream: aborts in most runs
        proc = run_exit_race(tmp_path, "none")
        if proc.returncode != 0:
            break
    assert proc.returncode == -6, (proc.returncode, proc.stderr[-2000:])
    assert "terminate called without an active exception" in proc.stderr
    for _ in range(3):
        proc = run_exit_race(tmp_path, "shutdown")
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])


def test_shutdown_process_group_without_a_group_is_a_no_op():
    assert not dist.is_initialized()
    compat.shutdown_process_group()
