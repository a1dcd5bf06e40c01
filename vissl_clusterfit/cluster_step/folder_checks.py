"""The ways a real image folder goes wrong, each refused before any feature is
extracted, with the folder or file and the fix.

- a class folder with no image (torchvision's ImageFolder, inside VISSL's
  ``disk_folder``, raises "Found no valid file for the classes ..." without saying where
  the folder is or what counts as an image): ``explain_empty_classes``;
- fewer images than the PCA dimension (PCA of N rows has at most N components; it would
  fail after the whole extraction): ``check_enough_images``; fewer than K is
  ``clustering.check_num_clusters``;
- the same file listed twice (a ``disk_filelist``; a folder cannot list one twice):
  ``check_no_duplicate_paths``.

Files that are not images: ImageFolder only lists image extensions (``IMG_EXTENSIONS``)
and ignores the rest; a file with an image extension that does not decode is
``ON_BAD_IMAGE``'s business (bad_images.py).
"""

import hashlib
import os
from typing import Any, List, Optional, Sequence

import numpy as np

from vissl_clusterfit.data.dataset_identity import sample_paths


def _empty_class_folders(root: str) -> List[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    empty = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        found = False
        for _, _, files in os.walk(entry.path, followlinks=True):
            if any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
                found = True
                break
        if not found:
            empty.append(entry.path)
    return empty


def explain_empty_classes(
    sources: Sequence[str], paths: Sequence[str], split: str, error: Exception
) -> Optional[ValueError]:
    """A clear error for ImageFolder's empty-class refusal of DATA.<split>, whose
    DATA_SOURCES and DATA_PATHS are ``sources`` and ``paths`` (None when ``error`` is
    something else)."""
    if "Found no valid file for the classes" not in str(error):
        return None
    from torchvision.datasets.folder import IMG_EXTENSIONS

    folders = [
        p
        for source, p in zip(sources, paths)
        if source == "disk_folder" and os.path.isdir(p)
    ]
    empty = [e for root in folders for e in _empty_class_folders(root)]
    return ValueError(
        f"config.DATA.{split}: the class folder(s) {empty[:10] or '?'} hold no image "
        f"(images are files ending in {', '.join(IMG_EXTENSIONS)}; other files are "
        "ignored), and VISSL's disk_folder (torchvision's ImageFolder) refuses a class "
        "without images. Remove the empty folder(s) or put the images in"
    )


def check_enough_images(n: int, pca_dim: int, key: str) -> None:
    if pca_dim > n:
        raise ValueError(
            f"{key}={pca_dim} needs at least {pca_dim} images, but the data set has {n}: "
            f"PCA of {n} images has at most {n} components. Lower {key} (0 = no PCA) or "
            "use more images"
        )


def check_no_duplicate_paths(dataset: Any, split: str) -> None:
    """The same file twice would be clustered (and trained on) twice under two
    indices. Only a file list can repeat a path; a folder lists each file once."""
    if not any(s == "disk_filelist" for s in dataset.data_sources):
        return
    digests = np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(p.encode(), digest_size=8).digest(), "little"
            )
            for p in sample_paths(dataset)
        ),
        dtype=np.uint64,
    )
    _, first, counts = np.unique(digests, return_index=True, return_counts=True)
    if (counts > 1).any():
        repeated = int(first[np.argmax(counts > 1)])
        path = next(p for i, p in enumerate(sample_paths(dataset)) if i == repeated)
        positions = [i for i, p in enumerate(sample_paths(dataset)) if p == path]
        raise ValueError(
            f"config.DATA.{split}: {path} is listed {len(positions)} times (indices "
            f"{positions[:5]}); {int((counts - 1)[counts > 1].sum())} entries repeat an "
            "earlier one. Remove the repeats from the file list (DATA_PATHS)"
        )
