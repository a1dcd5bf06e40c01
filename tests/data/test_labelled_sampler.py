"""The sampler over labelled positions: DistributedSampler's split of the ranks."""

import numpy as np

from vissl_clusterfit.data import labelled_sampler
from vissl_clusterfit.data.labelled_sampler import LabelledSampler


def test_rank_and_world_come_from_the_one_distributed_helper(monkeypatch):
    """Without arguments the sampler takes its rank and world size from
    clustering.comm.rank_and_world (here: rank 1 of 2)."""
    labels = np.array([0, -1, 1, 2, -1, 0, 1])
    monkeypatch.setattr(labelled_sampler, "rank_and_world", lambda: (1, 2))
    implicit = LabelledSampler(labels, seed=3)
    assert (implicit.rank, implicit.num_replicas) == (1, 2)
    explicit = LabelledSampler(labels, seed=3, num_replicas=2, rank=1)
    assert list(implicit) == list(explicit) and len(implicit) == 3
    monkeypatch.setattr(labelled_sampler, "rank_and_world", lambda: (0, 1))
    assert sorted(LabelledSampler(labels, seed=3)) == [0, 2, 3, 5, 6]
