"""Training throughput of N_pre and N_cf through VISSL on this machine, and what limits it.

For each model (RotNet N_pre, Jigsaw N_pre, N_cf) on the CPU configs:

1. **VISSL end to end**: a short training run of ``tools/run_distributed_engines.py``
   (``--images`` images, 1 epoch, default hooks); images/s from VISSL's own batch time
   (``btime(ms)`` of its log hook, mean over the logged iterations after the first 5).
   Source images per second: a RotNet image is one input (VISSL's ImgRotatePil applies
   one random rotation per image), a Jigsaw image 9 patch inputs.
2. **Decomposition, in-process, same config**: the VISSL dataloader alone (read, decode,
   transforms, collate; ``NUM_DATALOADER_WORKERS`` of the config), the model step alone
   (forward, loss, backward, SGD step on a batch already in memory), and their sum
   against (1). The larger of the two is the limit.
3. **Profiles**: ``torch.profiler`` top operators of the model step and ``cProfile``
   top functions of the dataloader, in the results file.

N_cf trains on K cluster ids; its cost does not depend on where the labels come from, so
the throughput run uses the data source's own labels in their place (no N_pre needed).

Example (from the repository root)::

    .venv/bin/python -m benchmarks.training_throughput           # ~5 min on 2 cores
    .venv/bin/python -m benchmarks.training_throughput --models rotnet --images 1024

Writes results/training_throughput.{json,md}.
"""

import argparse
import cProfile
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import torch

from benchmarks.common import ROOT, WORK_DIR, machine_info, write_results
from benchmarks.plugin import compose_config
from benchmarks.report import print_table


MODELS = {
    # name: (config, extra overrides, inputs per source image)
    "rotnet": (
        "vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
        [],
        1,
    ),  # ImgRotatePil: 1 random rotation per image
    "jigsaw": ("vissl_clusterfit/pretrain/jigsaw_fmnist_cpu", [], 9),
    "ncf": (
        "vissl_clusterfit/clusterfit/ncf_fmnist_cpu",
        [
            "config.VCF.CLUSTERFIT.ENABLED=false",
            "config.DATA.TRAIN.LABEL_SOURCES=[vcf_fashion_mnist]",
            "config.DATA.TRAIN.LABEL_PATHS=[/usr/share/datasets/fashion-mnist]",
        ],
        1,
    ),
}
BTIME = re.compile(r"iter: (\d+);.*btime\(ms\): (\d+)")


def vissl_run(name: str, images: int, threads: int) -> Dict[str, Any]:
    config, extra, _ = MODELS[name]
    out = os.path.join(WORK_DIR, "training_throughput", name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "run_distributed_engines.py"),
        f"config={config}",
        *extra,
        f"config.DATA.TRAIN.DATA_LIMIT={images}",
        "config.OPTIMIZER.num_epochs=1",
        "config.LOG_FREQUENCY=1",
        f"config.CHECKPOINT.DIR={out}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"VISSL run of {name} failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    btimes = [
        int(m.group(2))
        for m in map(BTIME.search, open(os.path.join(out, "log.txt")))
        if m
    ]
    # btime is VISSL's running mean over the phase; its last value covers every iteration
    return {
        "wall_s": round(wall, 1),
        "btime_ms": btimes[-1] if btimes else None,
        "iterations": len(btimes),
    }


def _loader(cfg: Any) -> Any:
    """VISSL's train dataloader for ``cfg`` (built before any timing: building the
    dataset, e.g. Jigsaw's permutation set, is start-up, not per-batch cost)."""
    from vissl.data import build_dataloader, build_dataset

    dataset = build_dataset(cfg, "TRAIN")
    loader = build_dataloader(
        dataset=dataset,
        dataset_config=cfg.DATA.TRAIN,
        num_dataloader_workers=cfg.DATA.NUM_DATALOADER_WORKERS,
        pin_memory=False,
        multi_processing_method=cfg.MULTI_PROCESSING_METHOD,
        device=torch.device("cpu"),
        sampler_seed=0,
    )
    return loader


