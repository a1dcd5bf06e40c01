"""Kill a real VISSL run at every stage, re-run the same command: it completes, and its
labels and final weights are those of the uninterrupted run (bit-identical on CPU).

Each kill is a SIGKILL of the run's process group (nothing can clean up). The run is
stopped exactly at its stage by tests/fault_injection/sitecustomize.py (on PYTHONPATH
for the killed run only): it signals readiness with a file and waits to be killed.
Also here: a run that reuses another run's label files, and a run resumed from an
epoch checkpoint, both bit-identical to the run that made them.

    .venv/bin/python -m pytest -q tests/test_fault_injection.py
"""

import contextlib
import glob
import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.cluster_step.test_step import save_untrained_npre
from tests.conftest import ROOT, data_overrides, run_tool
from tests.test_e2e import final_ckpt
from vissl_clusterfit.data.cluster_labels import file_sha256, label_paths, read_meta


FAULT_DIR = os.path.join(ROOT, "tests", "fault_injection")
NAME = "clusterfit_rotnet"
# 96 images in batches of 16, and one more call of the train step that ends the epoch
# (StopIteration): the 8th call is the first step of the second epoch
CALLS_PER_EPOCH = 96 // 16 + 1


@pytest.fixture(scope="module")
def npre(tmp_path_factory):
    return save_untrained_npre(str(tmp_path_factory.mktemp("npre")))


def ncf_args(idx_dir, npre, out, *extra):
    """N_cf with the hook making the labels: 2 epochs, a checkpoint after each."""
    return [
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu",
        f"config.CHECKPOINT.DIR={out}",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=8",
        "config.VCF.CLUSTERFIT.BATCHSIZE=32",
        "config.DATA.TRAIN.DATA_LIMIT=96",
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
        "config.OPTIMIZER.num_epochs=2",
        "config.LOG_FREQUENCY=1000",
        *data_overrides(idx_dir, train_labels=False),
        *extra,
    ]


def output(proc) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def reference(idx_dir, npre, tmp_path_factory):
    """The uninterrupted run."""
    out = str(tmp_path_factory.mktemp("reference"))
    run_tool(ncf_args(idx_dir, npre, out))
    return out


def labels_dir(out: str) -> str:
    return os.path.join(out, "clusterfit")


def model_state(out: str):
    checkpoint = torch.load(final_ckpt(out), map_location="cpu", weights_only=False)
    state = checkpoint["classy_state_dict"]
    model = state["base_model"]["model"]
    tensors = {f"trunk.{k}": v for k, v in model["trunk"].items()}
    tensors.update({f"heads.{k}": v for k, v in model["heads"].items()})
    for i, param_state in state["optimizer"]["optim"]["state"].items():
        for k, v in param_state.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{i}.{k}"] = v
    return tensors


def assert_same_labels(out: str, reference: str) -> None:
    """Same labels, in a label set that checks out; nothing half-written left."""
    paths = label_paths(labels_dir(out), NAME)
    meta = read_meta(labels_dir(out), NAME)
    assert meta is not None and meta["labels_sha256"] == file_sha256(paths["labels"])
    np.testing.assert_array_equal(
        np.load(paths["labels"]),
        np.load(label_paths(labels_dir(reference), NAME)["labels"]),
    )
    # os.listdir, not glob: the temporary files are hidden (vissl_clusterfit.io)
    assert not [n for n in os.listdir(labels_dir(out)) if n.endswith(".tmp")]


def assert_same_weights(out: str, reference: str) -> None:
    """Bit-identical final weights, BN statistics and optimizer state."""
    ours, theirs = model_state(out), model_state(reference)
    assert sorted(ours) == sorted(theirs)
    differ = {
        k: float((ours[k].double() - theirs[k].double()).abs().max())
        for k in ours
        if not torch.equal(ours[k], theirs[k])
    }
    assert (
        not differ
    ), f"{len(differ)} of {len(ours)} tensors differ (max |diff|): {differ}"


@pytest.mark.slow
def test_reusing_label_files_trains_bit_identically(idx_dir, npre, reference, tmp_path):
    out = str(tmp_path / "reuse")
    proc = run_tool(
        ncf_args(
            idx_dir,
            npre,
            out,
            f"config.VCF.CLUSTERFIT.OUTPUT_DIR={labels_dir(reference)}",
        )
    )
    assert "[vcf] reusing cluster labels" in output(proc), output(proc)[-3000:]
    assert "[vcf] wrote cluster label files" not in output(proc)
    assert_same_weights(out, reference)


