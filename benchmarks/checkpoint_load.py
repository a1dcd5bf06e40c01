"""Checkpoint load time: VISSL's init-weights path with classy-vision's upstream
``broadcast_object`` vs the plugin's patched one (``vissl_clusterfit.compat.patches``).

VISSL initialises a model from ``MODEL.WEIGHTS_INIT.PARAMS_FILE`` with
``CheckpointLoader.load_and_broadcast_init_weights`` -> classy-vision's
``load_and_broadcast_checkpoint`` -> ``torch.load`` on rank 0 + ``broadcast_object``. Upstream
``broadcast_object`` builds ``torch.ByteTensor(memoryview)``, a byte-by-byte copy through
Python, even with one process. This script saves a ResNet-50 trunk in VISSL's checkpoint
layout and times, in a gloo process group (file:// init, as VISSL's training sets one up):

- plain ``torch.load`` of the file,
- VISSL's load path with the upstream ``broadcast_object``,
- VISSL's load path with the patched one,
- ``broadcast_object`` alone (upstream / patched) on the loaded checkpoint,

``--repeats`` times each (rounds interleaved, so load drift on the machine hits every
method alike), and reports the median. Every loaded checkpoint is compared tensor by
tensor with the saved one.

The upstream and the patched function are swapped in for the calls being compared
(importing the plugin patches them process-wide); the timer is a plain clock around each
call.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.checkpoint_load                 # ResNet-50, 1 process
    .venv/bin/python -m benchmarks.checkpoint_load --world-size 2  # + a receiving rank
    .venv/bin/python -m benchmarks.checkpoint_load --quick         # small trunk, seconds

Writes benchmarks/results/checkpoint_load.{json,md} (``--quick``: checkpoint_load_quick).
"""

# The upstream function must be captured before vissl_clusterfit (which patches it) is
# imported anywhere in this process; spawned ranks re-run this module's top, so they
# capture it the same way.
import classy_vision.generic.distributed_util as _du  # isort: skip

UPSTREAM_BROADCAST_OBJECT = _du.broadcast_object  # isort: skip

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, Iterator, List, Optional  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import plugin  # noqa: E402  (imports vissl_clusterfit: patches it)
from benchmarks.measure import median  # noqa: E402
from benchmarks.report import print_table  # noqa: E402


METHODS = (
    "torch.load",
    "vissl load, upstream broadcast_object",
    "vissl load, patched broadcast_object",
    "broadcast_object alone, upstream",
    "broadcast_object alone, patched",
)


def check_upstream_captured() -> None:
    fn = UPSTREAM_BROADCAST_OBJECT
    upstream_module = "classy_vision.generic.distributed_util"
    if fn is plugin.patched_broadcast_object or fn.__module__ != upstream_module:
        raise RuntimeError(
            "the upstream broadcast_object was not captured before vissl_clusterfit patched "
            f"it (got {fn.__module__}.{fn.__name__}): run it as "
            "`python -m benchmarks.checkpoint_load` from the repository root"
        )


@contextlib.contextmanager
def broadcast_impl(fn: Callable[..., Any]) -> Iterator[None]:
    """Make every module VISSL's load path goes through call ``fn`` as broadcast_object."""
    import classy_vision.generic.util as cu
    import vissl.utils.checkpoint as vc

    modules = [m for m in (_du, cu, vc) if hasattr(m, "broadcast_object")]
    saved = [m.broadcast_object for m in modules]
    for m in modules:
        m.broadcast_object = fn
    try:
        yield
    finally:
        for m, old in zip(modules, saved):
            m.broadcast_object = old


def build_trunk(model: str) -> torch.nn.Module:
    from vissl.models.trunks import get_model_trunk

    if model == "resnet50":
        # VISSL's own RotNet ResNet-50 config: MODEL.TRUNK = resnet, depth 50
        overrides = ["config=pretrain/rotnet/rotnet_8gpu_resnet"]
    else:  # "small": the plugin's width-16 ResNet-18 (quick runs)
        overrides = ["config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu"]
    _, cfg = plugin.compose_config(overrides, dump_config=False)
    torch.manual_seed(0)
    name = cfg.MODEL.TRUNK.NAME
    return get_model_trunk(name)(cfg.MODEL, name)


def trunk_of(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    return checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]


def same_tensors(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and torch.equal(a[k], b[k])
        for k in a
    )


def worker(
    rank: int, world: int, path: str, repeats: int, init_file: str, out_dir: str
) -> None:
    from vissl.utils.checkpoint import CheckpointLoader

    check_upstream_captured()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    cpu = torch.device("cpu")
    reference = trunk_of(torch.load(path, map_location="cpu", weights_only=False))

    def vissl_load() -> Dict[str, Any]:
        return CheckpointLoader.load_and_broadcast_init_weights(
            checkpoint_path=path, device=cpu
        )

    def upstream() -> Dict[str, Any]:
        with broadcast_impl(UPSTREAM_BROADCAST_OBJECT):
            return vissl_load()

    def patched() -> Dict[str, Any]:
        with broadcast_impl(plugin.patched_broadcast_object):
            return vissl_load()

    loaded_on_primary = (
        torch.load(path, map_location="cpu", weights_only=False) if rank == 0 else None
    )
    fns = {
        METHODS[0]: lambda: torch.load(path, map_location="cpu", weights_only=False),
        METHODS[1]: upstream,
        METHODS[2]: patched,
        METHODS[3]: lambda: UPSTREAM_BROADCAST_OBJECT(loaded_on_primary),
        METHODS[4]: lambda: plugin.patched_broadcast_object(loaded_on_primary),
    }
    times: Dict[str, List[float]] = {m: [] for m in METHODS}
    identical: Dict[str, bool] = {m: True for m in METHODS}
    for _ in range(repeats):
        for method in METHODS:
            dist.barrier()
            gc.collect()
            t0 = time.perf_counter()
            out = fns[method]()
            times[method].append(time.perf_counter() - t0)
            identical[method] &= same_tensors(trunk_of(out), reference)
            del out
    dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"times": times, "identical": identical}, f)


