"""The torch.distributed helpers (DeeperCluster Sec. 4.2) in one process and on 2 gloo ranks."""

import os

import numpy as np
import pytest
import torch

from tests.clustering.gloo import outcome, run_on_ranks
from vissl_clusterfit.clustering import (
    Comm,
    barrier,
    broadcast_from_rank0,
    dist_is_initialized,
    gather_rows,
    rank_and_world,
    run_on_rank0,
)


def test_single_process_helpers_are_identities():
    assert dist_is_initialized() is False
    assert rank_and_world() == (0, 1)
    assert barrier() is None
    obj = {"k": [1, 2]}
    assert broadcast_from_rank0(obj) is obj
    rows = np.arange(6).reshape(3, 2)
    assert gather_rows(rows) is rows


def _rank0_fails() -> None:
    raise ValueError("config.VCF.X is wrong: set it to 1")


def test_single_process_run_on_rank0_returns_or_raises_the_work_itself():
    assert run_on_rank0(lambda: [1, 2], "adding") == [1, 2]
    with pytest.raises(ValueError, match="config.VCF.X is wrong"):
        run_on_rank0(_rank0_fails, "checking X")


def test_single_process_comm():
    comm = Comm()
    assert (comm.rank, comm.world_size, comm.active) == (0, 1, False)
    t = torch.tensor([1.0, 2.0])
    assert comm.all_reduce_sum(t) is t
    stacked = comm.all_gather(t)
    assert stacked.shape == (1, 2)
    np.testing.assert_array_equal(stacked[0].numpy(), [1.0, 2.0])
    with pytest.raises(ValueError, match="process_group was given"):
        Comm(process_group=object())


def _two_rank_body(rank: int, out_dir: str) -> None:
    comm = Comm()
    summed = comm.all_reduce_sum(torch.tensor([float(rank + 1)], dtype=torch.float64))
    gathered = comm.all_gather(torch.tensor([rank * 10], dtype=torch.int64))
    local_only = Comm(single_process=True)
    barrier()
    rows = gather_rows(np.full((rank + 1, 2), rank, dtype=np.int64))
    np.savez(
        os.path.join(out_dir, f"rank{rank}.npz"),
        initialised=dist_is_initialized(),
        rank_world=np.array(rank_and_world()),
        broadcast=np.array(broadcast_from_rank0([rank, "x"])[0]),
        summed=summed.numpy(),
        gathered=gathered.numpy(),
        local_only=np.array([local_only.world_size, int(local_only.active)]),
        rows=rows if rows is not None else np.zeros((0, 2), np.int64),
        rank0_result=np.array(run_on_rank0(lambda: rank + 5, "adding")),
        rank0_error=np.array(outcome(lambda: run_on_rank0(_rank0_fails, "checking X"))),
    )


def test_two_gloo_ranks(tmp_path):
    run_on_ranks(_two_rank_body, str(tmp_path), timeout_s=60)
    r = [np.load(tmp_path / f"rank{i}.npz") for i in range(2)]
    for i in range(2):
        assert bool(r[i]["initialised"])
        np.testing.assert_array_equal(r[i]["rank_world"], [i, 2])
        assert int(r[i]["broadcast"]) == 0, "rank 0's object must reach every rank"
        np.testing.assert_array_equal(r[i]["summed"], [3.0])
        np.testing.assert_array_equal(r[i]["gathered"], [[0], [10]])
        np.testing.assert_array_equal(r[i]["local_only"], [1, 0])
        assert int(r[i]["rank0_result"]) == 5, "run_on_rank0: rank 0's result"
    # rank 0 re-raises its own error; rank 1 raises one that names it (no hang).
    assert str(r[0]["rank0_error"]) == "ValueError: config.VCF.X is wrong: set it to 1"
    assert str(r[1]["rank0_error"]) == (
        "RuntimeError: rank 0 failed while checking X: ValueError: config.VCF.X is "
        "wrong: set it to 1 (rank 0's log has the traceback); rank 1 stops too"
    ), str(r[1]["rank0_error"])
    # rank 0 gets rank 0's one row then rank 1's two rows; rank 1 gets nothing.
    np.testing.assert_array_equal(r[0]["rows"], [[0, 0], [1, 1], [1, 1]])
    assert r[1]["rows"].shape == (0, 2)
