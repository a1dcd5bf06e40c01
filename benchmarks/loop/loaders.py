"""Loaders on an ImageFolder-style folder for ``benchmarks.train_loop --phase-folder``:
VISSL's train loader with a stage's transforms and torchvision's ``ImageFolder``
(iterator creation with worker start, first batch, steady rate)."""

import argparse
import os
import time
from typing import Any, Dict, List

import torch

from benchmarks import ceilings
from benchmarks.loop.config import compose


def time_vissl_loader(
    args: argparse.Namespace,
    device: torch.device,
    folder: str,
    deadline: float,
    stage: str,
) -> Dict[str, Any]:
    """VISSL's train DataLoader for the ``stage``'s transforms on ``folder``
    (``disk_folder``), the config's workers and start method, pinned memory; timed on
    the DataLoader itself (the trainer wraps it for asynchronous copies to the device,
    whose ``iter()`` also loads the first batch)."""
    from vissl.data import build_dataloader, build_dataset

    cfg = compose(
        args,
        device,
        [
            "config.CHECKPOINT.DIR=/tmp/vcf_unused",
            "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
            "config.DATA.TRAIN.LABEL_SOURCES=[disk_folder]",
            f"config.DATA.TRAIN.DATA_PATHS=[{folder}]",
            f"config.DATA.TRAIN.LABEL_PATHS=[{folder}]",
            "config.DATA.TRAIN.DATASET_NAMES=[vcf_folder]",
            *(
                [f"config.DATA.NUM_DATALOADER_WORKERS={args.folder_workers}"]
                if args.folder_workers >= 0
                else []
            ),
        ],
        stage,
    )
    dataset = build_dataset(cfg, "TRAIN")
    loader = build_dataloader(
        dataset=dataset,
        dataset_config=cfg.DATA.TRAIN,
        num_dataloader_workers=cfg.DATA.NUM_DATALOADER_WORKERS,
        pin_memory=cfg.DATA.PIN_MEMORY and device.type == "cuda",
        multi_processing_method=cfg.MULTI_PROCESSING_METHOD,
        device=torch.device("cpu"),  # the plain DataLoader, no device wrapper
        sampler_seed=0,
    )
    t0 = time.perf_counter()
    it = iter(loader)
    t1 = time.perf_counter()
    first = next(it)
    t2 = time.perf_counter()
    n = 0
    for batch in it:
        n += len(batch["data"][0])
        if n >= args.folder_batches * args.batch or time.perf_counter() > deadline:
            break
    t3 = time.perf_counter()
    del it
    return {
        "loader": f"VISSL, {stage} train transforms",
        "workers": int(cfg.DATA.NUM_DATALOADER_WORKERS),
        "start_method": cfg.MULTI_PROCESSING_METHOD,
        "batch_size": len(first["data"][0]),
        "iter_s": round(t1 - t0, 3),
        "first_batch_s": round(t2 - t1, 3),
        "steady_images": n,
        "steady_img_s": round(n / (t3 - t2), 1) if n else None,
    }


def time_folder(
    args: argparse.Namespace, device: torch.device, folder: str, deadline: float
) -> List[Dict[str, Any]]:
    rows = []
    for stage in filter(None, args.folder_stages.split(",")):
        try:
            rows.append(time_vissl_loader(args, device, folder, deadline, stage))
        except Exception as e:
            rows.append({"loader": f"VISSL, {stage}", "status": f"failed: {e!r}"})
    try:
        rows.append(time_imagefolder(args, folder))
    except Exception as e:
        rows.append({"loader": "ImageFolder", "status": f"failed: {e!r}"})
    return rows


def time_imagefolder(args: argparse.Namespace, folder: str) -> Dict[str, Any]:
    """torchvision's ``ImageFolder`` with the extraction's transforms
    (``ceilings.loader_rate``), same workers and batch."""
    workers = (
        args.folder_workers if args.folder_workers >= 0 else (os.cpu_count() or 2) - 1
    )
    out = ceilings.loader_rate(folder, workers, args.batch, crop=args.crop)
    return {
        "loader": "ImageFolder (extraction transforms)",
        "workers": workers,
        "start_method": "fork",
        "batch_size": args.batch,
        "iter_s": None,
        "first_batch_s": out["first_batch_s"],  # iterator creation included
        "steady_images": out["images"],
        "steady_img_s": out["steady_img_s"],
    }