def _spawned(rank: int, *args: Any) -> None:
    worker(rank, *args)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.checkpoint_load",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--model", choices=("resnet50", "small"), default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="processes in the gloo group (>1: ranks >0 receive the broadcast)",
    )
    parser.add_argument("--workdir", default=common.WORK_DIR)
    parser.add_argument("--quick", action="store_true", help="small trunk, 1 repeat")
    parser.add_argument(
        "--name", default="", help="results stem (default checkpoint_load[_quick])"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.repeats = "small", 1
    check_upstream_captured()
    machine = common.machine_info()

    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, f"checkpoint_load_{args.model}.torch")
    trunk = build_trunk(args.model)
    n_params = sum(p.numel() for p in trunk.parameters())
    model_state = {"trunk": trunk.state_dict(), "heads": {}}
    torch.save({"classy_state_dict": {"base_model": {"model": model_state}}}, path)
    size_mb = os.path.getsize(path) / 1e6
    del trunk
    print(
        f"checkpoint: {path} ({args.model}, {n_params / 1e6:.1f} M parameters, "
        f"{size_mb:.1f} MB); {args.world_size} process(es), gloo, file:// init; "
        f"{args.repeats} repeat(s)",
        flush=True,
    )

    tmp = tempfile.mkdtemp(prefix="ckpt_load_", dir=args.workdir)
    try:
        init_file = os.path.join(tmp, "pg_init")
        if args.world_size == 1:
            worker(0, 1, path, args.repeats, init_file, tmp)
        else:
            torch.multiprocessing.spawn(
                _spawned,
                args=(args.world_size, path, args.repeats, init_file, tmp),
                nprocs=args.world_size,
            )
        per_rank = []
        for r in range(args.world_size):
            with open(os.path.join(tmp, f"rank{r}.json")) as f:
                per_rank.append(json.load(f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for rank, res in enumerate(per_rank):
        base = median(res["times"][METHODS[0]])
        for method in METHODS:
            t = res["times"][method]
            med = median(t)
            rows.append(
                {
                    "rank": rank,
                    "method": method,
                    "median_s": med,
                    "min_s": min(t),
                    "max_s": max(t),
                    "MB/s": size_mb / med if med > 0 else None,
                    "vs torch.load": med / base if base > 0 else None,
                    "identical": "yes" if res["identical"][method] else "NO",
                }
            )
    columns = [
        "rank",
        "method",
        "median_s",
        "min_s",
        "max_s",
        "MB/s",
        "vs torch.load",
        "identical",
    ]
    print_table(rows, columns, title="Checkpoint load (median of %d)" % args.repeats)

    t0 = per_rank[0]["times"]
    speedup = median(t0[METHODS[1]]) / median(t0[METHODS[2]])
    bc_speedup = median(t0[METHODS[3]]) / median(t0[METHODS[4]])
    summary = {
        "checkpoint_mb": round(size_mb, 1),
        "parameters_m": round(n_params / 1e6, 2),
        "upstream_over_patched_vissl_load": round(speedup, 1),
        "upstream_over_patched_broadcast_only": round(bc_speedup, 1),
        "all_identical": all(all(r["identical"].values()) for r in per_rank),
    }
    print(
        f"\nVISSL load path, upstream / patched: {speedup:.1f}x; broadcast_object alone: "
        f"{bc_speedup:.1f}x; loaded tensors identical: {summary['all_identical']}"
    )
    notes = [
        "VISSL load path = vissl.utils.checkpoint.CheckpointLoader.load_and_broadcast_init_weights "
        "(what MODEL.WEIGHTS_INIT.PARAMS_FILE triggers); 'upstream' swaps classy-vision's original "
        "broadcast_object back in for those calls, 'patched' is "
        "vissl_clusterfit.compat.patches.fast_broadcast_object.",
        "'broadcast_object alone' times the broadcast of an already loaded checkpoint "
        "(rank 0 serialises it; other ranks receive and deserialise).",
        "With 1 process rank 0 returns its own object, so the identity check guards the load path; "
        "run --world-size 2 to check the received copy too.",
    ]
    name = args.name or ("checkpoint_load_quick" if args.quick else "checkpoint_load")
    paths = common.write_results(
        name,
        machine,
        tables=[
            {
                "title": f"Checkpoint load, {args.model} ({size_mb:.0f} MB), "
                f"{args.world_size} process(es)",
                "columns": columns,
                "rows": rows,
            }
        ],
        data={"args": vars(args), "summary": summary, "per_rank": per_rank},
        notes=notes,
        title="Checkpoint load: upstream vs patched broadcast_object",
    )
    print(f"wrote {paths['md']} and {paths['json']}")


if __name__ == "__main__":
    main()
