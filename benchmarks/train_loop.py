"""Where VISSL's train step loses time (issue 21, item 3): steady img/s of one model,
batch and precision, in one process, through a plain PyTorch step and through VISSL's own
training loop with and without the per-step extras VISSL and the plugin add.

On one H200 VISSL's loop reached 0.28-0.41x of a plain ResNet-50 step (N_cf 1,916 img/s,
N_pre RotNet 1,307 vs 4,650; benchmarks/README.md, gpu_check.py). The modes (``MODES``):

- ``plain``, ``plain_nobench``: a plain SGD step (``ceilings.sgd_train_step``) on VISSL's
  model for the N_cf config (trunk + K-way head from VISSL's ``build_model``), with and
  without cuDNN autotuning (``torch.backends.cudnn.benchmark``; VISSL never sets it).
- ``plain_torchvision``: the same step on torchvision's ResNet-50 (gpu_check's ceiling).
- ``vissl_cached``: VISSL's ``SelfSupervisionTrainer.train()`` on the N_cf stage's config
  as the pipeline runs it (``pipeline.preset=resnet50_in1k_1gpu``: the plugin's
  ``hook_generator``, ``vcf_precision_train_step``, the config's meters and logging),
  fed one of VISSL's own batches, already on the device, every step (no loader cost).
- ``vissl_cached_{bench,nometers,nohooks,perfstats}``: one change each (cuDNN
  autotuning on; ``METERS.enable_training_meter`` off; no hooks at all; VISSL's
  ``PERF_STATS`` timers on: forward / loss / backward / optimizer / read_sample ms).
- ``vissl_cached_bare``: no hooks, no meters, autotuning on (VISSL's step itself).
- ``vissl_synthetic`` (``_perfstats``): VISSL's loop with its ``synthetic`` data source
  through the config's transforms, workers, pinning and asynchronous device copies.

Each mode: ``--warmup`` untimed steps, ``--steps`` timed (device synchronised at both
ends), ``--profile-steps`` under ``torch.profiler`` (top operators, device busy time).
``--phase-folder DIR`` also times loaders on an ImageFolder-style folder
(``DIR/<class>/*``): VISSL's train loader with the stage's transforms and
torchvision's ``ImageFolder`` (iterator creation, first batch, steady rate).
Results are written after every mode (``--out``/``<name>.{json,md}``); ``--max-s``
bounds the run (a mode that would start too late is skipped, a timed window is cut).

    python -m benchmarks.train_loop --device cpu --dry --out /tmp/tl   # ~1 min on 2 cores
    python -m benchmarks.train_loop --precision bf16_cl --batch 256 --out OUT \\
        --name train_loop_h200_bf16_cl                                # on the GPU
"""

import argparse
import dataclasses
import gc
import os
import shutil
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

import torch

