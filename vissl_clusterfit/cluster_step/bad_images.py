"""Images that do not decode, caught while N_pre's features are extracted.

VISSL's disk sources catch a decoding error, log it and serve a grey placeholder image
(``data_valid = -1``, vissl/data/disk_dataset.py): clustering its features would give
the broken file a cluster and N_cf a grey image to learn. ``ON_BAD_IMAGE`` decides:

- ``error`` (default): stop at the first one, before anything is written, naming the
  file, its index, the decoder's message and the option;
- ``skip``: cluster the other images (a stand-in image fills the broken one's place in
  the extraction batch; its features are dropped); the broken ones get label -1 in the label file,
  the meta counts and lists them, and N_cf's loader never draws them
  (``data.labelled_sampler.LabelledSampler``; VISSL's cross-entropy also ignores -1
  targets).

Found in DataLoader workers, so each process appends what it finds to a file of its
own (one line per image), read back after extraction and gathered over the ranks.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from vissl_clusterfit.cluster_step.routes import ClusterResult
from vissl_clusterfit.clustering.comm import dist_is_initialized
from vissl_clusterfit.data.dataset_identity import sample_path


KEY = "config.VCF.CLUSTERFIT.ON_BAD_IMAGE"


class BadImageError(ValueError):
    """An image of the data set does not decode."""


def decode_error(path: str) -> str:
    """The decoder's message for ``path`` (VISSL logs it but does not return it)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            Image.open(f).convert("RGB")
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "VISSL's data source could not load it"


class CheckedImages(torch.utils.data.Dataset):
    """A GenericSSLDataset whose placeholder items are refused or recorded."""

    def __init__(self, dataset: Any, mode: str, record_dir: str, split: str) -> None:
        self.dataset = dataset
        self.mode = mode
        self.record_dir = record_dir
        self.split = split

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        try:
            item = self.dataset[idx]
        except Exception as e:
            # VISSL's disk_folder decodes outside its own try (disk_dataset.py: the
            # ImageFolder item is read before it): the decoder's error arrives here
            item, error = None, f"{type(e).__name__}: {e}"
        else:
            if all(v == 1 for v in item["data_valid"]):
                return item
            error = ""
        path = sample_path(self.dataset, idx)
        error = error or (decode_error(path) if path else "not loadable")
        if self.mode != "skip":
            raise BadImageError(
                f"image {idx} of DATA.{self.split} does not decode: {path} ({error}). "
                f"Replace or remove the file, or set {KEY}=skip to cluster the other "
                "images (this one gets label -1 and is never trained on); nothing was "
                "written"
            )
        record = os.path.join(self.record_dir, f"{os.getpid()}.tsv")
        with open(record, "a") as f:  # one short line per write: appends stay whole
            f.write(f"{idx}\t{path}\t{' '.join(error.split())}\n")
        return item if item is not None else self._stand_in(idx)

    def _stand_in(self, idx: int) -> Dict[str, Any]:
        """An item for a skipped image whose source raised: the first image that
        decodes, transformed (its features are dropped before clustering)."""
        for other in range(len(self.dataset)):
            if other != idx:
                try:
                    item = self.dataset[other]
                except Exception:
                    continue
                if all(v == 1 for v in item["data_valid"]):
                    return item
        raise BadImageError(f"no image of DATA.{self.split} decodes")


def _read(record_dir: str) -> List[Dict[str, Any]]:
    found = []
    for name in sorted(os.listdir(record_dir)):
        with open(os.path.join(record_dir, name)) as f:
            for line in f:
                idx, path, error = line.rstrip("\n").split("\t", 2)
                found.append({"index": int(idx), "path": path, "error": error})
    return found


def _gather(found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    if dist_is_initialized():
        import torch.distributed as dist

        parts: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, found)
        found = [x for part in parts for x in part]
    unique = {x["index"]: x for x in found}
    return [unique[i] for i in sorted(unique)]


class Watch:
    """``watch``'s handle: the dataset to extract from; ``found`` after the block."""

    def __init__(self, dataset: CheckedImages) -> None:
        self.dataset = dataset
        self.found: List[Dict[str, Any]] = []


@contextlib.contextmanager
def watch(dataset: Any, mode: str, split: str = "TRAIN") -> Iterator[Watch]:
    """Extract from ``handle.dataset``; afterwards ``handle.found`` lists the images
    that did not decode (every rank, sorted by index; always empty for ``error``)."""
    record_dir = tempfile.mkdtemp(prefix="vcf_bad_images_")
    handle = Watch(CheckedImages(dataset, mode, record_dir, split))
    try:
        yield handle
        handle.found = _gather(_read(record_dir))
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)


def valid_mask(n: int, found: List[Dict[str, Any]]) -> Optional[np.ndarray]:
    """True for the images that decoded; None when all did."""
    if not found:
        return None
    mask = np.ones(n, dtype=bool)
    mask[[x["index"] for x in found]] = False
    return mask


def meta_entry(found: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The meta's ``bad_images``: how many, and each one (index, path, error)."""
    return {"count": len(found), "samples": list(found)}


def expand(
    arrays: Tuple[np.ndarray, np.ndarray], mask: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, distances) of the decoded images -> one per image: -1 and NaN for the
    skipped ones."""
    labels, distances = arrays
    if mask is None:
        return labels, distances
    full_labels = np.full(len(mask), -1, dtype=np.int64)
    full_labels[mask] = labels
    full_dist = np.full(len(mask), np.nan, dtype=np.float32)
    full_dist[mask] = distances
    return full_labels, full_dist


def with_skipped(result: ClusterResult, mask: Optional[np.ndarray]) -> ClusterResult:
    """The cluster result with one entry per image (skipped ones: -1 / NaN)."""
    if mask is None:
        return result
    labels, distances = expand((result.labels, result.distances), mask)
    return dataclasses.replace(result, labels=labels, distances=distances)


class PathNamingLoader:
    """torchvision's image loader that names the file when it fails. VISSL's
    ``disk_folder`` decodes through it outside its own error handling, so an image that
    breaks while N_cf trains would stop the run with only PIL's message. A class, not a
    closure: DataLoader workers may pickle the dataset."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __call__(self, path: str) -> Any:
        try:
            return self.loader(path)
        except Exception as e:
            raise BadImageError(
                f"image {path} does not decode ({type(e).__name__}: {e}): replace or "
                f"remove it (with {KEY}=skip the cluster step labels such images -1 "
                "and N_cf never draws them)"
            ) from e


def name_failing_images(dataset: Any) -> None:
    """Make every ``disk_folder`` source of ``dataset`` name the file that fails."""
    for data_obj in dataset.data_objs:
        folder = getattr(data_obj, "image_dataset", None)
        loader = getattr(folder, "loader", None)
        if loader is not None and not isinstance(loader, PathNamingLoader):
            folder.loader = PathNamingLoader(loader)
