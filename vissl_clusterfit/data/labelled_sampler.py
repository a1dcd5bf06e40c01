"""A distributed sampler over the labelled positions only (labels >= 0).

With ``VCF.CLUSTERFIT.ON_BAD_IMAGE=skip`` the images that do not decode get label -1
(cluster_step/bad_images.py). VISSL's cross-entropy ignores -1 targets, but its data
source would still serve them as a grey placeholder in the batch (through BatchNorm
and the meters). This sampler never draws them: torch's ``DistributedSampler``
semantics (shuffle by ``(seed, epoch)``, pad by repeating the start so every rank gets
``ceil(n / world)``, rank r takes every world-th) over the labelled positions.
"""

import math
from typing import Iterator, Optional

import numpy as np
from torch.utils.data import Sampler

from vissl_clusterfit.clustering.comm import rank_and_world


class LabelledSampler(Sampler):
    # VISSL's print_sampler_config reads it
    shuffle = True

    def __init__(
        self,
        labels: np.ndarray,
        seed: int = 0,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> None:
        this_rank, world = rank_and_world()
        self.num_replicas = int(num_replicas or world)
        self.rank = int(rank if rank is not None else this_rank)
        self.indices = np.flatnonzero(np.asarray(labels) >= 0)
        if not len(self.indices):
            raise ValueError("no labelled sample to train on: every label is -1")
        self.seed, self.epoch = int(seed), 0
        self.num_samples = math.ceil(len(self.indices) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas  # VISSL logs it

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self.indices[rng.permutation(len(self.indices))]
        order = np.resize(order, self.total_size)  # repeats from the start to pad
        return iter(order[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
