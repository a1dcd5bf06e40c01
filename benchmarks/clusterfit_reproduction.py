"""ClusterFit (Yan et al., CVPR 2020) reproduced at this machine's scale: does N_cf beat
N_pre (and N_pre trained twice as long) layer by layer?

The paper (Sec. 4.2-4.3, Fig. 4, Table 6) pre-trains N_pre on a proxy task (RotNet,
Jigsaw, ...), clusters its penultimate features with k-means into K groups, trains a new
network N_cf of the same architecture for the same number of epochs on the cluster ids, and
compares linear probes per layer: N_cf beats N_pre, most at the last layers, where N_pre's
features are most specific to its pretext (Jigsaw's res5 the most). Here:

- data: Fashion-MNIST train split without labels (pre-training and D_cf), probes on its
  train/test labels; scikit-learn digits as a transfer target;
- models per seed: RotNet and Jigsaw N_pre, N_pre 2x (2 x epochs), N_cf for a sweep of K
  (N_pre is trained once and shared by every K), and a random-init trunk;
- probes per layer (conv1, res2..res5): VISSL linear probes through the pipeline (full
  labels), and benchmarks.probe_checkpoint: k-NN (k=20, cosine), logistic regression on 10 and 100
  labels per class, full-label logistic regression on digits;
- mean and standard deviation over seeds (seed = SEED_VALUE of every stage and the k-means
  seed; the image subsets are fixed);
- an automatically generated comparison: N_cf at its best K vs N_pre and N_pre 2x per
  layer, paired by seed, with 95% t intervals over seeds.

Presets: ``tiny`` (smoke test, 5-10 minutes on 2 cores, numbers meaningless), ``cpu``
(5000 images, 6 epochs, K in 10/50/200, 1 seed: about an hour on 2 otherwise idle cores;
a busy machine is several times slower), ``gpu`` (all 60k images, width-64 trunks, 30
epochs, K up to 1000, 3 seeds; one GPU per stage). Every preset value can be overridden
with a flag (``--seeds 0,1,2``, ``--ks 10,50``...); ``config.X=Y`` arguments go to every
VISSL stage. ``--estimate-from <results json>`` predicts a preset's wall time from the
stage times of an earlier run on this machine (e.g. the tiny one) without running it.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.clusterfit_reproduction --preset tiny
    .venv/bin/python -m benchmarks.clusterfit_reproduction --preset cpu \\
        --estimate-from benchmarks/results/clusterfit_reproduction_tiny.json
    .venv/bin/python -m benchmarks.clusterfit_reproduction --preset cpu --seeds 0,1,2

Writes benchmarks/results/clusterfit_reproduction_<preset>.{json,md,png} (``--name``
changes the stem). Runs go to benchmarks/_work/clusterfit_reproduction/<name>-<hash of the
settings>/seed<s>/ and are resumed: finished stages and probes are reused on a re-run with
the same settings. The pieces are in ``benchmarks.reproduction``.
"""

import argparse
import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from benchmarks import common
from benchmarks.report import print_tables
from benchmarks.reproduction import comparison, cost_model, render, runner
from benchmarks.reproduction.settings import (
    FLAG_HELP,
    PRESETS,
    Preset,
    check_configs,
    check_pretexts,
    ints,
    model_order,
    settings_hash,
)


def _add_preset_flags(ap: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Preset):
        flag = "--" + f.name.replace("_", "-")
        help_ = FLAG_HELP.get(f.name, "") + " (default: the preset's)"
        if f.type in (bool, "bool"):
            ap.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_,
            )
        else:
            ap.add_argument(
                flag,
                dest=f.name,
                type=int if f.type in (int, "int") else str,
                default=None,
                help=help_,
            )


def parse_args(
    argv: Optional[List[str]],
) -> Tuple[str, Preset, List[str], argparse.Namespace]:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.clusterfit_reproduction",
        description=__doc__.split("\n\n")[0],
        epilog="config.X=Y arguments are passed to every VISSL stage.",
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument(
        "--name",
        default="",
        help="results stem (default clusterfit_reproduction_<preset>)",
    )
    ap.add_argument(
        "--workdir", default=os.path.join(common.WORK_DIR, "clusterfit_reproduction")
    )
    ap.add_argument(
        "--estimate-from",
        default="",
        metavar="RESULTS_JSON",
        help="print the estimated run time of the chosen preset from an earlier run's "
        "stage times (e.g. benchmarks/results/clusterfit_reproduction_tiny.json) and exit",
    )
    _add_preset_flags(ap)
    args, rest = ap.parse_known_args(argv)
    bad = [a for a in rest if not a.startswith(("config.", "+config."))]
    if bad:
        ap.error(
            f"unrecognised arguments {bad} (VISSL overrides must start with config.)"
        )
    preset = dataclasses.replace(
        PRESETS[args.preset],
        **{
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(Preset)
            if getattr(args, f.name) is not None
        },
    )
    return args.name or f"clusterfit_reproduction_{args.preset}", preset, rest, args


