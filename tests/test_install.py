"""An installed copy runs without the repository around it: ``pip install --no-deps .``
(not editable) into a fresh virtual environment that reuses the stack already installed
beside the running interpreter, then, from a folder outside the checkout, the console
scripts' ``--help`` and the smallest pipeline run (whose stages start as ``python -m
vissl_clusterfit.launch``)."""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import ROOT, data_overrides


# what a source distribution holds (setup.cfg packages vissl_clusterfit and hydra_plugins)
SOURCES = (
    "setup.cfg",
    "pyproject.toml",
    "README.md",
    "vissl_clusterfit",
    "hydra_plugins",
)


def _venv_reusing_the_stack(venv: str) -> str:
    """A venv without pip whose site-packages lists the stack's site-packages in a .pth
    file. A path line in a .pth file is added to sys.path, but the .pth files inside it
    are not run, so the stack's editable vissl_clusterfit (a .pth file pointing at a
    checkout) stays out: only the copy installed here can be imported."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stack = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    with open(os.path.join(purelib, "_vcf_stack.pth"), "w") as f:
        f.write("".join(p + "\n" for p in sorted(stack)))
    return python


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


@pytest.mark.slow
def test_installed_copy_runs_its_entry_points_and_pipeline(idx_dir, tmp_path):
    source = tmp_path / "source"  # a copy: building in place would write build/ here
    source.mkdir()
    for name in SOURCES:
        src, dst = os.path.join(ROOT, name), source / name
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy(src, dst)
    python = _venv_reusing_the_stack(str(tmp_path / "venv"))
    bin_dir = os.path.dirname(python)
    # --ignore-installed: the stack's own (editable) vissl_clusterfit is on sys.path as
    # a distribution; pip must neither uninstall it nor take it as already installed
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--ignore-installed", "--disable-pip-version-check", str(source)],
        check=True,
        env=_env(),
        cwd=str(tmp_path),
    )
    shutil.rmtree(source)  # nothing may read the copy it was built from
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_env(), cwd=str(away), timeout=900
        )
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    where = run(
        python, "-c", "import vissl_clusterfit; print(vissl_clusterfit.__file__)"
    )
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout
    helps = {
        "vissl-clusterfit": "config=<name>",
        "vissl-clusterfit-knn": "nearest_neighbor",
        "vissl-clusterfit-pipeline": "pipeline.num_clusters",
        "vissl-clusterfit-control": "control.preset",
    }
    for script, expected in helps.items():
        out = run(os.path.join(bin_dir, script), "--help").stdout
        assert out.startswith(f"usage: {script}") and expected in out, out
    out = str(away / "pipe")
    proc = run(
        os.path.join(bin_dir, "vissl-clusterfit-pipeline"),
        f"pipeline.output_dir={out}",
        "pipeline.data_limit=96",
        "pipeline.epochs=1",
        "pipeline.num_clusters=6",
        "pipeline.eval_train_limit=96",
        "pipeline.eval_test_limit=64",
        "pipeline.eval_epochs=1",
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
        *data_overrides(idx_dir, train_labels=False),
    )
    assert "| N_cf rotnet K=6 |" in proc.stdout, proc.stdout
    stage_log = open(os.path.join(out, "npre_rotnet", "stdout.log")).readline()
    assert f"{python} -m vissl_clusterfit.launch" in stage_log, stage_log
