"""ClusterFit's control experiment (Yan et al., CVPR 2020, Sec. 3.2, Fig. 3) as a
benchmark: supervised N_pre on noisy Fashion-MNIST labels for each noise rate p and
seed, N_cf over a K sweep (K chosen on validation), distillation and prototype, res5
linear probes on four targets, the paired differences and the pre-registered
hypotheses (benchmarks/README.md, "Control experiment"). The work is
``vissl_clusterfit.experiments.control.driver`` (also ``tools/control_experiment.py``); this
script runs a preset in ``benchmarks/_work/control_experiment_<preset>/`` (resumed when
run again) and writes ``results/control_experiment_<preset>.{json,md,png}`` with the
machine, commit and command.

``--estimate-from <report.json>`` predicts a preset's wall time on 2 idle cores from an
earlier run's per-stage CPU seconds (the fixed cost of a stage and of a probe) plus the
training images at ``--img-per-s`` (320: a whole N_pre stage of the README demo on the
quiet machine, 64,000 images in 200 s after start-up; VISSL's batch loop alone runs 427,
results/training_throughput.md), without running anything.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.control_experiment --preset tiny
    .venv/bin/python -m benchmarks.control_experiment --preset small \\
        --estimate-from benchmarks/_work/control_experiment_tiny/report.json
    .venv/bin/python -m benchmarks.control_experiment --preset small
    .venv/bin/python -m benchmarks.control_experiment --preset full   # background
    .venv/bin/python -m benchmarks.control_experiment --preset full control.seeds=1,2 \
        --name control_experiment_full_seeds012 \
        --reuse-seeds-from benchmarks/results/control_experiment_full.json

``--reuse-seeds-from <results json>`` adds the seeds of an earlier results file of the
same preset that this run does not train (its raw records, N_pre fits and clusters; K
is chosen again), when every setting but the seeds and the folder is the same, and
writes the joint report: seeds run in different sessions, one report.

Each (seed, rate) cell runs as its own invocation of the control experiment, and its
raw records are then kept as ``results/control_experiment_finished/<work dir
name>/s<seed>_p<rate>.json``, to be committed: the work dir is git-ignored and a fresh
checkout starts without it, while the ``full`` preset needs hours per cell, so a
finished cell must survive in the repository. A cell found there is not run again (its
settings must equal this run's); the report joins every cell of the run. Within a
cell, finished stages (a ``full`` stage takes about an hour) are copied every 5 minutes to
``.../<work dir name>/stages/`` (``benchmarks.stage_archive``), restored into the work
dir when a run starts, and deleted once their cell file is written.

Other arguments (``control.<key>=<value>``, ``config.<KEY>=<value>``) go to the mode.
"""

import argparse
import json
import os
import shutil
import statistics
import threading
from typing import Any, Dict, List, Optional

from benchmarks import common, stage_archive
from benchmarks.wall_time import DIGITS_TEST, DIGITS_TRAIN, FMNIST_TEST, limited


def throughput_estimate(
    report: Dict[str, Any], preset: str, img_per_s: float
) -> Dict[str, Any]:
    """Seconds a preset would take: per training stage the measured fixed cost (CPU s
    of the earlier run's stages, whose training was negligible) plus its images x
    epochs at the assumed throughput ``img_per_s``; per probe the earlier probes' CPU s
    scaled by the images they extract (Fashion-MNIST train + validation + test,
    digits' 1797). Why not the reproduction's fitted model: ``benchmarks.wall_time``.
    """
    import dataclasses

    from benchmarks.plugin import ControlSettings, ints, names

    s = ControlSettings(preset=preset)
    fields = {f.name for f in dataclasses.fields(ControlSettings)}
    before = ControlSettings(
        **{k: v for k, v in report["settings"].items() if k in fields}
    )
    times = report["stage_time_s"]
    stage_cpu = [t["cpu_s"] for k, t in times.items() if not k.startswith("probe:")]
    probe_cpu = [t["cpu_s"] for k, t in times.items() if k.startswith("probe:")]

    def probe_images(x: ControlSettings) -> int:
        test = limited(x.probe_test, FMNIST_TEST)
        return x.probe_train + x.probe_val + test + DIGITS_TRAIN + DIGITS_TEST

    cells = len(ints(s.seeds)) * len(names(s.variants)) * len(ints(s.rates))
    methods = names(s.methods)
    trained = (
        1 + len(ints(s.ks)) * ("ncf" in methods) + len(methods) - ("ncf" in methods)
    )
    epochs = s.epochs or 40  # the cpu configs' 40 epochs when the preset keeps them
    train_s = s.data_limit * epochs / img_per_s  # the throughput form of the stage cost
    probes = cells * trained + len(ints(s.seeds))
    scale = probe_images(s) / probe_images(before)
    out = {
        "preset": preset,
        "cells": cells,
        "training_stages": cells * trained,
        "probes": probes,
        "stage_fixed_s": statistics.median(stage_cpu),
        "stage_training_s": round(train_s, 1),
        "probe_s": round(statistics.median(probe_cpu) * scale, 1),
        "img_per_s": img_per_s,
    }
    total = cells * trained * (out["stage_fixed_s"] + train_s) + probes * out["probe_s"]
    return dict(out, total_s=round(total), total_min=round(total / 60, 1))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.control_experiment",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--preset", default="tiny", help="tiny | small | full")
    p.add_argument("--output", default="", help="work dir (default under _work/)")
    p.add_argument("--name", default="", help="results stem (default by preset)")
    p.add_argument("--estimate-from", default="", help="report.json of an earlier run")
    p.add_argument("--img-per-s", type=float, default=320.0)
    p.add_argument("--reuse-seeds-from", default="", help="an earlier results json")
    return p.parse_known_args(argv)