def estimate(p: Preset, preset_name: str, calibration_json: str) -> Dict[str, Any]:
    with open(calibration_json) as f:
        est = cost_model.calibrated_estimate(p, json.load(f))
    model = est.pop("_model")
    print(
        f"[repro] estimated wall time of preset {preset_name} "
        f"({json.dumps(dataclasses.asdict(p))}):"
    )
    for k, v in est.items():
        print(f"  {k:<32} {v:8.0f} s  ({v / 60:.1f} min)")
    print(f"  cost model: {json.dumps(model)}")
    if p.scale != "cpu":
        print(
            "  (calibrated at scale=cpu: a gpu-scale estimate from it is meaningless)"
        )
    return {"estimate_s": est, "model": model}


def _stage_and_probe_sum(per_seed: Dict[int, Dict[str, Any]]) -> float:
    return round(
        sum(
            sum(o["stage_time_s"].values()) + sum(o["probe_time_s"].values())
            for o in per_seed.values()
        ),
        1,
    )


def report(
    name: str,
    preset_name: str,
    p: Preset,
    passthrough: List[str],
    run_dir: str,
    machine: Dict[str, Any],
    per_seed: Dict[int, Dict[str, Any]],
    timing: Dict[str, Any],
) -> Dict[str, Any]:
    """Statistics, tables, figure and the results files of a finished run."""
    stats = comparison.aggregate(
        {s: comparison.per_seed_accuracies(o) for s, o in per_seed.items()}
    )
    acc_tables = render.accuracy_tables(stats, model_order(p))
    cmp_tables, cmp_lines, cmp_data = comparison.comparison(stats, p)
    extra = [
        render.cluster_table({s: o["clusters"] for s, o in per_seed.items()}, p),
        render.time_table(per_seed),
    ]
    print_tables(acc_tables)
    print_tables(cmp_tables)
    print("\n" + "\n".join(cmp_lines))
    print_tables(extra[:1])

    png = common.results_path(name, "png")
    render.plot(png, stats, p)
    payload = {
        "benchmark": name,
        "preset": preset_name,
        "settings": dataclasses.asdict(p),
        "passthrough": passthrough,
        "run_dir": run_dir,
        "machine": machine,
        "wall_time_s": timing["wall"],
        "wall_time_per_seed_s": timing["per_seed"],
        "stage_time_s": {s: o["stage_time_s"] for s, o in per_seed.items()},
        "probe_time_s": {s: o["probe_time_s"] for s, o in per_seed.items()},
        "stage_and_probe_time_sum_s": _stage_and_probe_sum(per_seed),
        "stats": stats,
        "comparison": {"lines": cmp_lines, "data": cmp_data},
        "per_seed": per_seed,
        "plot": png,
    }
    json_path = common.write_json(common.results_path(name, "json"), payload)
    md = render.markdown(payload, acc_tables, cmp_tables, cmp_lines, extra, png)
    md_path = common.write_text(common.results_path(name, "md"), md)
    print(
        f"\n[repro] total {timing['wall']:.0f}s; wrote {json_path}, {md_path}, {png}",
        flush=True,
    )
    return payload


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    name, p, passthrough, args = parse_args(argv)
    check_pretexts(p)
    if args.estimate_from:
        return estimate(p, args.preset, args.estimate_from)
    check_configs(p)
    machine = common.machine_info()
    run_dir = os.path.join(args.workdir, f"{name}-{settings_hash(p, passthrough)}")
    print(
        f"[repro] preset {args.preset}: {json.dumps(dataclasses.asdict(p))}\n"
        f"[repro] runs in {run_dir}",
        flush=True,
    )
    t0 = time.time()
    per_seed: Dict[int, Dict[str, Any]] = {}
    seed_time: Dict[int, float] = {}
    for seed in ints(p.seeds):
        ts = time.time()
        per_seed[seed] = runner.run_seed(
            p, seed, os.path.join(run_dir, f"seed{seed}"), passthrough
        )
        seed_time[seed] = round(time.time() - ts, 1)
    timing = {"wall": round(time.time() - t0, 1), "per_seed": seed_time}
    return report(name, args.preset, p, passthrough, run_dir, machine, per_seed, timing)


if __name__ == "__main__":
    main()
