"""Batches sampled uniformly over clusters, for distributed training.

DeepCluster thesis (Caron 2018), Sec. 3.2 "Joint optimization" and Sec. 3.3 "Train the CNN":
sampling per pseudo-label instead of per image keeps one dominant cluster from making the
classification trivial ("we pick a cluster at random (with the same probability for each
cluster). Then, an example corresponding to this cluster is sampled"); DeeperCluster
(Caron et al., ICCV 2019, Sec. 3.2) keeps "a batch-sampling based on an uniform
distribution over the cluster assignments" to avoid trivial solutions.
"""

import math
from typing import Iterator, List, Optional

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


class UniformClusterSampler(Sampler):
    """Each epoch draws (almost) the same number of samples from every non-empty cluster
    (DeepCluster thesis, Sec. 3.2-3.3), shuffles them and gives each rank a disjoint share.

    Per epoch, with ``total = ceil(num_samples / num_replicas) * num_replicas`` and ``n``
    non-empty clusters, each cluster is drawn ``ceil(total / n)`` or one fewer times
    (the clusters that give one up are picked at random), so the epoch list has exactly
    ``total`` entries and cluster counts differ by at most one. Within a cluster of size
    ``c`` asked for ``q`` draws: without replacement if ``q <= c``; otherwise every member
    ``q // c`` times plus ``q % c`` distinct extra members (a stratified form of drawing
    with replacement: same expected counts, each member repeated ``q // c`` or ``+1`` times).
    The list is shuffled with an RNG seeded by ``(seed, epoch)``, so every rank computes the
    same list and takes ``indices[rank::num_replicas]``. Samples labelled ``-1`` (or any
    negative id) are never drawn.

    Args:
        labels: (N,) integer cluster id per dataset index; negative ids are ignored.
        num_samples: samples per epoch over all ranks (default: N = len(labels)).
        seed: non-negative base seed; the epoch is mixed in by :meth:`set_epoch`.
        num_replicas: number of ranks (default: the torch.distributed world size, else 1).
        rank: this rank (default: the torch.distributed rank, else 0).
    """

    # VISSL logs every sampler with print_sampler_config, which reads this attribute
    shuffle = True

    def __init__(
        self,
        labels: np.ndarray,
        num_samples: Optional[int] = None,
        seed: int = 0,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas; "
                f"got rank={rank}, num_replicas={num_replicas}"
            )
        if seed < 0:
            raise ValueError(
                f"seed must be non-negative (it seeds numpy's SeedSequence), got {seed}"
            )
        if num_samples is not None and num_samples < 1:
            raise ValueError(
                f"num_samples must be a positive integer or None (= len(labels)), got {num_samples}"
            )
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.epoch = 0
        self._requested_num_samples = num_samples
        self.set_labels(labels)

    def set_labels(self, labels: np.ndarray) -> None:
        """Swap in new cluster ids (after a re-clustering); takes effect at the next
        ``__iter__``. With ``num_samples=None`` the epoch length follows the new N.

        Args:
            labels: (N,) integer cluster id per dataset index; negative ids are ignored.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a 1-D integer array of cluster ids, got shape {labels.shape} "
                f"dtype {labels.dtype}; load the *_labels.npy written by the clustering step"
            )
        valid = np.flatnonzero(labels >= 0)
        if valid.size == 0:
            raise ValueError(
                "labels has no sample with a cluster id >= 0; nothing to sample from"
            )
        # one stable sort groups every cluster's members contiguously: O(N log N) once per
        # clustering instead of one O(N) scan per cluster
        order = valid[np.argsort(labels[valid], kind="stable")]
        _, starts = np.unique(labels[order], return_index=True)
        self._clusters: List[np.ndarray] = np.split(order, starts[1:])
        self.labels = labels
        self.num_samples = int(self._requested_num_samples or len(labels))
        self.total_size = (
            math.ceil(self.num_samples / self.num_replicas) * self.num_replicas
        )

    @property
    def num_nonempty_clusters(self) -> int:
        return len(self._clusters)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle, like ``DistributedSampler.set_epoch`` (VISSL's
        ``SetDataSamplerEpochHook`` calls it at each phase start)."""
        self.epoch = int(epoch)

    def epoch_indices(self) -> np.ndarray:
        """The full epoch list (all ranks), ``total_size`` dataset indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self._clusters)
        per_cluster = math.ceil(self.total_size / n)
        quota = np.full(n, per_cluster, dtype=np.int64)
        # trim the surplus one per cluster, from random clusters, so counts stay within +-1
        quota[rng.choice(n, per_cluster * n - self.total_size, replace=False)] -= 1
        draws = []
        for members, q in zip(self._clusters, quota):
            full, rest = divmod(int(q), len(members))
            draws.extend([members] * full)
            if rest:
                draws.append(rng.choice(members, rest, replace=False))
        indices = np.concatenate(draws)
        rng.shuffle(indices)
        assert len(indices) == self.total_size
        return indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas
