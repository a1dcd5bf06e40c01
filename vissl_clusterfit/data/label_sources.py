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
"""

from typing import Any, Callable, Dict

import numpy as np
from vissl.data.ssl_dataset import GenericSSLDataset

from vissl_clusterfit.data.cluster_labels import label_paths, load_cluster_labels


CLUSTER_LABEL_SOURCE = "vcf_cluster_labels"


def cluster_label_path(cfg: Any, split: str = "TRAIN", index: int = 0) -> str:
    """The label file a dataset split reads: its LABEL_PATHS entry, or for ``auto`` (or
    no entry) the labels file the extract-and-cluster hook writes."""
    paths = cfg["DATA"][split].get("LABEL_PATHS", [])
    if index < len(paths) and paths[index] not in ("", "auto"):
        return paths[index]
    from vissl_clusterfit.hooks.clusterfit_hook import clusterfit_output_dir

    name = cfg.VCF.CLUSTERFIT.NAME + ("" if split == "TRAIN" else "_test")
    return label_paths(clusterfit_output_dir(cfg), name)["labels"]


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
    if dataset.data_limit >= 0 and dataset._can_random_subset_data_sources():
        # GenericSSLDataset indexes label_objs with the source index of each subset
        # position: scatter so that position i still gets labels[i].
        if not dataset._subset_initialized:
            dataset._init_image_and_label_subset()
        full = np.full(len(dataset.data_objs[idx]), -1, dtype=np.int64)
        full[dataset.image_and_label_subset] = labels
        return full
    return labels


LABEL_SOURCE_LOADERS: Dict[str, Callable[[GenericSSLDataset, int], np.ndarray]] = {
    "vcf_fashion_mnist": _source_labels,
    "vcf_digits": _source_labels,
    CLUSTER_LABEL_SOURCE: _cluster_labels,
}

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


def reload_labels(dataset: GenericSSLDataset) -> None:
    """Drop loaded labels so the next access reads the label files again (used by the
    hook after it wrote new cluster labels)."""
    dataset.label_objs = []
    dataset.labels_init = False
    dataset.load_labels()  # eagerly, so a bad file fails here and not in a worker


def install() -> None:
    if GenericSSLDataset.load_labels is not load_labels:
        GenericSSLDataset.load_labels = load_labels
