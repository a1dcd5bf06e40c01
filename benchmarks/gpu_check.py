"""The GPU check (issue 21): one command that runs the project on a GPU and measures
it against plain-PyTorch ceilings in the same run.

    PYTHON=python3 bash scripts/gpu_check.sh            # on a GPU machine: < 6 min on one H200
    python -m benchmarks.gpu_check --cpu --out /tmp/c   # what a CPU can check (~1 min)

Sections, each in its own process with its own timeout (a slow or failing section
loses nothing else), results written after every section (and inside the ceilings
section after every figure) to ``<out>.json`` and ``<out>.md``:

- folder: a synthetic ImageNet-style JPEG folder (benchmarks/synthetic_folder.py).
- ceilings: the ``ImageFolder`` loader with the extraction's transforms at the
  extraction's worker count (and at VISSL's 5), ResNet-50 inference (fp32 and bf16 +
  channels_last, batch 256), ResNet-50 train steps (the presets' batches and precisions).
- in1k: ``pipeline.preset=resnet50_in1k_1gpu`` (or ``--in1k-preset``) on the folder,
  every stage (N_pre, clustering + N_cf, VISSL's linear benchmark), 1 epoch each.
- fmnist: the Fashion-MNIST ``*_gpu`` pipeline, short schedule.
- kmeans: ``python -m benchmarks.kmeans_gpu`` when that module exists.

The stage figures come from the stages' logs (``PhaseTimerHook`` and extraction lines)
and are read by this process after each section, so a section killed at its timeout
still reports the stages it finished. Without a GPU (or with ``--cpu``) it says so and
checks what a CPU can: imports, config composition, the folder generator and the
ceilings at tiny size; it exits 0 unless one of those fails.
"""

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from benchmarks.common import RESULTS_DIR, machine_info
from benchmarks.gpu_check_report import collect_pipeline, markdown, summarize


