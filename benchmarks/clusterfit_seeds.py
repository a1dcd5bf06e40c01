"""ClusterFit's self-supervised reproduction over seeds, pre-registered in
benchmarks/README.md ("Pre-registered: the self-supervised reproduction, 3 seeds").

Per seed s and pretext (RotNet, Jigsaw), on the first ``--images`` images of the seeded
Fashion-MNIST permutation (D_pre = D_cf, no labels): N_pre (``--epochs``), N_pre 2x
(twice the epochs), N_cf for each K of ``--ks`` (N_pre's res5 features, k-means seed s,
N_cf's SEED_VALUE ``ncf_seed(s)``, the same epochs as N_pre), and one random-init
trunk. Every checkpoint gets the control experiment's res5 probe
(``vissl_clusterfit.experiments.control.probe``: logistic regression on fixed res5 features, trained
on labelled train images, validated on train images outside D_pre, tested on the test
split) on Fashion-MNIST's 10 classes, the 4 kinds of tops and digits. N_cf's K is
chosen per (pretext, target, seed) on validation accuracy, never on test. Differences
are paired by seed: mean and 95% t interval.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.clusterfit_seeds --seeds 0,1,2

Writes results/<name>.{json,md}; finished stages and probes are reused when the same
command runs again (also after a kill), so the seeds can be run one at a time.
"""

import argparse
import time
from typing import Any, Dict, List, Optional

from benchmarks import common
from benchmarks.plugin import (
    FMNIST_PATH,
    Pipeline,
    PipelineSettings,
    cached_probe,
    control_report as cr,
)
from benchmarks.reproduction.settings import ints, names


