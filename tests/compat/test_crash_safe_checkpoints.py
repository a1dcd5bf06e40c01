"""Crash-safe checkpoints (vissl_clusterfit/compat/crash_safe_checkpoints.py and the compat
patches ``atomic_checkpoints`` / ``loadable_resume``): VISSL's own writer and resume
lookup, with the upstream failure shown first."""

import glob
import io
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch
from vissl.config import AttrDict

import vissl_clusterfit  # noqa: F401  applies the patches
from tests.conftest import ROOT, data_overrides, run_tool
from vissl_clusterfit.compat import crash_safe_checkpoints as csc
from vissl_clusterfit.io import tmp_path_for


def ckpt_cfg(**overrides):
    checkpoint = dict(
        AUTO_RESUME=True,
        OVERWRITE_EXISTING=False,
        CHECKPOINT_ITER_FREQUENCY=-1,
        LATEST_CHECKPOINT_RESUME_FILE_NUM=1,
        USE_SYMLINK_CHECKPOINT_FOR_RESUME=False,
    )
    checkpoint.update(overrides)
    return AttrDict({"CHECKPOINT": checkpoint})


def write_good(path, value=0):
    torch.serialization.save(
        {"phase_idx": value, "w": torch.full((64, 64), float(value))}, path
    )


