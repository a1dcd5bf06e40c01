"""The forward loop of a feature extraction: which global batches a rank computes, the
images of a batch, their features batch by batch, and the progress log.

Every image is computed inside the same global batch whatever the number of processes,
so features (and labels) are bit-identical with 1 or N processes.
"""

import logging
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.extraction_trunks import (
    TrunkLayer,
    concat_npre_features,
    pool_features,
)


def rank_batches(
    n: int, batch_size: int, rank: int, world: int, contiguous: bool = False
) -> List[np.ndarray]:
    """Global batches of ``batch_size`` consecutive indices; rank r gets r, r+W, ...

    ``contiguous``: rank r gets a contiguous run of global batches instead (ranks in
    order cover the dataset in order), as the sharded k-means needs (its global row
    order is rank 0's rows, then rank 1's...). Same batches, so same features.
    """
    if contiguous:
        num = (n + batch_size - 1) // batch_size
        first, last = rank * num // world, (rank + 1) * num // world
        return [
            np.arange(b * batch_size, min((b + 1) * batch_size, n))
            for b in range(first, last)
        ]
    starts = range(rank * batch_size, n, world * batch_size)
    return [np.arange(s, min(s + batch_size, n)) for s in starts]


class IndexedImages(torch.utils.data.Dataset):
    """Item i -> (transformed image tensor of dataset[i], i)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, int]:
        return self.dataset[idx]["data"][0], idx


def feature_batches(
    trunks: List[TrunkLayer],
    loader: Any,
    device: torch.device,
    preact: Optional[Dict[str, torch.Tensor]],
    settings: ExtractionLoader,
) -> Iterator[np.ndarray]:
    """float32 (B, D) features of each batch of ``loader``, in its order."""
    for images, _ in loader:
        images = images.to(
            device, non_blocking=True, memory_format=settings.memory_format()
        )
        parts = []
        with settings.autocast_context(device):
            for trunk, layer, pooling in trunks:
                out = trunk(images, out_feat_keys=[layer])[0]
                out = preact["x"] if preact is not None else out
                parts.append(pool_features(out.float(), pooling).cpu())
        yield concat_npre_features(parts).numpy()


class ExtractionProgress:
    """Logs images done and img/s at most every ``every_s`` seconds."""

    def __init__(self, rank: int, total: int, every_s: float) -> None:
        self.rank, self.total, self.every_s = rank, total, every_s
        self.done, self.t0, self.last = 0, time.time(), time.time()

    def add(self, count: int) -> None:
        self.done += count
        if time.time() - self.last > self.every_s:
            self.last = time.time()
            logging.info(
                f"[vcf] extracting features: rank {self.rank} {self.done}/{self.total} "
                f"images, {self.done / (self.last - self.t0):.0f} img/s"
            )
