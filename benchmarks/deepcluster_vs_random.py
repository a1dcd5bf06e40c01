#!/usr/bin/env python3
"""DeepCluster (or DeeperCluster) vs a randomly initialised network of the same
architecture: layer-wise linear probes on Fashion-MNIST (issue 4's acceptance check).

    python benchmarks/deepcluster_vs_random.py --images 5000 --epochs 6 --k 100

Trains config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu (Sobel input), probes
it and a random-init trunk with the same Sobel stem via linear_fmnist_cpu, prints the
table and writes results/deepcluster_vs_random.{json,md}.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info  # noqa: E402

from vissl_clusterfit.pipeline import Pipeline, PipelineSettings  # noqa: E402
from vissl_clusterfit.report import accuracy_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--eval-images", type=int, default=5000)
    ap.add_argument("--eval-epochs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/_work/deepcluster_vs_random")
    args = ap.parse_args()
    t0 = time.time()
    settings = PipelineSettings(
        output_dir=args.out, eval_train_limit=args.eval_images, eval_test_limit=-1,
        eval_epochs=args.eval_epochs, scale="cpu",
    )
    sobel = ["config.MODEL.TRUNK.VCF_RESNET.SOBEL=true"]
    pipe = Pipeline(settings, sobel)
    dc = pipe.train(
        "deepcluster", "vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
        [f"config.DATA.TRAIN.DATA_LIMIT={args.images}", f"config.OPTIMIZER.num_epochs={args.epochs}",
         f"config.VCF.DEEPCLUSTER.NUM_CLUSTERS={args.k}"],
    )
    rnd = pipe.random_init_checkpoint(extra_overrides=sobel)
    results = {
        f"DeepCluster K={args.k}": pipe.linear_eval("linear_deepcluster", dc),
        "random init (Sobel)": pipe.linear_eval("linear_random_sobel", rnd),
    }
    rounds = [json.loads(l) for l in open(os.path.join(args.out, "deepcluster", "deepcluster_rounds.jsonl"))]
    table = accuracy_table(results)
    print(table)
    out = {
        "command": " ".join([sys.executable] + sys.argv), "machine": machine_info(),
        "args": vars(args), "linear_top1": results, "rounds": rounds,
        "stage_time_s": pipe.timings, "wall_s": round(time.time() - t0, 1),
    }
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/deepcluster_vs_random.json", "w") as f:
        json.dump(out, f, indent=2, default=str)
    with open("benchmarks/results/deepcluster_vs_random.md", "w") as f:
        f.write(f"# DeepCluster vs random init (linear probes, Fashion-MNIST top-1 %)\n\n"
                f"- command: `{out['command']}`\n- wall time: {out['wall_s']} s\n\n{table}\n\n"
                "Cluster rounds (NMI vs the unused labels, NMI with the previous round):\n\n"
                + "\n".join(f"- epoch {r['epoch']}: NMI {r.get('nmi', float('nan')):.3f}, "
                            f"NMI prev {r.get('nmi_previous', float('nan')):.3f}, empty {int(r['num_empty'])}"
                            for r in rounds) + "\n")


if __name__ == "__main__":
    main()
