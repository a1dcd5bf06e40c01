"""Extra label sources for VISSL's GenericSSLDataset.

VISSL 0.1.6 hard-codes its label sources in ``GenericSSLDataset.load_labels``
(disk_filelist, disk_folder, torchvision_dataset, synthetic) and has no registry for
them. We wrap that method: when every entry of ``LABEL_SOURCES`` is one of ours we load
them here; otherwise VISSL's code runs unchanged.

- ``vcf_fashion_mnist``, ``vcf_digits``: the class labels of our data sources.
- ``vcf_cluster_labels``: the ClusterFit dataset. Serves the pseudo-labels of a cluster
  label file (``LABEL_PATHS`` entry, or ``auto`` for the file the extract-and-cluster
  hook writes), checked against the data source's length and the K in its meta file.
  Works with VISSL's samplers and collators because it is just GenericSSLDataset's
  ``label_objs``. With VISSL's own DATA_LIMIT subsetting (disk_filelist...), the file
  holds one label per subset position and is scattered to source indices here.
- ``vcf_fashion_mnist_coarse``: Fashion-MNIST's 5 coarse groups (data/fashion_mnist_coarse.py).
- ``vcf_fashion_mnist_tops``: the 4 tops classes of the ``vcf_fashion_mnist_tops`` source.
- ``vcf_noisy:<inner>``: the labels of ``<inner>`` (any source above, or VISSL's
  disk_filelist / disk_folder / torchvision_dataset) with uniform label noise
  (ClusterFit Sec. 3.2, data/label_noise.py), set by ``DATA.<SPLIT>.VCF_LABEL_NOISE``
  (RATE, SEED, NUM_CLASSES, RECORD_FILE). The flips are drawn over the positions the
  split serves (after DATA_LIMIT, ours or VISSL's) and recorded in a JSON file, by
  default ``<CHECKPOINT.DIR>/vcf_label_noise_<split>.json``.
"""

import copy
import logging
import os
from typing import Any, Callable, Dict

import numpy as np
from vissl.data.ssl_dataset import GenericSSLDataset

from vissl_clusterfit.compat.vissl_subset import source_indexed, subset_source_indices
from vissl_clusterfit.data import label_noise
from vissl_clusterfit.data.cluster_labels import (
    TEST_SUFFIX,
    clusterfit_output_dir,
    label_paths,
    load_cluster_labels,
    read_meta,
)
from vissl_clusterfit.data.dataset_identity import check_sample_list, images_list_path
from vissl_clusterfit.data.fashion_mnist_coarse import coarse_labels


CLUSTER_LABEL_SOURCE = "vcf_cluster_labels"


def cluster_label_path(cfg: Any, split: str = "TRAIN", index: int = 0) -> str:
    """The label file a dataset split reads: its LABEL_PATHS entry, or for ``auto`` (or
    no entry) the labels file the extract-and-cluster hook writes."""
    paths = cfg["DATA"][split].get("LABEL_PATHS", [])
    if index < len(paths) and paths[index] not in ("", "auto"):
        return paths[index]
    c = cfg.VCF.CLUSTERFIT
    name = c.NAME + ("" if split == "TRAIN" else TEST_SUFFIX)
    return label_paths(clusterfit_output_dir(c.OUTPUT_DIR, cfg.CHECKPOINT.DIR), name)[
        "labels"
    ]


def _source_labels(dataset: GenericSSLDataset, idx: int) -> np.ndarray:
    data_obj = dataset.data_objs[idx]
    if not hasattr(data_obj, "get_labels"):
        raise ValueError(
            f"LABEL_SOURCES[{idx}]={dataset.label_sources[idx]} needs the data source "
            f"{dataset.data_sources[idx]} to provide labels"
        )
    return np.asarray(data_obj.get_labels(), dtype=np.int64)


def _cluster_labels(dataset: GenericSSLDataset, idx: int) -> np.ndarray:
    path = cluster_label_path(dataset.cfg, dataset.split, idx)
    n = len(dataset)
    labels = load_cluster_labels(
        path,
        expected_len=n,
        what=f"DATA.{dataset.split} ({dataset.dataset_names[idx]})",
    )
    _check_images(dataset, path)
    return source_indexed(dataset, labels, idx)


def _check_images(dataset: GenericSSLDataset, path: str) -> None:
    """The split must serve the images the label file was made for (the list beside
    it, <prefix>_images.txt, and its sha256 in the meta when there is one)."""
    meta = None
    if path.endswith("_labels.npy"):
        meta = read_meta(*os.path.split(path[: -len("_labels.npy")]))
    check_sample_list(
        dataset,
        meta.get("dataset_identity") if meta else None,
        images_list_path(path),
        f"DATA.{dataset.split} and cluster label file {path}",
        "Re-cluster the current images (delete the label files, or with the "
        "extract-and-cluster hook set config.VCF.CLUSTERFIT.ON_DATASET_CHANGE=recluster), "
        "or restore the images the list names",
    )


def _coarse_labels(dataset: GenericSSLDataset, idx: int) -> np.ndarray:
    if dataset.data_sources[idx] != "vcf_fashion_mnist":
        raise ValueError(
            f"LABEL_SOURCES[{idx}]=vcf_fashion_mnist_coarse maps Fashion-MNIST's labels "
            f"and needs DATA_SOURCES[{idx}]=vcf_fashion_mnist, not "
            f"{dataset.data_sources[idx]}"
        )
    return coarse_labels(_source_labels(dataset, idx))


NOISY_PREFIX = "vcf_noisy:"
# VISSL's own label sources that vcf_noisy:<inner> can wrap (synthetic labels are all 0)
VISSL_NOISY_INNER = ("disk_filelist", "disk_folder", "torchvision_dataset")


