"""Phase start-up on JPEGs, part by part: where a phase of the ImageNet-style N_cf
config waits before its first batch, with VISSL's phase start, without its
``gc.collect()``, and with persistent DataLoader workers (``config.VCF.DATA``).

On one H200 the ``resnet50_in1k_1gpu`` preset started its phases in 3.3-5.1 s (train)
and 1.5-1.8 s (test) on a synthetic JPEG folder, 15 workers, batch 256 (issue 21,
results/gpu_check.md; target <= 2 s). This runs the same kind of phase on a CPU, through
VISSL's real trainer: N_cf's own config (``ncf_rotnet_resnet50_in1k_gpu``: its
RandomResizedCrop + ColorJitter + flip train transforms and resize + center-crop test
transforms) on a synthetic JPEG folder (``benchmarks/synthetic_folder.py``), the cluster
step off (the folder's labels), a one-layer ViT as the trunk (model time is not part of
a phase start), ``--workers`` forked workers, ``--epochs`` epochs with a test phase
after each. Each phase's times come from the run's ``PhaseTimerHook`` lines (advance +
first batch, and the advance split by ``PHASE_START_LINE``). Each repeat runs every arm
once, in a rotated order; differences are paired by repeat.

    .venv/bin/python -m benchmarks.phase_startup_jpeg                 # ~6 min on 2 cores
    .venv/bin/python -m benchmarks.phase_startup_jpeg --repeats 1 --arms vissl,persistent

Writes results/phase_startup_jpeg.{json,md} (``--name``: another name).
"""

import argparse
import os
import statistics
from typing import Any, Dict, List, Optional

from benchmarks.common import WORK_DIR, machine_info, write_results
from benchmarks.phase_startup import launch_logged
from benchmarks.plugin import PHASE_LINE, PHASE_START_LINE, parse_lines
from benchmarks.report import mean_std, paired_difference
from benchmarks.synthetic_folder import make_image_folder


# arm -> (VCF.DATA.GC_EACH_PHASE, VCF.DATA.PERSISTENT_WORKERS)
ARMS = {
    "vissl": (True, False),  # VISSL 0.1.6's phase start
    "no_gc": (False, False),  # the plugin's default
    "persistent": (False, True),  # the GPU configs' setting
}
PARTS = ("before", "release", "gc", "create", "after")


def run_overrides(arm: str, folder: str, args: argparse.Namespace) -> List[str]:
    gc_each_phase, persistent = ARMS[arm]
    vit = "config.MODEL.TRUNK.VISION_TRANSFORMERS"
    data = []
    for split, sub, limit in (
        ("TRAIN", "train", args.train),
        ("TEST", "val", args.val),
    ):
        data += [
            f"config.DATA.{split}.LABEL_SOURCES=[disk_folder]",
            f"config.DATA.{split}.DATA_PATHS=[{folder}/{sub}]",
            f"config.DATA.{split}.LABEL_PATHS=[{folder}/{sub}]",
            f"config.DATA.{split}.DATA_LIMIT={limit}",
            f"config.DATA.{split}.BATCHSIZE_PER_REPLICA={args.batch}",
        ]
    return [
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        "+vissl_clusterfit_defaults=cpu",
        "config.VCF.CLUSTERFIT.ENABLED=False",
        "config.TEST_MODEL=True",
        f"config.DATA.NUM_DATALOADER_WORKERS={args.workers}",
        "config.MULTI_PROCESSING_METHOD=fork",
        f"config.VCF.DATA.GC_EACH_PHASE={gc_each_phase}",
        f"config.VCF.DATA.PERSISTENT_WORKERS={persistent}",
        f"config.OPTIMIZER.num_epochs={args.epochs}",
        "config.OPTIMIZER.param_schedulers.lr.auto_lr_scaling.auto_scale=False",
        "config.MODEL.TRUNK.NAME=vision_transformer",
        f"{vit}.PATCH_SIZE=32",
        f"{vit}.NUM_LAYERS=1",
        f"{vit}.NUM_HEADS=2",
        f"{vit}.HIDDEN_DIM=32",
        f"{vit}.MLP_DIM=64",
        f"config.MODEL.HEAD.PARAMS=[[mlp,{{dims:[32,{args.classes}]}}]]",
        *data,
    ]


def one_run(arm: str, folder: str, args: argparse.Namespace) -> Dict[str, Any]:
    """One training run; each phase's start (advance + first batch) and its parts."""
    wall, text = launch_logged(run_overrides(arm, folder, args))
    phases = parse_lines(PHASE_LINE, text)
    parts = {p["phase"]: p for p in parse_lines(PHASE_START_LINE, text)}
    if not phases or len(parts) != len(phases):
        raise RuntimeError(
            f"{arm}: {len(phases)} phase lines, {len(parts)} phase start lines"
        )
    for p in phases:
        p.update({k: parts[p["phase"]][k] for k in PARTS + ("workers",)})
        p["start"] = round(p["advance"] + p["first_batch"], 3)
    return {"arm": arm, "wall_s": round(wall, 1), "phases": phases}


def mean_of(run: Dict[str, Any], key: str, keep: Any = None) -> float:
    """Mean of ``key`` over a run's phases (those ``keep(phase)`` accepts)."""
    return statistics.fmean(p[key] for p in run["phases"] if keep is None or keep(p))


def paired(
    runs: Dict[str, List[Dict[str, Any]]], arm: str, base: str, key: str, keep: Any
) -> str:
    """``arm`` minus ``base`` in ``key`` (mean over the phases ``keep`` accepts),
    paired by repeat: the mean difference and its 95% interval."""
    d = paired_difference(
        [mean_of(r, key, keep) for r in runs[arm]],
        [mean_of(r, key, keep) for r in runs[base]],
    )
    ci = f" [{d.ci_low:+.2f}, {d.ci_high:+.2f}]" if d.ci_low is not None else ""
    return f"{d.diff:+.2f}{ci}"


