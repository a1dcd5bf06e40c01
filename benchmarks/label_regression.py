"""Label files are bit-identical across a refactor: the ``vcf_cluster`` engine on the
demo's ClusterFit settings (RotNet N_pre config, res5, K=50, 8,000 Fashion-MNIST
training images, 2,000 test images assigned) with both k-means backends, and the
sha256 of every label file it writes.

The N_pre is an untrained, seeded RotNet trunk (``torch.manual_seed(0)``), so the check
needs no training; ``NITER=20`` is pinned (the default when the record was made).

    .venv/bin/python -m benchmarks.label_regression                    # print hashes
    .venv/bin/python -m benchmarks.label_regression --compare results/label_regression.json

``--compare`` exits 1 when a hash differs from the recorded ``after`` run.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

from benchmarks import common


OVERRIDES = [
    "config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu",
    "config.VCF.CLUSTERFIT.NUM_CLUSTERS=50",
    "config.VCF.CLUSTERFIT.NITER=20",
    "config.DATA.TRAIN.DATA_LIMIT=8000",
    "config.VCF.CLUSTERFIT.ASSIGN_TEST=true",
    "config.DATA.TEST.DATA_LIMIT=2000",
]


def untrained_npre(folder: str) -> str:
    """A seeded (0), untrained RotNet trunk in VISSL's checkpoint layout: the pipeline's
    random-init baseline (``Pipeline.random_init_checkpoint``)."""
    from benchmarks import plugin

    settings = plugin.PipelineSettings(output_dir=folder, scale="cpu", seed=0)
    return plugin.Pipeline(settings, []).random_init_checkpoint()


def run(out: str, npre: str, backend: str) -> Dict[str, str]:
    folder = os.path.join(out, backend)
    cmd = [
        sys.executable,
        os.path.join(common.ROOT, "tools", "run_distributed_engines.py"),
        "engine_name=vcf_cluster",
        *OVERRIDES,
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
        f"config.VCF.CLUSTERFIT.KMEANS_BACKEND={backend}",
        f"config.CHECKPOINT.DIR={folder}",
    ]
    with open(os.path.join(out, f"{backend}.log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    labels = os.path.join(folder, "clusterfit")
    return {
        f"{backend}/{name}": hashlib.sha256(
            open(os.path.join(labels, name), "rb").read()
        ).hexdigest()
        for name in sorted(os.listdir(labels))
        if name.endswith(".npy")
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.label_regression")
    ap.add_argument("--compare", default="")
    ap.add_argument("--out", default=os.path.join(common.WORK_DIR, "label_regression"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    npre = untrained_npre(os.path.join(args.out, "npre"))
    hashes: Dict[str, str] = {}
    for backend in ("faiss", "distributed"):
        hashes.update(run(args.out, npre, backend))
    print(json.dumps({"commit": common.git_commit(), "sha256": hashes}, indent=2))
    if not args.compare:
        return 0
    recorded = json.load(open(args.compare))["after"]["sha256"]
    different = sorted(k for k in recorded if hashes.get(k) != recorded[k])
    print("identical to the record" if not different else f"DIFFERENT: {different}")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