SEED_LISTS = ("records", "npre_fit", "clusters")  # per-seed items of a report
NOT_CELL_SETTINGS = ("seeds", "rates", "output_dir")  # what may differ between cells


def finished_path(out: str, seed: int, rate: int) -> str:
    """The committed records of one finished cell (module docstring: why)."""
    name = os.path.basename(os.path.normpath(out))
    folder = os.path.join(common.RESULTS_DIR, "control_experiment_finished", name)
    return os.path.join(folder, f"s{seed}_p{rate}.json")


def cell_settings(settings: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in NOT_CELL_SETTINGS}


def load_cell(path: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """A finished cell's file, checked: ValueError naming the file and the setting when
    it was trained with other settings than ``settings``."""
    with open(path) as f:
        cell = json.load(f)
    now = cell_settings(settings)
    for key, value in now.items():
        if cell["settings"].get(key) != value:
            raise ValueError(
                f"{path}: a finished cell with control.{key}="
                f"{cell['settings'].get(key)!r}, but this run has {value!r}: give this "
                "run another --output (the folder names the finished cells), or move "
                "the file away to retrain the cell"
            )
    return cell


def cell_of(report: Dict[str, Any], seed: int, rate: int, commit: str) -> Dict:
    """What a cell's report keeps: its raw records (no K-chosen ``N_cf`` rows), N_pre
    fits, clusters and stage times, with the settings and the commit."""

    def mine(x: Dict[str, Any]) -> bool:
        return x["seed"] == seed and x["p"] == rate

    def my_stage(key: str) -> bool:
        """Keys: ``[probe:]<variant>/p<rate>/s<seed>/<stage>``, ``probe:random/s<seed>``."""
        return f"/p{rate}/s{seed}/" in key or key.endswith(f"random/s{seed}")

    times = report["stage_time_s"]
    cell: Dict[str, Any] = {
        "seed": seed,
        "rate": rate,
        "commit": commit,
        "settings": cell_settings(report["settings"]),
        "stage_time_s": {k: v for k, v in times.items() if my_stage(k)},
    }
    for key in SEED_LISTS:
        raw = [x for x in report.get(key, []) if x.get("model") != "N_cf"]
        cell[key] = [x for x in raw if mine(x)]
    return cell


class StageKeeper:
    """While a cell runs, its finished stages are copied to the stage archive every
    ``every_s`` seconds and once at the end (``benchmarks.stage_archive``: a session
    ends before a ``full`` cell does)."""

    def __init__(self, work_dir: str, every_s: float = 300.0) -> None:
        self.work_dir, self.every_s = work_dir, every_s
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def superseded(self, stage: str) -> bool:
        """A stage (``<variant>/p<rate>/s<seed>/<name>``) of a cell kept as finished."""
        parts = stage.split(os.sep)
        if len(parts) != 4 or parts[1][:1] != "p" or parts[2][:1] != "s":
            return False
        seed, rate = int(parts[2][1:]), int(parts[1][1:])
        return os.path.isfile(finished_path(self.work_dir, seed, rate))

    def archive(self) -> None:
        where = stage_archive.archive_dir(self.work_dir)
        for stage in stage_archive.archive(self.work_dir, skip=self.superseded):
            print(f"[control] {stage}: kept in {where}", flush=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            self.archive()

    def __enter__(self) -> "StageKeeper":
        self.stop.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        self.archive()  # after a failure too: the stages that did finish are kept


def run_cells(argv: List[str], commit: str) -> Dict[str, Any]:
    """The control experiment of ``argv``, one (seed, rate) cell at a time, each cell
    kept under ``finished_path`` and skipped when found there; the joint report."""
    import dataclasses
    import time

    from benchmarks.plugin import (
        ControlSettings,
        control_main,
        control_report,
        ints,
        names,
        split_argv,
    )

    t0 = time.time()
    ours, passthrough = split_argv(argv, "control")
    settings = ControlSettings.from_args(ours)
    out = settings.output_dir
    for stage in stage_archive.restore(out):
        print(f"[control] {stage}: finished in an earlier session (restored)")
    keeper = StageKeeper(out)
    joint: Dict[str, Any] = {key: [] for key in SEED_LISTS}
    times: Dict[str, Any] = {}
    run_now: List[str] = []
    for seed in ints(settings.seeds):
        for rate in ints(settings.rates):
            path = finished_path(settings.output_dir, seed, rate)
            if os.path.isfile(path):
                cell = load_cell(path, dataclasses.asdict(settings))
                print(f"[control] seed {seed}, p={rate}%: finished before ({path})")
            else:
                one = [f"control.seeds={seed}", f"control.rates={rate}"]
                with keeper:
                    report = control_main([*ours, *one, *passthrough])
                run_now += report["stages_run_now"]
                cell = cell_of(report, seed, rate, commit)
                common.write_json(path, cell)
                # the cell file supersedes its stages (git history keeps them)
                for variant in names(settings.variants):
                    stage_archive.drop(out, f"{variant}/p{rate}/s{seed}")
            for key in SEED_LISTS:
                joint[key] += cell[key]
            times.update(cell["stage_time_s"])
    joint.update(
        settings=dataclasses.asdict(settings),
        num_proc=settings.num_proc,
        passthrough=passthrough,
        stage_time_s=times,
        stages_run_now=run_now,
        total_time_s=round(time.time() - t0, 1),
    )
    os.makedirs(settings.output_dir, exist_ok=True)  # a fresh checkout: cells only
    return control_report.write_report(settings.output_dir, joint)


def with_reused_seeds(
    report: Dict[str, Any], path: str, out_dir: str
) -> Dict[str, Any]:
    """``report`` joined with the seeds of the results file ``path`` that it lacks,
    re-rendered into ``out_dir`` (``control_report.write_report``: K chosen again on
    validation over the joint raw records). ValueError when a setting other than the
    seeds and the folder differs."""
    from benchmarks.plugin import control_report

    with open(path) as f:
        old_file = json.load(f)
    old = old_file["report"]
    same = ("output_dir", "seeds")
    for key, value in report["settings"].items():
        if key not in same and old["settings"].get(key) != value:
            raise ValueError(
                f"--reuse-seeds-from {path}: its control.{key}="
                f"{old['settings'].get(key)!r} differs from this run's {value!r}: its "
                "seeds cannot join this report (drop --reuse-seeds-from)"
            )
    ran = {r["seed"] for r in report["records"]}
    joint = dict(report)
    for key in SEED_LISTS:
        reused = [x for x in old.get(key, []) if x["seed"] not in ran]
        joint[key] = [*reused, *report.get(key, [])]
    joint["records"] = [r for r in joint["records"] if r["model"] != "N_cf"]
    seeds = sorted({r["seed"] for r in joint["records"]})
    joint["settings"] = dict(report["settings"], seeds=",".join(map(str, seeds)))
    joint["reused_seeds"] = {
        "path": path,
        "seeds": sorted({r["seed"] for r in old["records"]} - ran),
        "commit": old_file.get("machine", {}).get("git_commit", "unknown"),
    }
    return control_report.write_report(out_dir, joint)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args, rest = parse_args(argv)
    if args.estimate_from:
        with open(args.estimate_from) as f:
            est = throughput_estimate(json.load(f), args.preset, args.img_per_s)
        print(json.dumps(est, indent=1))
        return est
    name = args.name or f"control_experiment_{args.preset}"
    out = args.output or os.path.join(common.WORK_DIR, name)
    machine = common.machine_info()
    report = run_cells(
        [f"control.preset={args.preset}", f"control.output_dir={out}", *rest],
        machine.get("git_commit", "unknown"),
    )
    if args.reuse_seeds_from:
        report = with_reused_seeds(report, args.reuse_seeds_from, out)
    plot = common.results_path(name, "png")
    shutil.copyfile(os.path.join(out, "fig3_control.png"), plot)
    payload = {"benchmark": name, "machine": machine, "wall_time_s": common.elapsed_s()}
    common.write_json(common.results_path(name, "json"), dict(payload, report=report))
    with open(os.path.join(out, "report.md")) as f:
        body = f.read().replace("fig3_control.png", os.path.basename(plot))
    head = common.header_lines(machine, [f"work dir: `{out}`"])
    common.write_text(common.results_path(name, "md"), "\n".join(head) + "\n\n" + body)
    print(f"results: {common.results_path(name, 'md')}")
    return report


if __name__ == "__main__":
    main()
