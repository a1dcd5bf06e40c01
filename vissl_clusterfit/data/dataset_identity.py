"""The identity of a dataset's ordered sample list, so labels never meet other images.

Cluster labels are one id per *position* of the dataset. If the folder changes after
clustering (one image out, one in: same count, every later position shifts), the labels
silently belong to other images. So every label set records its sample list: one line
per position, ``<path>\\t<size in bytes>`` for files (VISSL's ``disk_folder`` /
``disk_filelist``, after ``DATA_LIMIT``), ``<source id>\\t<content hash>`` for in-memory
sources (Fashion-MNIST, digits), written beside the labels as ``<NAME>_images.txt``
(auditable; ``cut -f1`` of it is a file list) with its sha256 in the meta. Every
consumer recomputes the list and compares: a mismatch names the first differing sample.

Cost: a stat per file and a sha256 over the lines, streamed (no list of 1.28M strings
is built); benchmarks/dataset_identity.py measures it.
"""

import hashlib
import itertools
import logging
import os
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

from vissl_clusterfit.compat.vissl_subset import subset_source_indices
from vissl_clusterfit.data.cluster_labels import IMAGES_SUFFIX
from vissl_clusterfit.io import atomic_write


# a source we cannot identify (no paths, no pixels): its position only
UNCHECKED = "?"


class DatasetChangedError(ValueError):
    """The dataset no longer serves the samples a label set was made for."""


def images_list_path(labels_path: str) -> str:
    """``<prefix>_images.txt`` beside ``<prefix>_labels.npy``."""
    prefix = (
        labels_path[: -len("_labels.npy")]
        if labels_path.endswith("_labels.npy")
        else os.path.splitext(labels_path)[0]
    )
    return prefix + IMAGES_SUFFIX


def _positions(dataset: Any) -> np.ndarray:
    """Source index of each position (VISSL's DATA_LIMIT subset, or all)."""
    subset = subset_source_indices(dataset)
    return np.arange(len(dataset)) if subset is None else subset


def sample_paths(dataset: Any) -> Iterator[str]:
    """The file of each position of the first source (nothing when it has no files)."""
    paths = _disk_paths(dataset, dataset.data_objs[0])
    if paths is None:
        return iter(())
    return (str(paths[i]) for i in _positions(dataset))


def sample_path(dataset: Any, position: int) -> str:
    """The file of one position of a GenericSSLDataset's first source ("" when the
    source has no files)."""
    positions = _positions(dataset) if dataset.data_limit >= 0 else None
    index = int(positions[position]) if positions is not None else int(position)
    paths = _disk_paths(dataset, dataset.data_objs[0])
    return str(paths[index]) if paths is not None else ""


def _disk_paths(dataset: Any, data_obj: Any) -> Optional[Any]:
    """The file paths of a VISSL disk source, without re-listing a folder."""
    samples = getattr(getattr(data_obj, "image_dataset", None), "samples", None)
    if samples is not None:  # disk_folder: torchvision's ImageFolder, already listed
        return [s[0] for s in samples]
    if getattr(data_obj, "data_source", "") != "disk_filelist":
        return None
    paths = data_obj.get_image_paths()
    split = dataset.cfg["DATA"][dataset.split]
    old, new = split.get("REMOVE_IMG_PATH_PREFIX", ""), split.get(
        "NEW_IMG_PATH_PREFIX", ""
    )
    if old or new:  # as VISSL's DiskImageDataset reads them
        paths = [str(p).replace(old, new, 1) for p in paths]
    return paths


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _source_lines(dataset: Any, k: int, positions: np.ndarray) -> Iterator[str]:
    data_obj = dataset.data_objs[k]
    images = getattr(data_obj, "images", None)
    if isinstance(images, np.ndarray):  # in-memory (ArrayImageSource): content hash
        ids = data_obj.get_image_paths()
        for i in positions:
            digest = hashlib.blake2b(images[i].tobytes(), digest_size=8).hexdigest()
            yield f"{ids[i]}\t{digest}"
        return
    paths = _disk_paths(dataset, data_obj)
    if paths is not None:
        for i in positions:
            yield f"{paths[i]}\t{_file_size(str(paths[i]))}"
        return
    logging.warning(
        f"[vcf] data source {dataset.data_sources[k]} has neither file paths nor "
        "pixels: only its length identifies it"
    )
    for i in positions:
        yield f"{dataset.data_sources[k]}[{int(i)}]\t{UNCHECKED}"


