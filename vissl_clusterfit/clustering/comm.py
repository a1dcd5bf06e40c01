"""The one ``torch.distributed`` helper module of vissl_clusterfit.

DeeperCluster (Caron et al., ICCV 2019, Sec. 4.2) keeps every rank's features on
that rank and exchanges only small statistics. Everything in the package that asks
"is torch.distributed initialised?", "which rank am I?", or that moves tensors or
Python objects between ranks goes through this module, so a single process (no
``init_process_group``) always takes the same, collective-free path.
"""

from typing import Any, Callable, List, Optional, Tuple, TypeVar

import numpy as np
import torch
import torch.distributed as dist


__all__ = [
    "Comm",
    "barrier",
    "broadcast_from_rank0",
    "dist_is_initialized",
    "gather_rows",
    "rank_and_world",
    "run_on_rank0",
]

T = TypeVar("T")


def dist_is_initialized() -> bool:
    """True when ``torch.distributed`` is available and its default group initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) in the default group; (0, 1) without ``torch.distributed``."""
    if not dist_is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """``dist.barrier()`` on the default group; a no-op without ``torch.distributed``."""
    if dist_is_initialized():
        dist.barrier()


def broadcast_from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``dist.broadcast_object_list`` from src 0).

    Without ``torch.distributed`` it returns ``obj`` itself. ``obj`` must be
    picklable; the other ranks' values are ignored.
    """
    if not dist_is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_rank0(work: Callable[[], T], what: str) -> T:
    """``work()`` on rank 0, its result on every rank (:func:`broadcast_from_rank0`).

    The other ranks wait in the broadcast while rank 0 works; when ``work`` raises
    there, rank 0 broadcasts the error instead of a result, so every other rank raises
    a ``RuntimeError`` naming it rather than waiting forever, and rank 0 re-raises its
    own exception. ``what`` says what rank 0 was doing, for that message.
    """
    rank, _ = rank_and_world()
    status = None
    if rank == 0:
        try:
            status = (True, work())
        except Exception as err:
            if dist_is_initialized():
                broadcast_from_rank0((False, f"{type(err).__name__}: {err}"))
            raise
    ok, payload = broadcast_from_rank0(status)
    if not ok:
        raise RuntimeError(
            f"rank 0 failed while {what}: {payload} (rank 0's log has the traceback); "
            f"rank {rank} stops too"
        )
    return payload


def gather_rows(local: np.ndarray, dst: int = 0) -> Optional[np.ndarray]:
    """Concatenate every rank's ``local`` rows in rank order on rank ``dst`` (None on
    the others; ``local`` itself without ``torch.distributed``)."""
    if not dist_is_initialized() or dist.get_world_size() == 1:
        return local
    gathered: Optional[List[np.ndarray]] = (
        [None] * dist.get_world_size() if dist.get_rank() == dst else None  # type: ignore
    )
    dist.gather_object(local, gathered, dst=dst)
    if gathered is None:
        return None
    return np.concatenate(gathered)


class Comm:
    """The few tensor collectives of the clustering code, or no-ops in one process.

    Args:
        process_group: ``torch.distributed`` group; None = the default group.
        single_process: behave as a one-rank group even when ``torch.distributed``
            is initialised (the single-process k-means re-uses the distributed
            empty-cluster code this way).

    Raises:
        ValueError: when ``process_group`` is given without an initialised
            ``torch.distributed``, or this process is not a member of it.
    """

    def __init__(
        self, process_group: Optional[object] = None, single_process: bool = False
    ) -> None:
        initialised = dist_is_initialized()
        if single_process:
            initialised = False
        elif process_group is not None and not initialised:
            raise ValueError(
                "process_group was given but torch.distributed is not initialised; call "
                "torch.distributed.init_process_group first or pass process_group=None"
            )
        self.group = process_group
        self.rank = 0
        self.world_size = 1
        self.device = torch.device("cpu")
        if initialised:
            self.rank = dist.get_rank(process_group)
            if self.rank < 0:
                raise ValueError(
                    "this process is not a member of the given process_group; call "
                    "distributed_kmeans only on the ranks of that group"
                )
            self.world_size = dist.get_world_size(process_group)
            if dist.get_backend(process_group) == "nccl":
                # NCCL only moves CUDA tensors.
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.active = initialised and self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the ranks (``tensor`` itself in one process)."""
        if not self.active:
            return tensor
        buf = tensor.to(self.device).contiguous()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        return buf.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return a (world_size, *tensor.shape) stack of every rank's tensor."""
        if not self.active:
            return tensor.unsqueeze(0)
        buf = tensor.to(self.device).contiguous()
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(out, buf, group=self.group)
        return torch.stack(out).to(tensor.device)
