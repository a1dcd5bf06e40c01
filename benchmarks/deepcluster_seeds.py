"""DeepCluster and DeeperCluster vs random init, and DeeperCluster vs its RotNet init,
over several seeds: the pre-registered comparison of benchmarks/README.md
("Pre-registered: DeepCluster / DeeperCluster vs random init after the fidelity fixes").

Per seed s (SEED_VALUE = clustering seed = s), on the first ``--images`` Fashion-MNIST
training images: DeepCluster (Sobel, K, ``--epochs``), a Sobel RotNet
(``--rotnet-epochs``), DeeperCluster initialised from it (m x k, ``--deeper-epochs``)
and a random network of the same Sobel architecture. Each is probed with
``benchmarks.probe_checkpoint`` (full-label logistic regression = the primary probe at res5,
k-NN, 10-label) on Fashion-MNIST and digits. Differences are paired per seed, with
the mean and the 95% t interval (``benchmarks.report.paired_difference``). The
re-clustering cost is each round's extraction + clustering time over the wall time
between consecutive rounds (one epoch plus its re-clustering).

Example (from the repository root)::

    .venv/bin/python -m benchmarks.deepcluster_seeds --seeds 0,1,2

Writes results/<name>.{json,md}; stages are reused when the same command runs again.
"""

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional

from benchmarks import common, probe_checkpoint, report
from benchmarks.deepcluster_vs_random import rounds_of
from benchmarks.plugin import LAYERS, Pipeline, PipelineSettings


SOBEL = ["config.MODEL.TRUNK.VCF_RESNET.SOBEL=true"]
PRIMARY = ("fmnist full", "res5")
COMPARISONS = (
    ("DeepCluster - random init", "deepcluster", "random"),
    ("DeeperCluster - random init", "deepercluster", "random"),
    ("DeeperCluster - its RotNet init", "deepercluster", "rotnet"),
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.deepcluster_seeds",
        description=__doc__.split("\n\n")[0],
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10, help="DeepCluster epochs")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--rotnet-epochs", type=int, default=5)
    ap.add_argument("--deeper-epochs", type=int, default=5)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--sub", type=int, default=10)
    ap.add_argument("--probe-images", type=int, default=5000)
    ap.add_argument(
        "--retrain-check",
        type=int,
        default=None,
        metavar="SEED",
        help="retrain SEED's models in a scratch dir and compare their weights with "
        "the stored ones (are stages trained by an earlier commit still valid?)",
    )
    ap.add_argument("--name", default="deepcluster_seeds")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not args.out:
        ignore = ("seeds", "retrain_check")
        args.out = common.settings_work_dir("deepcluster_seeds", args, ignore)
    return args


def seed_pipeline(args: argparse.Namespace, seed: int) -> Pipeline:
    out = os.path.join(args.out, f"seed{seed}")
    return Pipeline(PipelineSettings(output_dir=out, scale="cpu", seed=seed), [])


def train_deepcluster(
    args: argparse.Namespace, seed: int, preactivation: bool = False
) -> str:
    """DeepCluster of one seed. Post-ReLU features (the setting this comparison was
    registered and run with) unless ``preactivation``; stage ``deepcluster`` or
    ``deepcluster_preact``."""
    return seed_pipeline(args, seed).train(
        "deepcluster_preact" if preactivation else "deepcluster",
        "vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
        [
            f"config.DATA.TRAIN.DATA_LIMIT={args.images}",
            f"config.VCF.DEEPCLUSTER.SEED={seed}",
            f"config.OPTIMIZER.num_epochs={args.epochs}",
            f"config.VCF.DEEPCLUSTER.NUM_CLUSTERS={args.k}",
            f"config.VCF.DEEPCLUSTER.PREACTIVATION={str(preactivation).lower()}",
        ],
    )


