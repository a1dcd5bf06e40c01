"""The global random generators: kept out of the cluster step, carried across resumes.

Extraction and clustering run inside a training run (the hooks' ``on_start`` /
``on_phase_start``). Whatever they draw from the global generators (data loader seeds,
PCA samples, weight init of a rebuilt model) would shift every later draw of the
training, so a run that reuses label files, or resumes, would train differently from
the run that made them. ``preserved_rng`` restores torch's, numpy's and Python's global
generators after the block.

VISSL 0.1.6 seeds those generators once per run (``vissl.utils.misc.set_seeds``) and
does not checkpoint them: after a resume, the data augmentation of epoch e draws from a
freshly seeded generator, i.e. repeats epoch 0's stream, and the run diverges from an
uninterrupted one. ``gather_rng_states`` / ``restore_rng_states`` carry every rank's
states in the checkpoint (``hooks.rng_state_hook``).
"""

import contextlib
import logging
import random
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from vissl_clusterfit.clustering.comm import dist_is_initialized, rank_and_world


RngState = Dict[str, Any]


def capture_rng_state() -> RngState:
    """This process's torch (CPU, CUDA), numpy and Python generator states, as tensors,
    lists and tuples only (so a checkpoint holding them loads with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def restore_rng_state(state: RngState) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(state["python"]))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def gather_rng_states(phase: int, iteration: int) -> Optional[Dict[str, Any]]:
    """Every rank's states (rank order) on rank 0, tagged with the training position
    they belong to; None on the other ranks. A collective: call it on every rank."""
    rank, world = rank_and_world()
    mine = capture_rng_state()
    states: Optional[List[RngState]] = [mine]
    if dist_is_initialized() and world > 1:
        # clustering.comm has no object gather; the states are a few KB per rank
        states = [None] * world if rank == 0 else None
        dist.gather_object(mine, states, dst=0)
    if rank != 0:
        return None
    return {"phase": phase, "iteration": iteration, "ranks": states}


def restore_rng_states(saved: Dict[str, Any], checkpoint: Dict[str, Any]) -> bool:
    """Restore this rank's states from ``saved`` (``gather_rng_states`` output found in
    ``checkpoint``). Returns False, with a warning saying why, when they do not belong
    to the position the checkpoint resumes from (a mid-epoch checkpoint written at
    CHECKPOINT_ITER_FREQUENCY) or were saved with another number of processes."""
    rank, world = rank_and_world()
    states = saved.get("ranks") or []
    position = (checkpoint.get("train_phase_idx"), checkpoint.get("iteration"))
    why = ""
    if (saved.get("phase"), saved.get("iteration")) != position:
        why = (
            f"they were saved at (phase, iteration)=({saved.get('phase')}, "
            f"{saved.get('iteration')}), the checkpoint resumes from {position} "
            "(a mid-epoch checkpoint)"
        )
    elif len(states) != world:
        why = f"they were saved by {len(states)} processes, this run has {world}"
    if why:
        logging.warning(
            "[vcf] not restoring the random generator states of the checkpoint: "
            f"{why}. Data augmentation from here on differs from an uninterrupted run"
        )
        return False
    restore_rng_state(states[rank])
    return True