from benchmarks import ceilings
from benchmarks.loop.config import MODES, Mode, compose, head_classes, mode_config
from benchmarks.loop.loaders import time_folder
from benchmarks.loop.probe import LoopProbe, Plan, StepClock, describe_batch, run_plain
from benchmarks.loop.report import write
from benchmarks.plugin import hook_generator


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", default="bf16_cl", choices=ceilings.PRECISIONS)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--modes", default=",".join(MODES), help="comma list, run in order")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--num-clusters", type=int, default=100, help="K of N_cf's head")
    p.add_argument("--preset", default="resnet50_in1k_1gpu")
    p.add_argument("--stage", default="ncf", choices=("ncf", "npre"), help="its config")
    p.add_argument("--pretext", default="rotnet", help="rotnet | jigsaw (the config)")
    p.add_argument("--crop", type=int, default=224, help="model input size")
    p.add_argument("--synthetic-size", type=int, default=224, help="synthetic images")
    p.add_argument("--tv-arch", default="resnet50", help="plain_torchvision's model")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes (~1 min)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--max-s", type=float, default=150.0, help="whole-run limit")
    p.add_argument("--min-mode-s", type=float, default=8.0, help="skip a mode below")
    p.add_argument("--phase-folder", default="", help="ImageFolder-style folder")
    p.add_argument("--folder-workers", type=int, default=-1, help="-1: the config's")
    p.add_argument("--folder-batches", type=int, default=12)
    p.add_argument("--folder-stages", default="ncf,npre", help="VISSL loaders timed")
    p.add_argument("--out", default="", help="results folder (default results/)")
    p.add_argument("--name", default="", help="results stem (train_loop_<precision>)")
    p.add_argument("--work", default="", help="scratch folder (default: a temp dir)")
    args = p.parse_args(argv)
    if args.dry:
        args.device = "cpu"
        args.batch, args.crop, args.synthetic_size = 4, 32, 40
        args.warmup, args.steps, args.profile_steps = 2, 3, 1
        args.folder_batches, args.min_mode_s = 3, 1.0
        args.tv_arch = "resnet18"
        # one thread: on a shared 2-core machine OpenMP's spinning threads slow a
        # 2-thread step down 20x
        args.threads = args.threads or 1
    unknown = [m for m in args.modes.split(",") if m and m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; known: {', '.join(MODES)}")
    args.name = args.name or f"train_loop_{args.precision}" + (
        "_dry" if args.dry else ""
    )
    return args


def log(msg: str) -> None:
    print(f"[train_loop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_plain_mode(
    args: argparse.Namespace, device: torch.device, mode: Mode, clock: StepClock
) -> Dict[str, Any]:
    from vissl.models import build_model

    torch.manual_seed(0)
    cfg = compose(args, device, ["config.CHECKPOINT.DIR=/tmp/vcf_unused"])
    classes = head_classes(cfg)
    if mode.loop == "torchvision":
        model = ceilings.torchvision_resnet(device, args.precision, args.tv_arch)
        model.fc = torch.nn.Linear(model.fc.in_features, classes).to(device)
    else:
        model = build_model(cfg.MODEL, cfg.OPTIMIZER).to(device)
        if args.precision == "bf16_cl":
            model = model.to(memory_format=torch.channels_last)
    x = ceilings.model_inputs(device, args.batch, args.crop, args.precision)
    y = torch.randint(0, classes, (args.batch,), device=device)
    step = ceilings.sgd_train_step(model, x, y, device, args.precision)
    return dict(run_plain(step, clock, args.batch), input=describe_batch({"input": x}))


class VisslRunner:
    """VISSL's trainer in this process, as its ``train`` engine builds it for one
    process (environment, seeds, one process group for every mode)."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.run_id: Optional[str] = None

    def run(
        self,
        args: argparse.Namespace,
        device: torch.device,
        mode: Mode,
        clock: StepClock,
    ) -> Dict[str, Any]:
        from vissl.trainer import SelfSupervisionTrainer
        from vissl.utils.env import set_env_vars
        from vissl.utils.logger import setup_logging
        from vissl.utils.misc import get_dist_run_id, set_seeds

        ckpt_dir = tempfile.mkdtemp(prefix="ckpt_", dir=self.work)
        try:
            cfg = mode_config(args, device, mode, ckpt_dir)
            if self.run_id is None:
                setup_logging(__name__, output_dir=self.work, rank=0)
                self.run_id = get_dist_run_id(cfg, 1)
            set_env_vars(local_rank=0, node_id=0, cfg=cfg)
            set_seeds(cfg, 0)
            hooks = hook_generator(cfg) if mode.hooks else []
            probe = LoopProbe(clock, cached=mode.data == "cached")
            trainer = SelfSupervisionTrainer(
                cfg, self.run_id, None, ckpt_dir, [*hooks, probe]
            )
            trainer.train()
            out = clock.result(args.batch)
            out["hook_names"] = [type(h).__name__ for h in hooks]
            out["input"] = probe.batch_seen
            out["workers"] = int(cfg.DATA.NUM_DATALOADER_WORKERS)
            if probe.perf_stats:
                out["vissl_timers"] = probe.perf_stats
            return out
        finally:
            shutil.rmtree(ckpt_dir, ignore_errors=True)


def run_mode(
    name: str,
    args: argparse.Namespace,
    device: torch.device,
    deadline: float,
    vissl: VisslRunner,
) -> Dict[str, Any]:
    mode = MODES[name]
    torch.backends.cudnn.benchmark = mode.bench
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plan = Plan(args.warmup, args.steps, args.profile_steps)
    clock = StepClock(device, plan, deadline)
    t0 = time.perf_counter()
    try:
        if mode.loop == "vissl":
            out = vissl.run(args, device, mode, clock)
        else:
            out = run_plain_mode(args, device, mode, clock)
        out["status"] = "ok" if "img_s" in out else "no timed steps"
    except Exception as e:
        out = {"status": f"failed: {type(e).__name__}: {e}"}
        out["traceback"] = traceback.format_exc().splitlines()[-25:]
    finally:
        clock.close()
    out["mode_s"] = round(time.perf_counter() - t0, 1)
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(dataclasses.asdict(mode), **out)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    from benchmarks.gpu_check import environment

    t_start = time.perf_counter()
    args = parse_args(argv)
    deadline = t_start + args.max_s
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    machine = environment(device.type == "cuda")
    work = args.work or tempfile.mkdtemp(prefix="vcf_train_loop_")
    os.makedirs(work, exist_ok=True)
    modes: Dict[str, Dict[str, Any]] = {}
    folder_rows: List[Dict[str, Any]] = []
    if args.phase_folder:
        log(f"loaders on {args.phase_folder}")
        folder_rows = time_folder(args, device, args.phase_folder, deadline)
        write(args, machine, modes, folder_rows)
    vissl = VisslRunner(work)
    for name in filter(None, args.modes.split(",")):
        left = deadline - time.perf_counter()
        if left < args.min_mode_s:
            log(f"{name}: skipped ({left:.0f} s of --max-s left)")
            modes[name] = dict(dataclasses.asdict(MODES[name]), status="skipped")
            continue
        log(f"{name}: {MODES[name].what}")
        modes[name] = run_mode(name, args, device, deadline, vissl)
        m = modes[name]
        log(f"{name}: {m['status']}, {m.get('img_s')} img/s in {m['mode_s']} s")
        paths = write(args, machine, modes, folder_rows)
    paths = write(args, machine, modes, folder_rows)
    if vissl.run_id is not None:
        from benchmarks.plugin import shutdown_process_group

        shutdown_process_group()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.perf_counter() - t_start:.0f} s: {paths['md']}")
    return {"modes": modes, "folder": folder_rows, "paths": paths}


if __name__ == "__main__":
    main()
