"""Run a test body on several gloo ranks on localhost (torch.multiprocessing.spawn)."""

import socket
from typing import Callable

import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    rank: int, body: Callable[[int, str], None], port: int, world: int, out_dir: str
) -> None:
    import faiss
    import torch.distributed as dist

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        body(rank, out_dir)
    finally:
        dist.destroy_process_group()


def run_on_ranks(
    body: Callable[[int, str], None], out_dir: str, world_size: int = 2
) -> None:
    """``body(rank, out_dir)`` on ``world_size`` processes of one gloo group (a
    module-level function: it is pickled); results are exchanged through ``out_dir``."""
    torch.multiprocessing.spawn(
        _entry,
        args=(body, _free_port(), world_size, out_dir),
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
