"""ClusterFit's self-supervised reproduction over seeds, with a random-N_pre control,
pre-registered in benchmarks/README.md ("Pre-registered: the self-supervised
reproduction, 10 seeds, with a random-N_pre control"; the 3-seed run before it:
"Pre-registered: the self-supervised reproduction, 3 seeds").

Per seed s and pretext (RotNet, Jigsaw), on the first ``--images`` images of the seeded
Fashion-MNIST permutation (D_pre = D_cf, no labels): N_pre (``--epochs``), N_pre 2x
(twice the epochs), N_cf for each K of ``--ks`` (N_pre's res5 features, k-means seed s,
N_cf's SEED_VALUE ``ncf_seed(s)``, the same epochs as N_pre), and one random-init
trunk (torch seed s). The control arm ``N_cf(random N_pre)``: N_cf for each K trained,
by the same rules, on the clusters of that random-init trunk's res5 features; it asks
whether N_cf's gain comes from N_pre or from cluster-and-retrain itself. Every
checkpoint gets the control experiment's res5 probe
(``vissl_clusterfit.experiments.control.probe``: logistic regression on fixed res5
features, trained on labelled train images, validated on train images outside D_pre,
tested on the test split) on Fashion-MNIST's 10 classes, the 4 kinds of tops and digits. Each N_cf family's K is chosen per
(pretext, target, seed) on validation accuracy, never on test; ``--fixed-k`` is the
secondary analysis without that choice. Differences are paired by seed: mean and 95%
t interval (``benchmarks.seeds.analysis``).

Example (from the repository root; the pre-registered run)::

    .venv/bin/python -m benchmarks.clusterfit_seeds --seeds 0,1,2,3,4,5,6,7,8,9 \
        --reuse benchmarks/results/clusterfit_seeds_3seeds.json

Resumable seed by seed: finished stages and probes are reused, and a finished seed
(``benchmarks.seeds.store``) is never recomputed, also after a kill. After every
finished seed, results/<name>.{json,md} are rewritten from the seeds finished so far
(an interim report has no verdicts); ``--report-only`` writes them without training.
"""

import argparse
import time
from typing import Any, Dict, List, Optional, Tuple

from benchmarks import common
from benchmarks.plugin import FMNIST_PATH, Pipeline, PipelineSettings, cached_probe
from benchmarks.reproduction.settings import ints, names
from benchmarks.seeds import analysis, render, store
from benchmarks.seeds.analysis import RANDOM_NCF, TARGETS


RANDOM_NCF_CONFIG = "vissl_clusterfit/clusterfit/ncf_fmnist_cpu"  # = ncf_{p}_fmnist_cpu
# but for the label files' NAME: N_cf's training does not depend on the pretext


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.clusterfit_seeds",
        description=__doc__.split("\n\n")[0],
    )
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="pre-registered")
    ap.add_argument("--pretexts", default="rotnet,jigsaw")
    ap.add_argument("--images", type=int, default=5000, help="D_pre = D_cf images")
    ap.add_argument("--epochs", type=int, default=6, help="N_pre and N_cf epochs")
    ap.add_argument("--ks", default="10,50,200", help="K sweep of N_cf")
    ap.add_argument("--probe-train", type=int, default=2000)
    ap.add_argument("--probe-val", type=int, default=1000)
    ap.add_argument("--probe-test", type=int, default=2000)
    ap.add_argument("--fixed-k", type=int, default=50, help="the secondary analysis")
    ap.add_argument(
        "--reuse",
        default="",
        help="an earlier results json of this benchmark: its seeds keep its records "
        "of the arms it has when every setting matches (benchmarks.seeds.store)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the finished seeds; train nothing",
    )
    ap.add_argument("--name", default="clusterfit_seeds")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.fixed_k not in ints(args.ks):
        raise ValueError(
            f"--fixed-k {args.fixed_k} is not in --ks {args.ks}: the fixed-K analysis "
            "reads N_cf trained at that K"
        )
    if not args.out:  # options that change no trained stage do not change the folder
        ignore = ("seeds", "fixed_k", "reuse", "report_only")
        args.out = common.settings_work_dir("clusterfit_seeds", args, ignore)
    return args