def write_truncated(path):
    buf = io.BytesIO()
    torch.serialization.save({"w": torch.randn(256, 256)}, buf)
    with open(path, "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 3])


def failing_save(real_save):
    """A torch.save that writes part of the archive, then fails (disk full, kill)."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:1000])
        raise OSError("simulated failure after writing 1000 bytes")

    return save


@pytest.fixture
def failing_torch_save(monkeypatch):
    monkeypatch.setattr(torch, "save", failing_save(torch.save))


def vissl_writer(folder, final=False):
    from vissl.utils.checkpoint import CheckpointWriter

    return CheckpointWriter(
        checkpoint_folder=str(folder),
        is_final_train_phase=final,
        mode="phase",
        mode_num=1,
        backend="disk",
    )


def test_upstream_writer_leaves_a_truncated_checkpoint_vissl_resumes_from(
    tmp_path, failing_torch_save
):
    from classy_vision.generic.util import save_checkpoint
    from vissl.utils.checkpoint import get_checkpoint_resume_files

    write_good(tmp_path / "model_phase0.torch")
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(str(tmp_path), {"w": torch.ones(3)}, "model_phase1.torch")
    assert (tmp_path / "model_phase1.torch").stat().st_size == 1000
    # VISSL's own lookup picks the partial file; loading it is the re-run's failure
    picked = get_checkpoint_resume_files(str(tmp_path), ckpt_cfg())
    assert picked == "model_phase1.torch"
    with pytest.raises(RuntimeError, match="zip archive"):
        torch.load(tmp_path / "model_phase1.torch", weights_only=False)


def test_vissl_checkpoint_writer_is_atomic(tmp_path, monkeypatch):
    import vissl.utils.checkpoint as vc

    assert vc.save_checkpoint is csc.atomic_save_checkpoint
    vissl_writer(tmp_path).save_consolidated_checkpoint({"w": torch.arange(4)})
    path = tmp_path / "model_phase1.torch"
    assert torch.load(path, weights_only=False)["w"].tolist() == [0, 1, 2, 3]
    assert os.path.realpath(tmp_path / "checkpoint.torch") == str(path)
    # a second write of the same name that fails midway keeps the first one whole
    monkeypatch.setattr(torch, "save", failing_save(torch.save))
    with pytest.raises(OSError, match="simulated"):
        vissl_writer(tmp_path).save_consolidated_checkpoint({"w": torch.zeros(4)})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["w"].tolist() == [0, 1, 2, 3]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.torch", "model_phase1.torch"]


def test_failed_first_write_leaves_no_file(tmp_path, failing_torch_save):
    with pytest.raises(OSError, match="simulated"):
        vissl_writer(tmp_path, final=True).save_consolidated_checkpoint({"w": 1})
    assert os.listdir(tmp_path) == []


def test_resume_lookup_skips_a_truncated_checkpoint_with_a_warning(tmp_path, caplog):
    import vissl.utils.distributed_launcher as dl
    from vissl.utils.checkpoint import get_checkpoint_resume_files

    write_good(tmp_path / "model_phase0.torch", 0)
    write_good(tmp_path / "model_phase1.torch", 1)
    write_truncated(tmp_path / "model_phase2.torch")
    cfg = ckpt_cfg()
    assert get_checkpoint_resume_files(str(tmp_path), cfg) == "model_phase2.torch"
    with caplog.at_level(logging.WARNING):
        picked = dl.get_resume_checkpoint(cfg, checkpoint_folder=str(tmp_path))
    assert picked == f"{tmp_path}/model_phase1.torch"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"Skipping checkpoint {tmp_path}/model_phase2.torch" in w for w in warnings
    ), warnings
    assert not dl.is_training_finished(cfg, checkpoint_folder=str(tmp_path))


def test_resume_starts_fresh_when_nothing_loads(tmp_path, caplog):
    import vissl.utils.distributed_launcher as dl

    write_truncated(tmp_path / "model_phase0.torch")
    (tmp_path / "model_phase1.torch").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert dl.get_resume_checkpoint(ckpt_cfg(), str(tmp_path)) is None
    assert "training starts from the beginning" in caplog.text


def test_truncated_final_checkpoint_is_not_finished_training(tmp_path, caplog):
    import vissl.utils.distributed_launcher as dl
    from vissl.utils.checkpoint import has_final_checkpoint

    write_good(tmp_path / "model_phase0.torch", 0)
    write_truncated(tmp_path / "model_final_checkpoint_phase1.torch")
    assert has_final_checkpoint(str(tmp_path))  # upstream: "Training already succeeded"
    cfg = ckpt_cfg()
    with caplog.at_level(logging.WARNING):
        assert not dl.is_training_finished(cfg, checkpoint_folder=str(tmp_path))
        picked = dl.get_resume_checkpoint(cfg, checkpoint_folder=str(tmp_path))
    assert picked == f"{tmp_path}/model_phase0.torch"
    assert "model_final_checkpoint_phase1.torch does not load" in caplog.text
    write_good(tmp_path / "model_final_checkpoint_phase1.torch", 1)
    assert dl.is_training_finished(cfg, checkpoint_folder=str(tmp_path))
    picked = dl.get_resume_checkpoint(cfg, checkpoint_folder=str(tmp_path))
    assert picked == f"{tmp_path}/model_final_checkpoint_phase1.torch"


def test_candidates_keep_vissl_order_and_options(tmp_path):
    for n in (0, 1, 2, 3):
        write_good(tmp_path / f"model_phase{n}.torch", n)
    for n in (10, 20):
        write_good(tmp_path / f"model_iteration{n}.torch", n)
    write_good(tmp_path / "model_final_checkpoint_phase4.torch", 4)
    write_good(tmp_path / "model_final_checkpoint_phase4_shard0.torch", 4)
    folder = str(tmp_path)
    assert csc.resume_candidates(folder, ckpt_cfg()) == [
        "model_final_checkpoint_phase4.torch",
        "model_phase3.torch",
        "model_phase2.torch",
        "model_phase1.torch",
        "model_phase0.torch",
    ]
    assert csc.resume_candidates(
        folder, ckpt_cfg(OVERWRITE_EXISTING=True, LATEST_CHECKPOINT_RESUME_FILE_NUM=2)
    ) == ["model_phase2.torch", "model_phase1.torch", "model_phase0.torch"]
    assert csc.resume_candidates(
        folder, ckpt_cfg(OVERWRITE_EXISTING=True, CHECKPOINT_ITER_FREQUENCY=10)
    ) == ["model_iteration20.torch", "model_iteration10.torch"]
    assert csc.loadable_resume_checkpoint(ckpt_cfg(AUTO_RESUME=False), folder) is None


def test_stale_tmp_files_of_killed_writes_are_removed(tmp_path):
    import vissl.utils.distributed_launcher as dl

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = tmp_path_for(str(tmp_path / "model_phase1.torch"))
    assert ours.endswith(f"-{os.getpid()}.tmp"), ours
    stale = tmp_path / os.path.basename(ours).replace(
        f"-{os.getpid()}.tmp", f"-{dead.pid}.tmp"
    )
    live = tmp_path / os.path.basename(ours).replace("phase1", "phase2")
    other_host = tmp_path / os.path.basename(ours).replace(".vcf-", ".vcf-x")
    foreign = tmp_path / "model_phase1.torch.tmp"  # not ours: never touched
    for p in (stale, live, other_host, foreign):
        p.write_bytes(b"partial")
    write_good(tmp_path / "model_phase0.torch")
    dl.is_training_finished(ckpt_cfg(), checkpoint_folder=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [live.name, foreign.name, "model_phase0.torch"]
    )


def test_symlink_to_a_checkpoint_that_does_not_load_is_dropped(tmp_path, caplog):
    import vissl.utils.distributed_launcher as dl

    write_good(tmp_path / "model_phase0.torch")
    write_truncated(tmp_path / "model_phase1.torch")
    os.symlink(tmp_path / "model_phase1.torch", tmp_path / "checkpoint.torch")
    cfg = ckpt_cfg(USE_SYMLINK_CHECKPOINT_FOR_RESUME=True)
    with caplog.at_level(logging.WARNING):
        dl.is_training_finished(cfg, checkpoint_folder=str(tmp_path))
    assert not os.path.lexists(tmp_path / "checkpoint.torch")
    assert "checkpoint.torch" in caplog.text
    assert dl.get_resume_checkpoint(cfg, str(tmp_path)).endswith("model_phase0.torch")


# A VISSL run killed (SIGKILL) while it writes a checkpoint, then run again.
KILL_DRIVER = """
import io, os, signal, sys
import torch
import vissl_clusterfit
from vissl_clusterfit.launch.launcher import hydra_main

mode, target = os.environ["VCF_KILL_MODE"], os.environ["VCF_KILL_AT"]
if mode == "upstream":  # VISSL's in-place writer, as without our patch
    import vissl.utils.checkpoint as vc
    from classy_vision.generic.util import save_checkpoint
    vc.save_checkpoint = save_checkpoint
real_save = torch.save

def save_then_die(obj, f, *args, **kwargs):
    if target in os.path.basename(str(getattr(f, "name", f))):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save_then_die
hydra_main(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,kill_at,expect",
    [
        ("atomic", "model_phase1.torch", "Removed"),
        ("upstream", "model_phase1.torch", "Skipping checkpoint"),
        ("upstream", "model_final_checkpoint_phase2.torch", "does not load"),
    ],
)
def test_training_killed_while_writing_a_checkpoint_resumes(
    idx_dir, tmp_path, mode, kill_at, expect
):
    out = str(tmp_path / "run")
    args = [
        "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
        f"config.CHECKPOINT.DIR={out}",
        "config.DATA.TRAIN.DATA_LIMIT=32",
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
        "config.OPTIMIZER.num_epochs=3",
        "config.LOG_FREQUENCY=1000",
        *data_overrides(idx_dir),
    ]
    driver = tmp_path / "kill_driver.py"
    driver.write_text(KILL_DRIVER)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        VCF_KILL_MODE=mode,
        VCF_KILL_AT=kill_at,
    )
    killed = subprocess.run(
        [sys.executable, str(driver), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = sorted(os.listdir(out))
    if mode == "atomic":
        assert kill_at not in left and any(".vcf-" in n for n in left), left
    else:
        assert os.path.getsize(os.path.join(out, kill_at)) > 0, left
    proc = run_tool(args)  # the user's re-run, unchanged
    log = proc.stdout + proc.stderr
    assert expect in log, log[-3000:]
    assert "Resume from file" in log, log[-3000:]
    final = glob.glob(os.path.join(out, "model_final_checkpoint_phase2.torch"))
    assert final and csc.checkpoint_load_error(final[0]) is None
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