GPU_SECTIONS = ("folder", "ceilings", "in1k", "fmnist", "kmeans")
CPU_SECTIONS = ("imports", "configs", "folder", "ceilings")
TIMEOUTS_S = {
    "folder": 60,
    "ceilings": 120,
    "in1k": 240,
    "fmnist": 150,
    "kmeans": 180,
    "imports": 120,
    "configs": 180,
}
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="the project's GPU check (issue 21)")
    p.add_argument("--out", default="", help="results prefix (<out>.json / .md)")
    p.add_argument("--work", default="/tmp/vcf_gpu_check", help="scratch folder")
    p.add_argument("--cpu", action="store_true", help="the no-GPU path, even on a GPU")
    p.add_argument("--sections", default="", help="comma list (default: all)")
    p.add_argument("--budget-s", type=float, default=345.0, help="whole-run limit")
    p.add_argument("--timeouts", default="", help="e.g. in1k=300,fmnist=100")
    # the synthetic folder
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--val-per-class", type=int, default=25)
    p.add_argument("--image-size", type=int, default=320)
    # ceilings
    p.add_argument("--loader-workers", default="auto,5", help="auto = CPUs - 1")
    p.add_argument("--loader-batch", type=int, default=128, help="as the extraction")
    p.add_argument("--infer", default="256:fp32,256:bf16_cl", help="batch:precision")
    p.add_argument("--train", default="32:fp32,256:fp32,256:bf16_cl,512:bf16_cl")
    p.add_argument("--crop", type=int, default=224, help="model input size")
    p.add_argument("--min-s", type=float, default=2.0, help="seconds per figure")
    p.add_argument("--max-iters", type=int, default=0, help="0 = no limit")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per figure")
    # the pipelines
    p.add_argument("--scale", default="gpu", help="pipeline.scale of in1k / fmnist")
    p.add_argument("--in1k-preset", default="resnet50_in1k_1gpu")
    p.add_argument("--in1k-epochs", type=int, default=1)
    p.add_argument("--in1k-clusters", type=int, default=100)
    p.add_argument("--fmnist-limit", type=int, default=20000, help="-1 = all 60k")
    p.add_argument("--fmnist-epochs", type=int, default=1)
    p.add_argument("--fmnist-eval-limit", type=int, default=20000)
    p.add_argument("--section", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def tiny(args: argparse.Namespace) -> argparse.Namespace:
    """The CPU path's sizes: seconds, not minutes, on two cores."""
    return argparse.Namespace(
        **dict(
            vars(args),
            classes=2,
            train_per_class=16,  # one batch of VISSL's ResNet-50 configs (32)
            val_per_class=2,
            in1k_clusters=4,
            fmnist_limit=256,
            fmnist_eval_limit=256,
            image_size=64,
            loader_workers="2",
            loader_batch=4,
            infer="2:fp32",
            train="2:bf16_cl",  # the bf16 + channels_last path is the one at risk
            crop=32,
            min_s=0.0,
            max_iters=1,
            warmup=0,
        )
    )


# ----------------------------------------------------------------------- sections


class Partial:
    """A section's results, rewritten to its JSON file after every figure."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: Dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        write_atomic(self.path, json.dumps(self.data, indent=2, default=str))


def write_atomic(path: str, text: str) -> None:
    """``text`` appears at ``path`` complete or not at all (a killed section leaves
    its last complete write)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def folder_root(args: argparse.Namespace) -> str:
    return os.path.join(args.work, "images")


def auto_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return max(1, (cpus or os.cpu_count() or 2) - 1)


def section_folder(args: argparse.Namespace, out: Partial) -> None:
    from benchmarks.synthetic_folder import make_image_folder

    t0 = time.time()
    root = make_image_folder(
        folder_root(args),
        args.classes,
        args.train_per_class,
        args.val_per_class,
        args.image_size,
    )
    out.put("root", root)
    out.put("images", args.classes * (args.train_per_class + args.val_per_class))
    out.put("seconds", round(time.time() - t0, 1))


def _pairs(spec: str) -> List[tuple]:
    out = []
    for item in filter(None, spec.split(",")):
        batch, _, precision = item.partition(":")
        out.append((int(batch), precision or "fp32"))
    return out


def section_ceilings(args: argparse.Namespace, out: Partial) -> None:
    import torch

    from benchmarks import ceilings

    device = torch.device(
        "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    )
    torch.backends.cudnn.benchmark = True
    timing = ceilings.Timing(args.min_s, args.warmup, args.max_iters or None)
    loaders = []
    for w in args.loader_workers.split(","):
        workers = auto_workers() if w == "auto" else int(w)
        log(f"ImageFolder loader, {workers} workers")
        loaders.append(
            ceilings.loader_rate(
                os.path.join(folder_root(args), "train"),
                workers,
                args.loader_batch,
                crop=args.crop,
            )
        )
        out.put("loader", loaders)
    models = (
        ("inference", "inference", args.infer, ceilings.resnet50_inference),
        ("train", "train step", args.train, ceilings.resnet50_train),
    )
    for key, label, spec, measure in models:
        figures = []
        for batch, precision in _pairs(spec):
            log(f"ResNet-50 {label}, batch {batch}, {precision}")
            fig = ceilings.ModelFigure(batch, precision, args.crop, timing)
            figures.append(measure(device, fig))
            out.put(key, figures)
    out.put("device", str(device))


def _run_pipeline(argv: List[str], out: Partial) -> None:
    from benchmarks.plugin import pipeline_main

    report = pipeline_main(argv)
    out.put(
        "report",
        {k: report.get(k) for k in ("linear_top1", "stage_time_s", "total_time_s")},
    )


def section_in1k(args: argparse.Namespace, out: Partial) -> None:
    e = args.in1k_epochs
    _run_pipeline(
        [
            f"pipeline.output_dir={os.path.join(args.work, 'in1k')}",
            f"pipeline.preset={args.in1k_preset}",
            f"pipeline.data=folder:{folder_root(args)}",
            f"pipeline.scale={args.scale}",
            f"pipeline.epochs={e}",
            f"pipeline.eval_epochs={e}",
            f"pipeline.num_clusters={args.in1k_clusters}",
            # VISSL's ResNet-50 schedules (multistep at epochs 30, 60, 90, 100) refuse
            # runs shorter than their number of values: a constant learning rate, at
            # the value VISSL's auto_lr_scaling gives (lr.value is set from base_value)
            "config.OPTIMIZER.param_schedulers.lr.name=constant",
        ],
        out,
    )


def section_fmnist(args: argparse.Namespace, out: Partial) -> None:
    e = args.fmnist_epochs
    _run_pipeline(
        [
            f"pipeline.output_dir={os.path.join(args.work, 'fmnist')}",
            "pipeline.preset=fmnist",
            f"pipeline.scale={args.scale}",
            f"pipeline.data_limit={args.fmnist_limit}",
            f"pipeline.epochs={e}",
            f"pipeline.eval_epochs={e}",
            f"pipeline.eval_train_limit={args.fmnist_eval_limit}",
        ],
        out,
    )


def section_imports(args: argparse.Namespace, out: Partial) -> None:
    import torch
    import torchvision
    import vissl
    from vissl.trainer.train_steps import get_train_step

    from benchmarks import plugin  # the package's names the other sections use

    get_train_step(plugin.PRECISION_STEP_NAME)  # registered with VISSL
    out.put(
        "versions",
        {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "vissl": getattr(vissl, "__version__", "?"),
            "vissl_clusterfit": getattr(plugin.vissl_clusterfit, "__version__", "?"),
        },
    )


def section_configs(args: argparse.Namespace, out: Partial) -> None:
    """Compose every stage config the GPU sections run (as the pipeline does) and
    record the settings this issue is about."""
    from benchmarks.gpu_check_report import config_facts
    from benchmarks.plugin import PRESETS, compose_config

    facts = {}
    for preset in ("fmnist", "resnet50_in1k", args.in1k_preset):
        p = PRESETS[preset]
        options = p.group_options.get("gpu", ())
        group = [f"+vissl_clusterfit_defaults=[{','.join(options)}]"] if options else []
        for kind in ("npre", "ncf", "linear"):
            name = getattr(p, f"{kind}_config").format(
                p="rotnet", scale="gpu", target="fmnist"
            )
            # one process, as the sections' pipeline runs (pipeline.num_proc=1): the
            # learning rate follows the global batch
            _, cfg = compose_config(
                [
                    f"config={name}",
                    *group,
                    "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
                    "config.CHECKPOINT.DIR=/tmp/vcf_unused",
                ],
                dump_config=False,
            )
            facts[f"{preset} {kind}"] = config_facts(cfg)
            out.put("configs", facts)
    if os.path.isdir(FMNIST_DIR):
        out.put("fmnist_files", sorted(os.listdir(FMNIST_DIR)))


SECTIONS = {
    "folder": section_folder,
    "ceilings": section_ceilings,
    "in1k": section_in1k,
    "fmnist": section_fmnist,
    "imports": section_imports,
    "configs": section_configs,
}


# ----------------------------------------------------------------------- orchestration


def _stream(proc: subprocess.Popen, name: str, tail: collections.deque) -> None:
    for raw in proc.stdout:  # type: ignore[union-attr]
        line = raw.decode(errors="replace").rstrip()
        tail.append(line)
        print(f"[{time.strftime('%H:%M:%S')} {name}] {line}", flush=True)


def run_child(cmd: List[str], name: str, timeout: float) -> Dict[str, Any]:
    """Run ``cmd`` in its own process group; kill the group at ``timeout``."""
    t0 = time.time()
    tail: collections.deque = collections.deque(maxlen=40)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    reader = threading.Thread(target=_stream, args=(proc, name, tail), daemon=True)
    reader.start()
    status = "ok"
    try:
        rc: Optional[int] = proc.wait(timeout=timeout)
        if rc != 0:
            status = "failed"
    except subprocess.TimeoutExpired:
        status, rc = "timeout", None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5)
    return {
        "status": status,
        "returncode": rc,
        "seconds": round(time.time() - t0, 1),
        "timeout_s": round(timeout),
        "output_tail": list(tail) if status != "ok" or name == "kmeans" else [],
    }


def run_section(
    name: str, argv: List[str], args: argparse.Namespace, timeout: float
) -> Dict[str, Any]:
    if name == "kmeans":
        if not os.path.isfile(os.path.join(os.getcwd(), "benchmarks", "kmeans_gpu.py")):
            return {"status": "skipped", "reason": "benchmarks/kmeans_gpu.py absent"}
        cmd = [sys.executable, "-m", "benchmarks.kmeans_gpu"]
        return run_child(cmd, name, min(timeout, 180))
    path = os.path.join(args.work, f"{name}.json")
    if os.path.exists(path):
        os.remove(path)
    if name in ("in1k", "fmnist"):
        shutil.rmtree(os.path.join(args.work, name), ignore_errors=True)
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", *argv, "--section", name]
    result = run_child(cmd, name, timeout)
    if os.path.isfile(path):
        with open(path) as f:
            result["figures"] = json.load(f)
    if name in ("in1k", "fmnist"):
        result["stages"] = collect_pipeline(os.path.join(args.work, name))
    return result


def environment(gpu: bool) -> Dict[str, Any]:
    import torch

    info = machine_info()
    info["git_commit"] = os.environ.get("VCF_GIT_COMMIT") or info["git_commit"]
    info["cuda"] = torch.version.cuda
    if gpu:
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    if os.path.isdir("/dev/shm"):  # the loaders' batches travel through it
        info["dev_shm_gib"] = round(shutil.disk_usage("/dev/shm").total / 2**30, 1)
    for mod in ("torchvision", "vissl", "classy_vision", "hydra", "omegaconf"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # a missing stack is itself a finding
            info[mod] = f"unavailable ({type(e).__name__})"
    return info


def write_results(out: str, results: Dict[str, Any]) -> None:
    # a bug in the summary or the table must not cost the figures (nor the sections
    # still to run): the JSON is written whatever happens
    try:
        results["summary"] = summarize(results)
    except Exception as e:
        results["summary"] = {"targets": [], "error": f"{type(e).__name__}: {e}"}
    try:
        md = markdown(results)
    except Exception as e:
        md = (
            f"# GPU check\n\nthe table failed ({type(e).__name__}: {e}); see the JSON\n"
        )
    text = json.dumps(results, indent=2, default=str) + "\n"
    write_atomic(out + ".json", text)
    write_atomic(out + ".md", md)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if args.section:
        os.makedirs(args.work, exist_ok=True)
        part = Partial(os.path.join(args.work, f"{args.section}.json"))
        SECTIONS[args.section](tiny(args) if args.cpu else args, part)
        return 0
    t_start = time.time()
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    out = args.out or os.path.join(RESULTS_DIR, "gpu_check" if gpu else "gpu_check_cpu")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    if not gpu:
        log("no GPU here (or --cpu): checking what a CPU can, at tiny sizes")
        argv = [*argv, "--cpu"]  # the sections' processes take the tiny sizes too
    # --sections: these, in this order (e.g. a CPU dry run of the pipeline sections:
    # --cpu --scale cpu --sections folder,in1k)
    order = [s for s in args.sections.split(",") if s] or list(
        GPU_SECTIONS if gpu else CPU_SECTIONS
    )
    unknown = [s for s in order if s not in TIMEOUTS_S]
    if unknown:
        raise SystemExit(f"--sections: unknown {unknown}; known: {sorted(TIMEOUTS_S)}")
    timeouts = dict(TIMEOUTS_S)
    for item in filter(None, args.timeouts.split(",")):
        key, _, value = item.partition("=")
        timeouts[key] = float(value)
    results: Dict[str, Any] = {
        "mode": "gpu" if gpu else "cpu (no GPU: tiny sizes, no figures to compare)",
        "settings": {k: v for k, v in vars(args).items() if k != "section"},
        "environment": environment(gpu),
        "sections": {},
    }
    write_results(out, results)
    failed = []
    for name in order:
        left = args.budget_s - (time.time() - t_start)
        timeout = min(timeouts[name], left)
        if timeout < 20:
            log(f"{name}: skipped ({left:.0f}s of the budget left)")
            results["sections"][name] = {"status": "skipped", "reason": "budget"}
            write_results(out, results)
            continue
        log(f"{name}: starting (timeout {timeout:.0f}s)")
        try:
            result = run_section(name, argv, args, timeout)
        except Exception as e:  # reading a section back failed: keep going
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        results["sections"][name] = result
        results["wall_time_s"] = round(time.time() - t_start, 1)
        write_results(out, results)
        log(f"{name}: {result['status']} in {result.get('seconds', 0)}s")
        if result["status"] in ("failed", "timeout"):
            failed.append(name)
    log(f"done in {time.time() - t_start:.0f}s; results: {out}.json, {out}.md")
    for row in results["summary"].get("targets", []):
        log(
            f"{row['what']}: {row['measured']} vs {row['ceiling']} "
            f"(ratio {row['ratio']}, target {row['target']}): {row['met']}"
        )
    # on a GPU every section reports, failed or not; without one, a failed check is
    # a broken install or config, which the suite's test must see
    return 1 if failed and not gpu else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
