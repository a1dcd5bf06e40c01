"""Run a test body on several gloo ranks on localhost (torch.multiprocessing.spawn)."""

import datetime
import functools
import os
import socket
from typing import Callable, List, Optional

import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    rank: int,
    body: Callable[[int, str], None],
    port: int,
    world: int,
    out_dir: str,
    timeout_s: Optional[float],
) -> None:
    import faiss
    import torch.distributed as dist

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    timeout = {} if timeout_s is None else {"timeout": datetime.timedelta(0, timeout_s)}
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        **timeout,
    )
    try:
        body(rank, out_dir)
    finally:
        dist.destroy_process_group()


def run_on_ranks(
    body: Callable[[int, str], None],
    out_dir: str,
    world_size: int = 2,
    timeout_s: Optional[float] = None,
) -> None:
    """``body(rank, out_dir)`` on ``world_size`` processes of one gloo group (a
    module-level function: it is pickled); results are exchanged through ``out_dir``.
    ``timeout_s`` bounds each collective (a test of a would-be hang fails instead)."""
    torch.multiprocessing.spawn(
        _entry,
        args=(body, _free_port(), world_size, out_dir, timeout_s),
        nprocs=world_size,
        join=True,
    )


def error_message(call: Callable[[], object]) -> str:
    """The ValueError message of ``call()``, or "no error"."""
    try:
        call()
    except ValueError as err:
        return str(err)
    return "no error"


def outcome(call: Callable[[], object]) -> str:
    """``"ok"`` when ``call()`` returns, else ``"<ExceptionType>: <message>"`` (a rank
    records it in ``out_dir`` for the test to read)."""
    try:
        call()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "ok"


def _record_outcome(rank: int, out_dir: str, body: Callable[[int, str], None]) -> None:
    got = outcome(lambda: body(rank, out_dir))
    with open(os.path.join(out_dir, f"outcome{rank}.txt"), "w") as f:
        f.write(got)


def outcomes_on_ranks(
    body: Callable[[int, str], None],
    out_dir: str,
    world_size: int = 2,
    timeout_s: float = 60,
) -> List[str]:
    """The :func:`outcome` of ``body(rank, out_dir)`` on each rank, in rank order;
    a collective that waits more than ``timeout_s`` raises (a hang fails the test)."""
    record = functools.partial(_record_outcome, body=body)
    run_on_ranks(record, out_dir, world_size, timeout_s)
    paths = [os.path.join(out_dir, f"outcome{r}.txt") for r in range(world_size)]
    return [open(p).read() for p in paths]


def assert_rank0_error_on_every_rank(got: List[str], error: str, what: str) -> None:
    """``got`` (:func:`outcomes_on_ranks`): rank 0 raised ``error`` while doing
    ``what``; every other rank raised the RuntimeError of ``run_on_rank0`` naming it."""
    assert got[0] == error, got[0]
    for rank, other in enumerate(got[1:], 1):
        assert other == (
            f"RuntimeError: rank 0 failed while {what}: {error} (rank 0's log has the "
            f"traceback); rank {rank} stops too"
        ), other