def train_seed(args: argparse.Namespace, seed: int) -> Dict[str, Any]:
    """The four models of one seed (each stage reused when finished)."""
    pipe = seed_pipeline(args, seed)
    data = [
        f"config.DATA.TRAIN.DATA_LIMIT={args.images}",
        f"config.VCF.DEEPCLUSTER.SEED={seed}",
    ]
    deepcluster = train_deepcluster(args, seed)
    rotnet = pipe.train(
        "rotnet_sobel",
        "vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
        [*data[:1], *SOBEL, f"config.OPTIMIZER.num_epochs={args.rotnet_epochs}"],
    )
    deeper = pipe.train(
        "deepercluster",
        "vissl_clusterfit/deepcluster/deepercluster_fmnist_cpu",
        [
            *data,
            f"config.OPTIMIZER.num_epochs={args.deeper_epochs}",
            f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={rotnet}",
            f"config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS={args.groups}",
            f"config.VCF.DEEPCLUSTER.DEEPER.NUM_SUB={args.sub}",
        ],
    )
    random = pipe.random_init_checkpoint(SOBEL, name="random_init_sobel")
    return {
        "checkpoints": {
            "deepcluster": deepcluster,
            "rotnet": rotnet,
            "deepercluster": deeper,
            "random": random,
        },
        "rounds": {
            "deepcluster": rounds_of(os.path.dirname(deepcluster)),
            "deepercluster": rounds_of(os.path.dirname(deeper)),
        },
        "stage_time_s": pipe.timings,
    }


def retrain_check(args: argparse.Namespace, seed: int) -> Dict[str, Any]:
    """Train ``seed``'s four models again (current commit) in ``<out>_retrain`` and
    compare every tensor of their checkpoints with the stored ones: max |difference|
    0 means the stored stages are what this commit trains."""
    import torch

    stored = train_seed(args, seed)["checkpoints"]
    fresh_args = argparse.Namespace(**{**vars(args), "out": args.out + "_retrain"})
    fresh = train_seed(fresh_args, seed)["checkpoints"]

    def tensors(path: str) -> Dict[str, Any]:
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = state.get("classy_state_dict", state)["base_model"]["model"]
        return {f"{part}.{k}": v for part in model for k, v in model[part].items()}

    out = {}
    for name in stored:
        a, b = tensors(stored[name]), tensors(fresh[name])
        diff = max(
            float((a[k].double() - b[k].double()).abs().max())
            for k in a
            if k in b and torch.is_tensor(a[k]) and a[k].numel()
        )
        out[name] = {
            "tensors": len(a),
            "same_keys": set(a) == set(b),
            "max_abs_diff": diff,
        }
    result = {"seed": seed, "machine": common.machine_info(), "models": out}
    common.write_json(common.results_path(f"{args.name}_retrain_check", "json"), result)
    print(json.dumps(out, indent=1))
    return result


def probe_all(args: argparse.Namespace, checkpoint: str) -> Dict[str, Dict[str, float]]:
    """{"<target> <probe>": {layer: top-1 %}} of one checkpoint (cached beside it)."""
    cache = checkpoint + f".probes{args.probe_images}.json"
    if os.path.isfile(cache):
        return json.load(open(cache))
    res = probe_checkpoint.probe_checkpoint(
        checkpoint,
        None,
        targets=("fmnist", "digits"),
        n_train=args.probe_images,
        n_test=args.probe_images,
        shots=(10,),
        draws=3,
        full_label=("fmnist", "digits"),
    )
    out = {
        f"{target} {p}": r[p]
        for target, r in res["targets"].items()
        for p in ("full", "knn", "few10")
        if r.get(p)
    }
    common.write_json(cache, out)
    return out