def train_seed(
    args: argparse.Namespace, seed: int, existing_arms: bool = True
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, float]]:
    """({model name: {"checkpoint", "pretexts", "model", "k"}}, stage wall times in s)
    of one seed (stages reused when finished). ``existing_arms=False``: only the random
    init and the random-N_pre arm (the rest is reused from an earlier run)."""
    pipe = Pipeline(
        PipelineSettings(output_dir=f"{args.out}/seed{seed}", scale="cpu", seed=seed),
        [],
    )
    data = [f"config.DATA.TRAIN.DATA_LIMIT={args.images}"]
    epochs = f"config.OPTIMIZER.num_epochs={args.epochs}"

    def ncf(stage: str, config: str, npre: str, k: int) -> str:
        over = [
            f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
            f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={k}",
            f"config.VCF.CLUSTERFIT.SEED={seed}",
        ]
        return pipe.train(stage, config, [*data, epochs, *over], from_npre_labels=True)

    models: Dict[str, Dict[str, Any]] = {}
    for p in names(args.pretexts) if existing_arms else []:
        npre_config = f"vissl_clusterfit/pretrain/{p}_fmnist_cpu"
        npre = pipe.train(f"npre_{p}", npre_config, [*data, epochs])
        models[f"N_pre {p}"] = dict(checkpoint=npre, pretexts=[p], model="N_pre")
        npre2x = pipe.train(
            f"npre2x_{p}",
            npre_config,
            [*data, f"config.OPTIMIZER.num_epochs={2 * args.epochs}"],
        )
        models[f"N_pre 2x {p}"] = dict(
            checkpoint=npre2x, pretexts=[p], model="N_pre 2x"
        )
        for k in ints(args.ks):
            models[f"N_cf {p} K={k}"] = dict(
                checkpoint=ncf(
                    f"ncf_{p}_k{k}",
                    f"vissl_clusterfit/clusterfit/ncf_{p}_fmnist_cpu",
                    npre,
                    k,
                ),
                pretexts=[p],
                model=f"N_cf K={k}",
                k=k,
            )
    random = pipe.random_init_checkpoint()
    every = names(args.pretexts)
    models["random init"] = dict(checkpoint=random, pretexts=every, model="random init")
    for k in ints(args.ks):
        models[f"{RANDOM_NCF} K={k}"] = dict(
            checkpoint=ncf(f"ncf_random_k{k}", RANDOM_NCF_CONFIG, random, k),
            pretexts=every,
            model=f"{RANDOM_NCF} K={k}",
            k=k,
        )
    return models, pipe.timings


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


def run_seed(
    args: argparse.Namespace, seed: int, reuse: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    """Train and probe one seed (the arms ``reuse`` lacks, or all), then mark it
    finished; returns its records file's content."""
    t0 = time.time()
    old = store.reused_records(reuse, seed, names(args.pretexts), ints(args.ks))
    models, stage_times = train_seed(args, seed, existing_arms=old is None)
    records = records_of(args, seed, models)
    reused_from = None
    if old is not None and reuse is not None:
        store.check_same_probe(old, records, "random init", reuse["path"])
        records = [r for r in old if r["model"] != "random init"] + records
        reused_from = {k: reuse[k] for k in ("path", "commit", "date")}
    payload = {
        "seed": seed,
        "commit": common.git_commit(),
        "reused_from": reused_from,
        "checkpoints": {n: m["checkpoint"] for n, m in models.items()},
        "stage_time_s": stage_times,
        "wall_s": round(time.time() - t0, 1),
        "records": records,
    }
    store.save_finished(args.out, seed, payload)
    print(
        f"[clusterfit_seeds] seed {seed} finished in {payload['wall_s']:.0f}s",
        flush=True,
    )
    return payload


def write_report(args: argparse.Namespace) -> Dict[str, Any]:
    """results/<name>.{json,md} from the seeds of ``--seeds`` finished so far."""
    seeds = ints(args.seeds)
    done = store.load_finished(args.out, seeds)
    if not done:
        raise FileNotFoundError(
            f"no seed of {seeds} is finished in {args.out} (no seed<s>/records.json): "
            "run without --report-only first, with the same settings"
        )
    records = [r for s in sorted(done) for r in done[s]["records"]]
    summary = analysis.summarise(records, names(args.pretexts), args.fixed_k)
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "args": vars(args),
        "seeds": seeds,
        "seeds_finished": sorted(done),
        "complete": sorted(done) == sorted(seeds),
        "pretexts": names(args.pretexts),
        "fixed_k": args.fixed_k,
        "sources": {
            s: {k: done[s][k] for k in ("commit", "reused_from")} for s in sorted(done)
        },
        "stage_time_s": {s: done[s]["stage_time_s"] for s in sorted(done)},
        "checkpoints": {s: done[s]["checkpoints"] for s in sorted(done)},
        "records": summary["records"],
        "differences": summary["differences"],
        "chosen_k": summary["chosen_k"],
        "k_counts": summary["k_counts"],
        "hypotheses": {
            key: [
                {
                    "hypothesis": h,
                    **(d or {}),
                    "verdict": analysis.verdict(
                        d, sorted(done) == sorted(seeds), len(seeds)
                    ),
                }
                for h, d in rows
            ]
            for key, rows in summary["hyps"].items()
        },
    }
    common.write_json(common.results_path(args.name, "json"), result)
    md = render.markdown(result, summary)
    common.write_text(common.results_path(args.name, "md"), md)
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    reuse = store.read_reuse(args.reuse, args) if args.reuse else None
    if not args.report_only:
        for seed in ints(args.seeds):
            if store.load_finished(args.out, [seed]):
                print(
                    f"[clusterfit_seeds] seed {seed}: finished before, reused",
                    flush=True,
                )
                continue
            run_seed(args, seed, reuse)
            write_report(args)  # the seeds finished so far, after every seed
    result = write_report(args)
    print(common.results_path(args.name, "md"), flush=True)
    return result


if __name__ == "__main__":
    main()