def _take(loader: Any, n: int) -> List[Any]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def decompose(name: str, images: int, steps: int) -> Dict[str, Any]:
    from classy_vision.losses import build_loss
    from vissl.models import build_model

    config, extra, _ = MODELS[name]
    _, cfg = compose_config(
        [
            f"config={config}",
            *extra,
            f"config.DATA.TRAIN.DATA_LIMIT={images}",
            f"config.CHECKPOINT.DIR={os.path.join(WORK_DIR, 'training_throughput', 'decompose')}",
        ],
        dump_config=False,
    )
    # data alone (timed without the profiler, whose overhead inflates Python-heavy
    # transforms), then a few batches again under cProfile for the breakdown
    loader = _loader(cfg)
    _take(loader, 1)  # warm-up
    t0 = time.time()
    batches = _take(loader, steps + 1)
    data_s = (time.time() - t0) / len(batches)
    prof = cProfile.Profile()
    prof.enable()
    _take(loader, min(5, steps))
    prof.disable()
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("cumulative").print_stats(12)
    # model step alone on batches in memory
    model = build_model(cfg.MODEL, cfg.OPTIMIZER).train()
    loss_cfg = cfg.LOSS[
        cfg.LOSS.name
    ]  # as VISSL's SelfSupervisionTask._build_loss does
    loss_cfg["name"] = cfg.LOSS.name
    loss_fn = build_loss(loss_cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(batch: Dict[str, Any]) -> None:
        out = model(batch["data"][0])
        loss = loss_fn(out, batch["label"][0])
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    times = []
    for b in batches[1:]:
        t = time.time()
        step(b)
        times.append(time.time() - t)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
        step(batches[1])
    ops = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return {
        "batch_inputs": int(batches[0]["data"][0].shape[0]),
        "data_s_per_batch": round(data_s, 4),
        "model_s_per_batch": round(statistics.median(times), 4),
        "profile_model_ops": ops,
        "profile_data_functions": stream.getvalue(),
        "dataloader_workers": int(cfg.DATA.NUM_DATALOADER_WORKERS),
    }


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.training_throughput",
        description=__doc__.split("\n\n")[0],
    )
    ap.add_argument("--models", default="rotnet,jigsaw,ncf")
    ap.add_argument("--images", type=int, default=4096, help="images of the VISSL run")
    ap.add_argument(
        "--steps", type=int, default=20, help="batches timed in the decomposition"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--name", default="training_throughput", help="results stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    rows, data = [], {}
    for name in [m for m in args.models.split(",") if m]:
        print(f"[throughput] {name}: VISSL run on {args.images} images", flush=True)
        run = vissl_run(name, args.images, args.threads)
        print(f"[throughput] {name}: decomposition ({args.steps} batches)", flush=True)
        dec = decompose(name, args.images, args.steps)
        per_input = MODELS[name][2]
        batch = dec["batch_inputs"]
        images_per_batch = batch / per_input
        vissl_img_s = (
            images_per_batch / (run["btime_ms"] / 1000) if run["btime_ms"] else None
        )
        sum_s = dec["data_s_per_batch"] + dec["model_s_per_batch"]
        rows.append(
            {
                "model": name,
                "inputs/batch": batch,
                "images/batch": int(images_per_batch),
                "VISSL img/s": round(vissl_img_s, 1) if vissl_img_s else None,
                "VISSL inputs/s": (
                    round(vissl_img_s * per_input, 1) if vissl_img_s else None
                ),
                "VISSL ms/batch": run["btime_ms"],
                "data ms/batch": round(1000 * dec["data_s_per_batch"], 1),
                "model ms/batch": round(1000 * dec["model_s_per_batch"], 1),
                "data+model / VISSL": (
                    round(1000 * sum_s / run["btime_ms"], 2)
                    if run["btime_ms"]
                    else None
                ),
                "limit": (
                    "data"
                    if dec["data_s_per_batch"] > dec["model_s_per_batch"]
                    else "model"
                ),
            }
        )
        data[name] = {"vissl_run": run, **dec}
    cols = list(rows[0])
    print_table(
        rows, cols, "training throughput (CPU configs, width-16 ResNet-18, 28x28)"
    )
    notes = [
        "VISSL img/s = source images per second from VISSL's mean batch time (btime) of a "
        f"1-epoch run on {args.images} images; data and model are timed separately in-process.",
        "data+model / VISSL near 1: VISSL adds little on top of the two; the larger of data "
        "and model is what limits training.",
        "Top operators and functions: see profile_model_ops / profile_data_functions in the JSON.",
    ]
    write_results(
        args.name,
        machine,
        [{"title": "throughput", "columns": cols, "rows": rows}],
        {"args": vars(args), "models": data},
        notes,
        "Training throughput",
    )
    return data


if __name__ == "__main__":
    main()