def later(p: Dict[str, Any]) -> bool:
    """A phase after its loader's first (the train loader starts at phase 0, the
    test loader at phase 1): the phases persistent workers can speed up."""
    return p["phase"] >= 2


SUBSETS = {
    "all phases": None,
    "train phases": lambda p: p["kind"] == "train",
    "test phases": lambda p: p["kind"] == "test",
    "phases 0-1 (each loader's first)": lambda p: not later(p),
    "phases 2+ (later)": later,
}


def tables(
    runs: Dict[str, List[Dict[str, Any]]], base: str, batch: int
) -> List[Dict[str, Any]]:
    arms = list(runs)
    rows = []
    for subset, keep in SUBSETS.items():
        for arm in arms:
            mean, std = mean_std([mean_of(r, "start", keep) for r in runs[arm]])
            rows.append(
                {
                    "phases": subset,
                    "arm": arm,
                    "runs": len(runs[arm]),
                    "phase start s (mean)": round(mean, 3),
                    "sd over runs": None if std != std else round(std, 3),
                    f"minus {base}, s [95% CI]": paired(runs, arm, base, "start", keep),
                    "advance s (mean)": round(
                        statistics.fmean(
                            mean_of(r, "advance", keep) for r in runs[arm]
                        ),
                        3,
                    ),
                    f"advance minus {base}, s [95% CI]": paired(
                        runs, arm, base, "advance", keep
                    ),
                }
            )
    parts_rows = []
    for arm in arms:
        phases = [p for r in runs[arm] for p in r["phases"]]
        row: Dict[str, Any] = {"arm": arm, "phases": len(phases)}
        for k in PARTS + ("advance", "first_batch", "start"):
            row[k] = round(statistics.fmean(p[k] for p in phases), 3)
        row["first batch per image, ms"] = round(1000 * row["first_batch"] / batch, 1)
        row["run wall s"] = round(statistics.fmean(r["wall_s"] for r in runs[arm]), 1)
        parts_rows.append(row)
    return [
        {
            "title": "Phase start (advance + first batch) and advance, s",
            "columns": list(rows[0]),
            "rows": rows,
        },
        {
            "title": "Where the phase start goes: mean over runs and phases, s",
            "columns": list(parts_rows[0]),
            "rows": parts_rows,
        },
    ]


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--train", type=int, default=128, help="training images per epoch")
    p.add_argument("--val", type=int, default=128, help="test images per test phase")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--size", type=int, default=320, help="JPEG side, px")
    p.add_argument("--name", default="phase_startup_jpeg", help="results/<name>.*")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"--arms: unknown {unknown}; use {', '.join(ARMS)}")
    machine = machine_info()
    per_class = (args.train + args.classes - 1) // args.classes
    val_per_class = (args.val + args.classes - 1) // args.classes
    folder = os.path.join(
        WORK_DIR,
        "phase_startup_jpeg",
        f"folder_{args.classes}x{per_class}+{val_per_class}_{args.size}px",
    )
    make_image_folder(
        folder, args.classes, per_class, val_per_class, args.size, processes=2
    )
    runs: Dict[str, List[Dict[str, Any]]] = {a: [] for a in arms}
    for r in range(args.repeats):
        for i in range(len(arms)):
            arm = arms[(i + r) % len(arms)]
            run = one_run(arm, folder, args)
            runs[arm].append(run)
            print(
                f"repeat {r}: {arm:10s} phase starts "
                f"{[p['start'] for p in run['phases']]} s (run {run['wall_s']} s)",
                flush=True,
            )
    base = "vissl" if "vissl" in arms else arms[0]
    out_tables = tables(runs, base, args.batch)
    notes = [
        "phase start = advance + first batch (PhaseTimerHook): from the end of the "
        "previous phase's hooks until the phase's iterator hands over its first batch; "
        "advance = before (phase 0: the model's log line) + release (the old iterator) "
        "+ gc (VISSL's gc.collect) + create (iter(): the workers' fork, unless they "
        "persist) + after (model mode, optimizer, the other hooks' on_phase_start). "
        "On a CPU VISSL does not wrap the loader, so the first batch is measured after "
        "the advance; on a GPU its async copy wrapper loads it inside iter() (create)",
        f"N_cf's in1k config on a synthetic JPEG folder ({args.classes} classes, "
        f"{args.size} px), cluster step off, one-layer ViT trunk; {args.workers} "
        f"forked workers, batch {args.batch}, {args.train} training and {args.val} "
        f"test images per phase, {args.epochs} epochs with a test phase each "
        f"({2 * args.epochs} phases per run), OMP_NUM_THREADS=1; arms in rotated order, "
        "differences paired by repeat (Student's t, n - 1 degrees of freedom)",
        "arms: vissl = VCF.DATA.GC_EACH_PHASE=True (VISSL's phase start); no_gc = the "
        "plugin's default; persistent = no gc + VCF.DATA.PERSISTENT_WORKERS=True",
        f"load average at the end {[round(v, 2) for v in os.getloadavg()]} (shared "
        "machine: other jobs ran; absolute times are inflated)",
    ]
    paths = write_results(
        args.name,
        machine,
        out_tables,
        {"settings": vars(args), "runs": runs},
        notes,
        title="Phase start-up on JPEGs, part by part (CPU)",
    )
    print(f"results: {paths['md']}")
    return {"tables": out_tables}


if __name__ == "__main__":
    main()