def run_until_killed(args, folder, stage: str, at: int) -> str:
    """Start the run in its own process group, wait until it stops at ``stage``, and
    SIGKILL the group. Returns the killed run's log."""
    ready = os.path.join(folder, f"ready_{stage}_{at}")
    log_path = os.path.join(folder, f"killed_{stage}_{at}.log")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        PYTHONPATH=os.pathsep.join(
            filter(None, [FAULT_DIR, os.environ.get("PYTHONPATH")])
        ),
        VCF_FAULT_STAGE=stage,
        VCF_FAULT_AT=str(at),
        VCF_FAULT_READY=ready,
    )
    tool = os.path.join(ROOT, "tools", "run_distributed_engines.py")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, tool, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 300
            while not os.path.exists(ready) and proc.poll() is None:
                assert time.time() < deadline, f"{stage} not reached in 300 s"
                time.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = open(log_path).read()
    assert os.path.exists(ready), (
        f"the run ended ({proc.returncode}) before reaching {stage}:\n" + text[-3000:]
    )
    assert proc.returncode == -signal.SIGKILL
    return text


def _no_meta(out):
    return read_meta(labels_dir(out), NAME) is None


def _half_written_labels(out):
    files = os.listdir(labels_dir(out))
    return (
        _no_meta(out)
        and f"{NAME}_labels.npy" in files
        # the half-written centroids: vissl_clusterfit.io's temporary file (hidden,
        # named after the final file and its writer)
        and any(f.startswith(f".{NAME}_centroids.npy.vcf-") for f in files)
    )


def _labels_but_no_checkpoint(out):
    return not _no_meta(out) and not glob.glob(os.path.join(out, "*.torch"))


def _epoch_checkpoint(out):
    return os.path.exists(os.path.join(out, "model_phase0.torch")) and not glob.glob(
        os.path.join(out, "model_final*")
    )


def _checkpoint_being_written(out):
    return not _no_meta(out) and not glob.glob(os.path.join(out, "model_final*"))


# stage, arrival, what the kill leaves, what the re-run must log
KILLS = {
    "extraction": ("extraction", 1, _no_meta, "[vcf] wrote cluster label files"),
    "kmeans": ("kmeans", 1, _no_meta, "[vcf] wrote cluster label files"),
    "label_write": (
        "label_write",
        1,
        _half_written_labels,
        "[vcf] wrote cluster label files",
    ),
    "first_iteration": (
        "iteration",
        1,
        _labels_but_no_checkpoint,
        "[vcf] reusing cluster labels",
    ),
    "second_epoch": (
        "iteration",
        CALLS_PER_EPOCH + 1,
        _epoch_checkpoint,
        "[vcf] random generator states restored from the checkpoint",
    ),
    "checkpoint_write": (
        "checkpoint_write",
        1,
        _checkpoint_being_written,
        "[vcf] reusing cluster labels",
    ),
}


# VISSL 0.1.6 writes checkpoints in place: a kill mid-write leaves a truncated
# model_phase0.torch and every resume fails on it (PytorchStreamReader failed reading
# zip archive). vissl_clusterfit.compat.crash_safe_checkpoints (applied by compat.py) makes the
# writes atomic and the resume skip files that do not load; without it this kill is an
# expected failure (strict: it must fail).
ATOMIC_CHECKPOINTS = (
    importlib.util.find_spec("vissl_clusterfit.compat.crash_safe_checkpoints")
    is not None
)
MARKS = {
    "checkpoint_write": pytest.mark.xfail(
        not ATOMIC_CHECKPOINTS,
        strict=True,
        raises=AssertionError,
        reason="VISSL's in-place checkpoint writes (no crash_safe_checkpoints)",
    )
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill", [pytest.param(k, marks=MARKS.get(k, ())) for k in KILLS]
)
def test_killed_run_reruns_to_the_uninterrupted_result(
    idx_dir, npre, reference, tmp_path, kill
):
    stage, at, left, rerun_says = KILLS[kill]
    out = str(tmp_path / "run")
    args = ncf_args(idx_dir, npre, out)
    killed_log = run_until_killed(args, str(tmp_path), stage, at)
    assert left(out), f"unexpected state after the kill: {sorted(os.listdir(out))}"
    proc = run_tool(args)  # the same command, as a user would
    assert rerun_says in output(proc), output(proc)[-3000:] + killed_log[-1000:]
    assert_same_labels(out, reference)
    assert_same_weights(out, reference)
