"""Phase start-up by DataLoader start method: how long each VISSL phase waits for its
first batch with 2 workers started by forkserver (VISSL's configs), spawn and fork.

A forkserver or spawn worker imports torch, VISSL and the plugin again in every phase
(VISSL re-creates the data iterator per phase); a forked worker inherits them. On one
H200 this was 29-67 s per phase with forkserver and 0.3 s with fork (issue 21); the
CPU configs use no workers, so no test sees it. This measures it on a CPU, through
VISSL's real trainer: RotNet N_pre on Fashion-MNIST (``--images`` images,
``--epochs`` epochs = phases), the per-phase times from
the run's ``PhaseTimerHook`` lines (advance + first batch). Each repeat runs every
method once, in a rotated order. Training phases only: test phases start their
workers the same way.

    .venv/bin/python -m benchmarks.phase_startup              # ~6 min on 2 cores
    .venv/bin/python -m benchmarks.phase_startup --repeats 1 --methods fork

Writes results/phase_startup.{json,md}.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from benchmarks.common import ROOT, machine_info, write_results
from benchmarks.plugin import PHASE_LINE, parse_lines
from benchmarks.report import mean_std, paired_difference


def launch_logged(overrides: List[str]) -> Tuple[float, str]:
    """One ``python -m vissl_clusterfit.launch`` run (one thread per process, so that
    the workers, not the model, hold the cores) in a temporary CHECKPOINT.DIR: its
    wall time and its log.txt."""
    with tempfile.TemporaryDirectory(prefix="vcf_phase_startup_") as out:
        cmd = [sys.executable, "-m", "vissl_clusterfit.launch"] + overrides
        cmd.append(f"config.CHECKPOINT.DIR={out}")
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.time() - t0
        log = os.path.join(out, "log.txt")
        text = open(log).read() if os.path.isfile(log) else ""
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"{' '.join(overrides)} failed ({proc.returncode}):\n{tail}")
    return wall, text


def one_run(method: str, args: argparse.Namespace) -> Dict[str, Any]:
    """One VISSL training run; its phases' start-up times."""
    wall, text = launch_logged(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.DATA.TRAIN.DATA_LIMIT={args.images}",
            f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={args.batch}",
            f"config.OPTIMIZER.num_epochs={args.epochs}",
            f"config.DATA.NUM_DATALOADER_WORKERS={args.workers}",
            f"config.MULTI_PROCESSING_METHOD={method}",
            "config.TEST_MODEL=False",  # the RotNet CPU config has no test transforms
        ]
    )
    phases = parse_lines(PHASE_LINE, text)
    starts = [p["advance"] + p["first_batch"] for p in phases]
    return {
        "method": method,
        "wall_s": round(wall, 1),
        "phases": phases,
        "mean_start_s": round(statistics.fmean(starts), 3) if starts else None,
        "max_start_s": round(max(starts), 3) if starts else None,
    }


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="forkserver,spawn,fork")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    machine = machine_info()
    methods = [m for m in args.methods.split(",") if m]
    runs: Dict[str, List[Dict[str, Any]]] = {m: [] for m in methods}
    for r in range(args.repeats):
        for i in range(len(methods)):
            method = methods[(i + r) % len(methods)]
            run = one_run(method, args)
            runs[method].append(run)
            print(
                f"repeat {r}: {method:10s} phase start mean {run['mean_start_s']} s, "
                f"max {run['max_start_s']} s ({len(run['phases'])} phases, run "
                f"{run['wall_s']} s)",
                flush=True,
            )
    rows = []
    base = "fork" if "fork" in methods else methods[-1]
    for m in methods:
        means = [x["mean_start_s"] for x in runs[m]]
        mean, std = mean_std(means)
        d = paired_difference(means, [x["mean_start_s"] for x in runs[base]])
        rows.append(
            {
                "method": m,
                "runs": len(means),
                "phases per run": len(runs[m][0]["phases"]),
                "phase start s (mean over phases, mean over runs)": round(mean, 3),
                "sd over runs": None if std is None else round(std, 3),
                "slowest phase s": max(x["max_start_s"] for x in runs[m]),
                f"minus {base}, s [95% CI]": (
                    f"{d.diff:+.2f}"
                    + (
                        f" [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
                        if d.ci_low is not None
                        else ""
                    )
                ),
                "run wall s (mean)": round(
                    statistics.fmean(x["wall_s"] for x in runs[m]), 1
                ),
            }
        )
    table = {
        "title": f"Phase start-up, {args.workers} workers (advance + first batch)",
        "columns": list(rows[0]),
        "rows": rows,
    }
    notes = [
        "phase start = from the end of the previous phase's hooks until this phase's "
        "data iterator hands over its first batch (PhaseTimerHook: VISSL's iterator "
        "re-creation, worker start, first batch; no model time)",
        f"RotNet N_pre on Fashion-MNIST, {args.images} images, batch {args.batch}, "
        f"{args.epochs} epochs (one train phase each), OMP_NUM_THREADS=1; "
        "differences paired by repeat",
    ]
    paths = write_results(
        "phase_startup",
        machine,
        [table],
        {"settings": vars(args), "runs": runs},
        notes,
        title="Phase start-up by DataLoader start method (CPU)",
    )
    print(f"results: {paths['md']}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