TARGETS = ("fmnist10", "tops4", "digits10")
PRIMARY_TARGET = "fmnist10"
COMPARISONS = (  # (label, model a, model b): a - b, paired by seed
    ("N_cf - N_pre", "N_cf", "N_pre"),
    ("N_cf - N_pre 2x", "N_cf", "N_pre 2x"),
    ("N_pre 2x - N_pre", "N_pre 2x", "N_pre"),
    ("random init - N_pre", "random init", "N_pre"),
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.clusterfit_seeds",
        description=__doc__.split("\n\n")[0],
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pretexts", default="rotnet,jigsaw")
    ap.add_argument("--images", type=int, default=5000, help="D_pre = D_cf images")
    ap.add_argument("--epochs", type=int, default=6, help="N_pre and N_cf epochs")
    ap.add_argument("--ks", default="10,50,200", help="K sweep of N_cf")
    ap.add_argument("--probe-train", type=int, default=2000)
    ap.add_argument("--probe-val", type=int, default=1000)
    ap.add_argument("--probe-test", type=int, default=2000)
    ap.add_argument("--name", default="clusterfit_seeds")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not args.out:
        args.out = common.settings_work_dir("clusterfit_seeds", args, ("seeds",))
    return args


def train_seed(args: argparse.Namespace, seed: int) -> Dict[str, Dict[str, Any]]:
    """{model name: {"checkpoint", "pretexts", "k"}} of one seed (stages reused when
    finished)."""
    pipe = Pipeline(
        PipelineSettings(output_dir=f"{args.out}/seed{seed}", scale="cpu", seed=seed),
        [],
    )
    data = [f"config.DATA.TRAIN.DATA_LIMIT={args.images}"]
    epochs = f"config.OPTIMIZER.num_epochs={args.epochs}"
    models: Dict[str, Dict[str, Any]] = {}
    for p in names(args.pretexts):
        npre = pipe.train(
            f"npre_{p}", f"vissl_clusterfit/pretrain/{p}_fmnist_cpu", [*data, epochs]
        )
        models[f"N_pre {p}"] = dict(checkpoint=npre, pretexts=[p], model="N_pre")
        npre2x = pipe.train(
            f"npre2x_{p}",
            f"vissl_clusterfit/pretrain/{p}_fmnist_cpu",
            [*data, f"config.OPTIMIZER.num_epochs={2 * args.epochs}"],
        )
        models[f"N_pre 2x {p}"] = dict(
            checkpoint=npre2x, pretexts=[p], model="N_pre 2x"
        )
        for k in ints(args.ks):
            ncf = pipe.train(
                f"ncf_{p}_k{k}",
                f"vissl_clusterfit/clusterfit/ncf_{p}_fmnist_cpu",
                [
                    *data,
                    epochs,
                    f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
                    f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={k}",
                    f"config.VCF.CLUSTERFIT.SEED={seed}",
                ],
                from_npre_labels=True,
            )
            models[f"N_cf {p} K={k}"] = dict(
                checkpoint=ncf, pretexts=[p], model=f"N_cf K={k}", k=k
            )
    random = pipe.random_init_checkpoint()
    models["random init"] = dict(
        checkpoint=random, pretexts=names(args.pretexts), model="random init"
    )
    return models


def probe_settings(args: argparse.Namespace) -> Dict[str, Any]:
    return {
        "data_limit": args.images,
        "probe_train": args.probe_train,
        "probe_val": args.probe_val,
        "probe_test": args.probe_test,
        "data_path": FMNIST_PATH,
    }


def records_of(
    args: argparse.Namespace, seed: int, models: Dict[str, Dict[str, Any]]
) -> List[Dict[str, Any]]:
    """One record per (model, pretext, target) in control_report's layout (``variant``
    = the pretext, ``p`` = 0: no labels)."""
    out = []
    for m in models.values():
        cache = m["checkpoint"] + ".probe_res5.json"
        probed, _ = cached_probe(m["checkpoint"], TARGETS, probe_settings(args), cache)
        for p in m["pretexts"]:
            for t in TARGETS:
                r = probed[t]
                out.append(
                    dict(variant=p, p=0, seed=seed, target=t, model=m["model"],
                         k=m.get("k"), val=r["val"], test=r["test"])  # fmt: skip
                )
    return out


def summarise(records: List[Dict[str, Any]], pretexts: List[str]) -> Dict[str, Any]:
    """Chosen K per cell, the paired comparisons and the hypotheses' verdicts."""
    recs = cr.with_chosen_k(records)
    diffs = {
        f"{p} {t} {label}": cr.compare(recs, a, b, variant=p, target=t)
        for p in pretexts
        for t in TARGETS
        for label, a, b in COMPARISONS
    }
    chosen = {
        f"{p} {t}": cr.by_seed(recs, "k", model="N_cf", variant=p, target=t)
        for p in pretexts
        for t in TARGETS
    }
    hyps = [
        (
            f"H{i + 1} (primary): {p} N_cf - N_pre > 0 on {PRIMARY_TARGET}",
            diffs[f"{p} {PRIMARY_TARGET} N_cf - N_pre"],
        )  # fmt: skip
        for i, p in enumerate(pretexts)
    ]
    return {"records": recs, "differences": diffs, "chosen_k": chosen, "hyps": hyps}


def markdown(result: Dict[str, Any], s: Dict[str, Any]) -> str:
    recs, pretexts = s["records"], result["pretexts"]
    lines = [f"# ClusterFit, self-supervised N_pre, seeds {result['seeds']}", ""]
    lines += common.header_lines(result["machine"], [f"args: `{result['args']}`"])
    lines += ["", "## Pre-registered hypotheses (95% CI of the paired difference)", ""]
    lines += ["| hypothesis | mean [95% CI] (n) | verdict |", "|---|---|---|"]
    lines += [f"| {h} | {cr.fmt_diff(d)} | {cr.verdict(d)} |" for h, d in s["hyps"]]
    lines += ["", "## Paired differences, test top-1 (points)", ""]
    lines += [
        "| pretext | target | comparison | mean [95% CI] (n) |",
        "|---|---|---|---|",
    ]
    for key, d in s["differences"].items():
        p, t, label = key.split(" ", 2)
        lines.append(f"| {p} | {t} | {label} | {cr.fmt_diff(d)} |")
    lines += ["", "## Test top-1 per model (mean ± sd over seeds)", ""]
    models = ["random init", "N_pre", "N_pre 2x", "N_cf"]
    models += sorted({r["model"] for r in recs if r["model"].startswith("N_cf K=")},
                     key=lambda m: int(m.split("=")[1]))  # fmt: skip
    lines += ["| pretext | model | " + " | ".join(TARGETS) + " |"]
    lines += ["|---|---|" + "---|" * len(TARGETS)]
    for p in pretexts:
        for m in models:
            cells = [
                cr.mean_sd(cr.by_seed(recs, model=m, variant=p, target=t))
                for t in TARGETS
            ]
            lines.append(f"| {p} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "N_cf = the K of the best validation accuracy per seed:", ""]
    lines += [f"- {cell}: {ks}" for cell, ks in s["chosen_k"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    t0 = time.time()
    seeds = ints(args.seeds)
    records: List[Dict[str, Any]] = []
    checkpoints: Dict[int, Dict[str, str]] = {}
    for seed in seeds:
        models = train_seed(args, seed)
        checkpoints[seed] = {n: m["checkpoint"] for n, m in models.items()}
        records += records_of(args, seed, models)
        print(f"[clusterfit_seeds] seed {seed} trained and probed", flush=True)
    s = summarise(records, names(args.pretexts))
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "args": vars(args),
        "seeds": seeds,
        "pretexts": names(args.pretexts),
        "checkpoints": checkpoints,
        "records": s["records"],
        "differences": s["differences"],
        "chosen_k": s["chosen_k"],
        "hypotheses": [{"hypothesis": h, **(d or {}), "verdict": cr.verdict(d)}
                       for h, d in s["hyps"]],  # fmt: skip
        "wall_s": round(time.time() - t0, 1),
    }
    common.write_json(common.results_path(args.name, "json"), result)
    md = markdown(result, s)
    common.write_text(common.results_path(args.name, "md"), md)
    print(md)
    return result


if __name__ == "__main__":
    main()
