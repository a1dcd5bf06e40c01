"""DeepCluster and DeeperCluster vs a randomly initialised network of the same
architecture (issue 4's acceptance check), layer by layer.

- **DeepCluster** (thesis Ch. 3-4): ``deepcluster/deepcluster_fmnist_cpu`` (Sobel input,
  K clusters, re-clustering every epoch) against a random trunk with the same Sobel stem.
- **DeeperCluster** (ICCV 2019 Sec. 4): ``deepcluster/deepercluster_fmnist_cpu``
  initialised, as in the paper, from a RotNet trained here first
  (``pretrain/rotnet_fmnist_cpu``, ``--rotnet-epochs``); against a random trunk (RGB
  input) and against the RotNet it started from.

Probes per layer: VISSL's linear probe (``linear_fmnist_cpu``: ``--eval-images``
labelled train images, all 10k test images) and ``probe_checkpoint.py``'s k-NN and few-label
logistic regression (10 / 100 labels per class) on Fashion-MNIST and digits.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.deepcluster_vs_random                  # both methods
    .venv/bin/python -m benchmarks.deepcluster_vs_random --methods deepcluster --epochs 6

Writes results/<name>.{json,md} (default name deepcluster_vs_random). Checkpoints go to
a work dir named after the settings and are reused when the same command runs again.
"""

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional

from benchmarks import common, probe_checkpoint
from benchmarks.plugin import LAYERS, Pipeline, PipelineSettings, accuracy_table


SOBEL = ["config.MODEL.TRUNK.VCF_RESNET.SOBEL=true"]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.deepcluster_vs_random",
        description=__doc__.split("\n\n")[0],
    )
    ap.add_argument("--methods", default="deepcluster,deepercluster")
    ap.add_argument(
        "--images", type=int, default=5000, help="unlabelled training images"
    )
    ap.add_argument("--epochs", type=int, default=15, help="DeepCluster epochs")
    ap.add_argument("--k", type=int, default=100, help="DeepCluster K")
    ap.add_argument("--deeper-epochs", type=int, default=6, help="DeeperCluster epochs")
    ap.add_argument(
        "--groups", type=int, default=4, help="DeeperCluster m (level-1 groups)"
    )
    ap.add_argument(
        "--sub", type=int, default=10, help="DeeperCluster k (clusters per group)"
    )
    ap.add_argument(
        "--rotnet-epochs", type=int, default=6, help="RotNet init of DeeperCluster"
    )
    ap.add_argument("--eval-images", type=int, default=5000)
    ap.add_argument("--eval-epochs", type=int, default=3)
    ap.add_argument("--no-probes", action="store_true", help="VISSL linear probes only")
    ap.add_argument("--probe-images", type=int, default=5000)
    ap.add_argument("--name", default="deepcluster_vs_random")
    ap.add_argument(
        "--out",
        default="",
        help="work dir (default: one per setting under "
        "benchmarks/_work/deepcluster_vs_random/, so a rerun reuses only its own stages)",
    )
    args = ap.parse_args(argv)
    if not args.out:
        args.out = common.settings_work_dir(
            "deepcluster_vs_random", args, ("no_probes",)
        )
    return args


def deeper_overrides(args: argparse.Namespace, rotnet: str) -> List[str]:
    m, k = args.groups, args.sub
    return [
        f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={rotnet}",
        f"config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS={m}",
        f"config.VCF.DEEPCLUSTER.DEEPER.NUM_SUB={k}",
        f"config.DATA.TRAIN.COLLATE_FUNCTION_PARAMS.num_sub_classes={k}",
        "config.MODEL.HEAD.PARAMS=[[vcf_hierarchical_head,{in_dim:128,"
        f"num_super_classes:{4 * m},num_sub_classes:{k}}}]]",
        f"config.LOSS.vcf_hierarchical_loss.num_super_classes={4 * m}",
        f"config.LOSS.vcf_hierarchical_loss.num_sub_classes={k}",
    ]


def rounds_of(folder: str) -> List[Dict[str, Any]]:
    path = os.path.join(folder, "deepcluster_rounds.jsonl")
    return [json.loads(l) for l in open(path)] if os.path.isfile(path) else []