def _vissl_labels(dataset: GenericSSLDataset, idx: int, source: str) -> np.ndarray:
    # VISSL's loader reads every label source of the split: run it on a shallow copy
    # that holds only entry idx, with `source` as its label source
    if source == "disk_filelist" and idx >= len(dataset.label_paths):
        raise ValueError(
            f"LABEL_SOURCES[{idx}]={NOISY_PREFIX}{source} needs an existing label file "
            f"in DATA.{dataset.split}.LABEL_PATHS[{idx}]"
        )
    one = copy.copy(dataset)
    one.label_sources = [source]
    for name in ("label_paths", "data_sources", "data_paths", "data_objs"):
        setattr(one, name, list(getattr(dataset, name))[idx : idx + 1])
    one.label_objs = []
    _original_load_labels(one)
    labels = one.label_objs[0]
    if isinstance(labels, list):
        raise ValueError(
            f"{NOISY_PREFIX}{source} needs one label file per data source, got {len(labels)}"
        )
    return np.asarray(labels)


def _noisy_loader(inner: str) -> Callable[[GenericSSLDataset, int], np.ndarray]:
    def load(dataset: GenericSSLDataset, idx: int) -> np.ndarray:
        split_cfg = dataset.cfg["DATA"][dataset.split]
        settings = label_noise.LabelNoiseSettings.from_split_config(
            split_cfg, dataset.split
        )
        if inner in LABEL_SOURCE_LOADERS:
            clean = np.asarray(LABEL_SOURCE_LOADERS[inner](dataset, idx))
        else:
            clean = _vissl_labels(dataset, idx, inner)
        if clean.ndim != 1 or not np.issubdtype(clean.dtype, np.integer):
            raise ValueError(
                f"{NOISY_PREFIX}{inner} needs integer class labels, got shape "
                f"{clean.shape} dtype {clean.dtype}"
            )
        num_classes = label_noise.resolve_num_classes(clean, settings.num_classes)
        # balanced sub-sampling reads label_objs[0], not filled yet: the clean labels
        served = subset_source_indices(dataset, clean)
        served_clean = clean if served is None else clean[served]
        noisy, positions = label_noise.inject_uniform_noise(
            served_clean, settings.rate, settings.seed, num_classes
        )
        if served is not None:
            source_indices = served[positions]
        elif hasattr(dataset.data_objs[idx], "indices"):
            source_indices = np.asarray(dataset.data_objs[idx].indices)[positions]
        else:
            source_indices = None
        path = label_noise.record_path(
            settings, dataset.cfg["CHECKPOINT"]["DIR"], dataset.split, idx
        )
        describe = {
            "split": dataset.split,
            "label_source": NOISY_PREFIX + inner,
            "data_source": dataset.data_sources[idx],
            "dataset_name": dataset.dataset_names[idx],
            "num_positions": int(len(served_clean)),
        }
        label_noise.write_record(
            path,
            label_noise.noise_record(
                settings,
                served_clean.astype(np.int64),
                noisy,
                positions,
                num_classes,
                source_indices,
                describe,
            ),
        )
        logging.info(
            f"[vcf] label noise p={settings.rate} seed={settings.seed}: "
            f"{len(positions)} of {int((served_clean >= 0).sum())} labels of "
            f"{dataset.split} flipped, recorded in {path}"
        )
        if served is None:
            return noisy
        out = clean.astype(np.int64)
        out[served] = noisy
        return out

    return load


LABEL_SOURCE_LOADERS: Dict[str, Callable[[GenericSSLDataset, int], np.ndarray]] = {
    "vcf_fashion_mnist": _source_labels,
    "vcf_digits": _source_labels,
    CLUSTER_LABEL_SOURCE: _cluster_labels,
    "vcf_fashion_mnist_coarse": _coarse_labels,
    "vcf_fashion_mnist_tops": _source_labels,
}
LABEL_SOURCE_LOADERS.update(
    {
        NOISY_PREFIX + inner: _noisy_loader(inner)
        for inner in [*LABEL_SOURCE_LOADERS, *VISSL_NOISY_INNER]
    }
)

_original_load_labels = GenericSSLDataset.load_labels


def load_labels(self: GenericSSLDataset) -> None:
    ours = [s in LABEL_SOURCE_LOADERS for s in self.label_sources]
    if not any(ours):
        return _original_load_labels(self)
    if not all(ours):
        raise ValueError(
            f"LABEL_SOURCES {self.label_sources}: vissl_clusterfit label sources "
            f"({sorted(LABEL_SOURCE_LOADERS)}) cannot be mixed with VISSL's in one split"
        )
    self.label_objs = [
        LABEL_SOURCE_LOADERS[s](self, i) for i, s in enumerate(self.label_sources)
    ]
    self.labels_init = True


def served_labels(dataset: GenericSSLDataset, index: int = 0) -> np.ndarray:
    """The label of every dataset position (what ``dataset[i]["label"]`` holds for
    ``LABEL_SOURCES[index]``), without reading any image."""
    if not dataset.labels_init:
        dataset.load_labels()
    labels = np.asarray(dataset.label_objs[index])
    subset = subset_source_indices(dataset)
    return (labels if subset is None else labels[subset]).astype(np.int64)


def reload_labels(dataset: GenericSSLDataset) -> None:
    """Drop loaded labels so the next access reads the label files again (used by the
    hook after it wrote new cluster labels)."""
    dataset.label_objs = []
    dataset.labels_init = False
    dataset.load_labels()  # eagerly, so a bad file fails here and not in a worker


def install() -> None:
    if GenericSSLDataset.load_labels is not load_labels:
        GenericSSLDataset.load_labels = load_labels