def sample_lines(dataset: Any) -> Iterator[str]:
    """One line per position of a GenericSSLDataset (sources joined by ' | ')."""
    positions = _positions(dataset)
    streams = [
        _source_lines(dataset, k, positions) for k in range(len(dataset.data_objs))
    ]
    for parts in zip(*streams):
        yield " | ".join(parts)


def lines_sha256(lines: Iterable[str]) -> Tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
        n += 1
    return h.hexdigest(), n


def write_sample_list(path: str, dataset: Any) -> Dict[str, Any]:
    """Write ``path`` (atomically); returns the identity record for the meta."""
    h, n = hashlib.sha256(), 0

    def write(f: Any) -> None:
        nonlocal n
        for line in sample_lines(dataset):
            blob = line.encode("utf-8", "surrogateescape") + b"\n"
            f.write(blob)
            h.update(blob)
            n += 1

    atomic_write(path, write)
    return {"sha256": h.hexdigest(), "num_samples": n, "file": os.path.basename(path)}


def first_difference(recorded: str, dataset: Any) -> str:
    if not os.path.isfile(recorded):
        return f"({recorded}, the recorded list, is gone: the first change is unknown)"
    with open(recorded, encoding="utf-8", errors="surrogateescape") as f:
        old_lines = (line.rstrip("\n") for line in f)
        pairs = itertools.zip_longest(old_lines, sample_lines(dataset))
        for i, (old, new) in enumerate(pairs):
            if old is None:
                return f"index {i} is new ({new!r}); {i} samples were recorded"
            if new is None:
                return f"index {i} (recorded {old!r}) is gone; the dataset has {i}"
            if old != new:
                return f"first difference at index {i}: recorded {old!r}, now {new!r}"
    return "the lists agree but the recorded sha256 does not: the meta file was edited"


def check_sample_list(
    dataset: Any, record: Optional[Dict[str, Any]], recorded: str, what: str, fix: str
) -> None:
    """Raise DatasetChangedError when ``dataset`` does not serve the recorded list.

    ``record``: the meta's identity (``sha256``); None = take the sha256 of the file
    ``recorded`` (a label set without meta, e.g. the assigned test split)."""
    if record is not None:
        expected = record["sha256"]
    elif os.path.isfile(recorded):
        with open(recorded, "rb") as f:
            expected = hashlib.file_digest(f, "sha256").hexdigest()
    else:
        return  # made before sample lists were recorded, or not by us
    current, _ = lines_sha256(sample_lines(dataset))
    if current == expected:
        return
    raise DatasetChangedError(
        f"{what}: the images are not the ones the labels were made for "
        f"({first_difference(recorded, dataset)}; list: {recorded}). The labels would "
        f"belong to other images. {fix}"
    )


def record_images(
    dataset: Any, previous: Optional[Dict[str, Any]], path: str
) -> Dict[str, Any]:
    """The identity of ``dataset``'s list, written to ``path`` when it is new (a
    re-clustering round on the same images writes nothing). Rank 0 writes."""
    from vissl_clusterfit.clustering.comm import rank_and_world

    sha, n = lines_sha256(sample_lines(dataset))
    record = {"sha256": sha, "num_samples": n, "file": os.path.basename(path)}
    unchanged = previous and previous.get("sha256") == sha and os.path.isfile(path)
    if not unchanged and rank_and_world()[0] == 0:
        record = write_sample_list(path, dataset)
    return record


def images_match(
    dataset: Any,
    record: Optional[Dict[str, Any]],
    path: str,
    what: str,
    fix: str,
    on_change: str,
    key: str,
) -> bool:
    """Whether labels recorded for ``record`` / the list at ``path`` may be used with
    ``dataset``: True when the images are the recorded ones (or nothing was recorded);
    False to re-cluster (``on_change=recluster``, logged); raises DatasetChangedError
    otherwise, ``fix`` preceded by the option ``key=recluster``."""
    try:
        check_sample_list(
            dataset,
            record,
            path,
            what,
            f"Set {key}=recluster to cluster the current "
            f"images (replacing the labels), {fix}",
        )
    except DatasetChangedError as e:
        if on_change != "recluster":
            raise
        logging.warning(f"[vcf] re-clustering ({key}=recluster): {e}")
        return False
    return True


def resumed_images_match(
    dataset: Any, record: Optional[Dict[str, Any]], path: str, on_change: str, key: str
) -> bool:
    """``images_match`` for DeepCluster's restored targets (nothing recorded: True)."""
    if not record:
        return True
    what = "resumed DeepCluster targets and DATA.TRAIN"
    return images_match(
        dataset, record, path, what, "or restore the images", on_change, key
    )
