"""Base for VISSL data sources whose images fit in memory as a uint8 array.

VISSL data sources take ``(cfg, data_source, path, split, dataset_name)`` and return
``(PIL image, is_success)`` per index (see vissl/data/torchvision_dataset.py). This base
adds what our small real datasets need: labels through ``get_labels()`` and a subset.

Subset (sized runs on a 2-core machine): VISSL's ``DATA.<SPLIT>.DATA_LIMIT`` (-1 = all)
with ``DATA_LIMIT_SAMPLING.SEED``: a seed >= 0 takes a seeded random subset (indices
kept in dataset order), ``SEED: -1`` takes the first N. ``SKIP_NUM_SAMPLES`` skips that
many candidates first, as in VISSL. The subset is applied here, so labels, cluster label
files and features all index the same ``[0, len)`` range.
"""

from typing import Any, List, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


def select_subset(total: int, limit: int, seed: int = 0, skip: int = 0) -> np.ndarray:
    """Indices of the subset: all when ``limit < 0``; the first ``limit`` (after
    ``skip``) when ``seed < 0``; else a seeded random choice, sorted."""
    if limit < 0:
        return np.arange(total, dtype=np.int64)
    if skip + limit > total:
        raise ValueError(
            f"DATA_LIMIT={limit} (+ SKIP_NUM_SAMPLES={skip}) is larger than the "
            f"{total} samples of the split: lower DATA_LIMIT or set it to -1 (all)"
        )
    if seed < 0:
        return np.arange(skip, skip + limit, dtype=np.int64)
    rng = np.random.RandomState(seed)
    return np.sort(rng.permutation(total)[skip : skip + limit]).astype(np.int64)


class ArrayImageSource(Dataset):
    """Images as a ``(N, H, W)`` uint8 array and ``(N,)`` int64 labels.

    Subclasses implement ``load_split(path, split) -> (images, labels)``.
    Images are served as RGB PIL images (grayscale replicated) so VISSL's transforms,
    normalisations and 3-channel trunks apply unchanged.
    """

    def __init__(
        self, cfg: Any, data_source: str, path: str, split: str, dataset_name: str
    ) -> None:
        super().__init__()
        self.data_source = data_source
        self.dataset_name = dataset_name
        self.path = path
        self.split = split.lower()
        images, labels = self.load_split(path, self.split)
        split_cfg = cfg["DATA"][split.upper()]
        limit = int(split_cfg.get("DATA_LIMIT", -1))
        sampling = split_cfg.get("DATA_LIMIT_SAMPLING", {}) or {}
        self.indices = select_subset(
            len(images),
            limit,
            seed=int(sampling.get("SEED", 0)),
            skip=int(sampling.get("SKIP_NUM_SAMPLES", 0)),
        )
        self.images = images[self.indices]
        self.labels = labels[self.indices].astype(np.int64)

    def load_split(self, path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def num_samples(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return self.num_samples()

    def __getitem__(self, idx: int) -> Tuple[Image.Image, bool]:
        return Image.fromarray(self.images[idx], mode="L").convert("RGB"), True

    def get_image_paths(self) -> List[str]:
        """Identifiers in place of file paths (VISSL's cluster tools ask for them)."""
        return [f"{self.dataset_name}/{self.split}/{int(i)}" for i in self.indices]

    def get_labels(self) -> List[int]:
        return self.labels.tolist()