def recluster_cost(rounds: List[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """Extraction + clustering of a round over the wall time to the next round."""
    fractions = []
    for a, b in zip(rounds, rounds[1:]):
        if "unix_time" in a and "unix_time" in b and b["unix_time"] > a["unix_time"]:
            cost = a.get("extract_s", 0.0) + a.get("cluster_s", 0.0)
            fractions.append(cost / (b["unix_time"] - a["unix_time"]))
    if not fractions:
        return None
    return {"mean_fraction": sum(fractions) / len(fractions), "rounds": len(fractions)}


def compare(per_seed: Dict[int, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Paired differences per comparison, probe and layer."""
    return {
        label: paired_cells(
            {s: run["probes"][a] for s, run in per_seed.items()},
            {s: run["probes"][b] for s, run in per_seed.items()},
        )
        for label, a, b in COMPARISONS
    }


def paired_cells(a: Dict[int, Dict], b: Dict[int, Dict]) -> Dict[str, Any]:
    """a - b per "<probe> <layer>" cell, paired over the seeds both have
    (``probe_all`` results by seed)."""
    seeds = sorted(set(a) & set(b))
    cells = {}
    for probe in a[seeds[0]]:
        for layer in LAYERS:
            try:
                xs = [a[s][probe][layer] for s in seeds]
                ys = [b[s][probe][layer] for s in seeds]
            except KeyError:
                continue
            cells[f"{probe} {layer}"] = report.paired_difference(xs, ys)
    return cells


def format_ci(d: Any) -> str:
    """mean [95% CI] of a paired difference (the mean alone with one seed)."""
    if d.ci_low is None:
        return f"{d.diff:+.2f}"
    return f"{d.diff:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"


def markdown(result: Dict[str, Any], diffs: Dict[str, Dict[str, Any]]) -> str:
    lines = [f"# DeepCluster / DeeperCluster over seeds {result['seeds']}", ""]
    lines += common.header_lines(result["machine"])
    primary = " ".join(PRIMARY)
    lines += ["", f"## Primary probe ({primary}), paired differences", ""]
    lines += ["| comparison | mean [95% CI] |", "|---|---|"]
    for label, cells in diffs.items():
        d = cells.get(primary)
        lines.append(f"| {label} | {format_ci(d) if d else 'n/a'} |")
    lines += ["", "## Every probe and layer", ""]
    for label, cells in diffs.items():
        positive = sum(d.diff > 0 for d in cells.values())
        sure = sum(d.excludes_zero and d.diff > 0 for d in cells.values())
        lines += [
            f"### {label}: {positive} of {len(cells)} cells > 0 "
            f"({sure} with the 95% CI above 0)",
            "",
        ]
        lines += ["| probe layer | mean [95% CI] |", "|---|---|"]
        lines += [f"| {c} | {format_ci(d)} |" for c, d in cells.items()]
        lines.append("")
    lines += [
        "## Re-clustering cost",
        "",
        "Extraction + clustering of a round over the wall time from that round to the",
        "next (one epoch plus its re-clustering), mean over the rounds of each seed:",
        "",
    ]
    for method, costs in result["recluster_cost"].items():
        have = [c for c in costs if c]
        per_seed = ", ".join(
            f"{100 * c['mean_fraction']:.0f}% ({c['rounds']} rounds)" for c in have
        )
        mean = sum(c["mean_fraction"] for c in have) / max(1, len(have))
        lines.append(f"- {method}: {per_seed}; mean {100 * mean:.0f}%")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.retrain_check is not None:
        return retrain_check(args, args.retrain_check)
    t0 = time.time()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    per_seed: Dict[int, Dict[str, Any]] = {}
    for seed in seeds:
        run = train_seed(args, seed)
        run["probes"] = {m: probe_all(args, c) for m, c in run["checkpoints"].items()}
        per_seed[seed] = run
    diffs = compare(per_seed)
    costs = {
        m: [recluster_cost(per_seed[s]["rounds"][m]) for s in seeds]
        for m in ("deepcluster", "deepercluster")
    }
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "args": vars(args),
        "seeds": seeds,
        "per_seed": per_seed,
        "differences": {
            label: {c: d.as_dict() for c, d in cells.items()}
            for label, cells in diffs.items()
        },
        "recluster_cost": costs,
        "wall_s": round(time.time() - t0, 1),
    }
    common.write_json(common.results_path(args.name, "json"), result)
    md = markdown(result, diffs)
    common.write_text(common.results_path(args.name, "md"), md)
    print(md)
    return result


if __name__ == "__main__":
    main()