def probe(args: argparse.Namespace, ckpt: str) -> Dict[str, Any]:
    res = probe_checkpoint.probe_checkpoint(
        ckpt,
        None,
        targets=("fmnist", "digits"),
        n_train=args.probe_images,
        n_test=args.probe_images,
        shots=(10, 100),
        draws=3,
        full_label=(),
    )
    out = {}
    for target, r in res["targets"].items():
        for p in ("knn", "few10", "few100"):
            if r.get(p):  # None when a class has fewer train images than the shots
                out[f"{target} {p}"] = r[p]
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    t0 = time.time()
    settings = PipelineSettings(
        output_dir=args.out,
        eval_train_limit=args.eval_images,
        eval_test_limit=-1,
        eval_epochs=args.eval_epochs,
        scale="cpu",
    )
    pipe = Pipeline(settings, [])
    data = [f"config.DATA.TRAIN.DATA_LIMIT={args.images}"]
    models: Dict[str, str] = {}
    groups: Dict[str, List[str]] = {}
    rounds: Dict[str, List[Dict[str, Any]]] = {}
    sobel: List[str] = []  # models with the Sobel stem (their probes need it too)
    if "deepcluster" in methods:
        dc = pipe.train(
            "deepcluster",
            "vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
            [
                *data,
                f"config.OPTIMIZER.num_epochs={args.epochs}",
                f"config.VCF.DEEPCLUSTER.NUM_CLUSTERS={args.k}",
            ],
        )
        models[f"DeepCluster K={args.k}, {args.epochs} ep"] = dc
        models["random init (Sobel)"] = pipe.random_init_checkpoint(
            SOBEL, name="random_init_sobel"
        )
        groups["deepcluster"] = sobel = list(models)[-2:]
        rounds["deepcluster"] = rounds_of(os.path.dirname(dc))
    if "deepercluster" in methods:
        rot = pipe.train(
            "rotnet",
            "vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            [*data, f"config.OPTIMIZER.num_epochs={args.rotnet_epochs}"],
        )
        deeper = pipe.train(
            "deepercluster",
            "vissl_clusterfit/deepcluster/deepercluster_fmnist_cpu",
            [
                *data,
                f"config.OPTIMIZER.num_epochs={args.deeper_epochs}",
                *deeper_overrides(args, rot),
            ],
        )
        names = [
            f"DeeperCluster m={args.groups} k={args.sub}, {args.deeper_epochs} ep (from RotNet)",
            f"RotNet, {args.rotnet_epochs} ep (its init)",
            "random init",
        ]
        models.update(
            zip(names, [deeper, rot, pipe.random_init_checkpoint(name="random_init")])
        )
        groups["deepercluster"] = names
        rounds["deepercluster"] = rounds_of(os.path.dirname(deeper))

    linear = {
        label: pipe.linear_eval(
            "linear_" + _slug(label), ckpt, extra=SOBEL if label in sobel else []
        )
        for label, ckpt in models.items()
    }
    probe_results = (
        {}
        if args.no_probes
        else {label: probe(args, ckpt) for label, ckpt in models.items()}
    )
    tables = {}
    for method, labels in groups.items():
        tables[method] = {
            "VISSL linear probe, full labels": accuracy_table(
                {l: linear[l] for l in labels}
            )
        }
        for p in sorted({p for l in labels for p in probe_results.get(l, {})}):
            tables[method][p] = accuracy_table({l: probe_results[l][p] for l in labels})
    out = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "args": vars(args),
        "checkpoints": models,
        "linear_top1": linear,
        "probes": probe_results,
        "gains_vs_random": gains(groups, linear, probe_results),
        "rounds": rounds,
        "stage_time_s": pipe.timings,
        "wall_s": round(time.time() - t0, 1),
    }
    common.write_json(common.results_path(args.name, "json"), out)
    md = markdown(out, tables)
    common.write_text(common.results_path(args.name, "md"), md)
    print(md)
    return out


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")[:40]


def gains(
    groups: Dict[str, List[str]], linear: Dict[str, Any], probe_results: Dict[str, Any]
) -> Dict[str, Any]:
    """Method minus its random init, per probe and layer, and how many cells are > 0."""
    out = {}
    for method, labels in groups.items():
        trained, rnd = labels[0], labels[-1]
        probes_ = {"linear": (linear[trained], linear[rnd])}
        for p in probe_results.get(trained, {}):
            probes_[p] = (probe_results[trained][p], probe_results[rnd][p])
        diffs = {
            p: {l: round(a[l] - b[l], 2) for l in LAYERS if l in a and l in b}
            for p, (a, b) in probes_.items()
        }
        cells = [v for d in diffs.values() for v in d.values()]
        out[method] = {
            "diff": diffs,
            "cells_better": sum(v > 0 for v in cells),
            "cells": len(cells),
        }
    return out


def markdown(out: Dict[str, Any], tables: Dict[str, Dict[str, str]]) -> str:
    lines = [
        "# DeepCluster / DeeperCluster vs random init (Fashion-MNIST, digits; top-1 %)",
        "",
        *common.header_lines(out["machine"], [f"wall time: {out['wall_s']} s"]),
        "",
    ]
    for method, t in tables.items():
        g = out["gains_vs_random"][method]
        lines += [
            f"## {method}",
            "",
            f"Better than random init in {g['cells_better']} of {g['cells']} (probe, layer) cells.",
            "",
        ]
        for title, table in t.items():
            lines += [f"### {title}", "", table, ""]
        lines += [
            "Cluster rounds (NMI vs the unused labels, NMI with the previous round):",
            "",
        ]
        lines += [
            f"- epoch {r['epoch']}: NMI {r.get('nmi', float('nan')):.3f}, NMI prev "
            f"{r.get('nmi_previous', float('nan')):.3f}, empty {int(r.get('num_empty', 0))}"
            for r in out["rounds"].get(method, [])
        ] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
