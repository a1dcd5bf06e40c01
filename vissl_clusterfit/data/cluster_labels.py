"""Cluster label files: what the extract-and-cluster step writes and N_cf trains on.

For a prefix ``<dir>/<name>`` the files are

- ``<name>_labels.npy``: int64, one cluster id per sample of D_cf in dataset order;
  loadable by VISSL's own ``disk_filelist`` label source.
- ``<name>_centroids.npy``: float32 (K, D), in the clustered (pre-processed) space.
- ``<name>_distances.npy``: float32, squared distance of each sample to its centroid.
- ``<name>_pca.npz``: the fitted PCA, when PCA was used (to assign other splits).
- ``<name>_teacher_logits.npy``: N_pre's head outputs, with ``DISTILL`` (distillation
  baseline).
- ``<name>_meta.json``: K, layer, pooling, PCA settings, N_pre checkpoint and its hash,
  dataset name and length, seed, metrics, and ``fingerprint``: a hash of everything that
  determines the labels. It is written last: a prefix without it is incomplete.

Every file is written to a temporary name and renamed (atomic on POSIX), so a run killed
while writing leaves either the old complete set or no meta file, never a half file that
looks complete.
"""

import hashlib
import json
import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np


META_SUFFIX = "_meta.json"


def label_paths(output_dir: str, name: str) -> Dict[str, str]:
    prefix = os.path.join(output_dir, name)
    return {
        "labels": prefix + "_labels.npy",
        "centroids": prefix + "_centroids.npy",
        "distances": prefix + "_distances.npy",
        "pca": prefix + "_pca.npz",
        "teacher_logits": prefix + "_teacher_logits.npy",
        "meta": prefix + META_SUFFIX,
    }


def fingerprint(settings: Dict[str, Any]) -> str:
    """A stable hash of the JSON-serialisable settings that determine the labels."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: str, write: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npy(path: str, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, array))


def write_label_files(
    output_dir: str,
    name: str,
    labels: np.ndarray,
    centroids: np.ndarray,
    distances: np.ndarray,
    meta: Dict[str, Any],
    pca_state: Optional[Dict[str, Any]] = None,
    extra_arrays: Optional[Dict[str, np.ndarray]] = None,
) -> Dict[str, str]:
    """Write the label files atomically, the meta file last. Returns the paths."""
    paths = label_paths(output_dir, name)
    if os.path.exists(paths["meta"]):
        os.unlink(paths["meta"])  # the set is incomplete until the new meta lands
    save_npy(paths["labels"], np.asarray(labels, dtype=np.int64))
    save_npy(paths["centroids"], np.asarray(centroids, dtype=np.float32))
    save_npy(paths["distances"], np.asarray(distances, dtype=np.float32))
    for key, array in (extra_arrays or {}).items():
        save_npy(paths[key], array)
    if pca_state is not None:
        _atomic_write(paths["pca"], lambda f: np.savez(f, **pca_state))
    meta = dict(meta, labels_sha256=file_sha256(paths["labels"]), files=paths)
    _atomic_write(paths["meta"], lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return paths


def read_meta(output_dir: str, name: str) -> Optional[Dict[str, Any]]:
    """The meta of a complete label set, or None when there is none."""
    path = label_paths(output_dir, name)["meta"]
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_cluster_labels(
    path: str, expected_len: Optional[int] = None, what: str = "the dataset"
) -> np.ndarray:
    """Load and check a label file: 1-D integers, one per sample, in [0, K).

    K comes from the meta file beside it when there is one. Raises FileNotFoundError or
    ValueError naming the file and the fix.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"cluster label file {path} does not exist: produce it with the "
            "extract-and-cluster hook (config.VCF.CLUSTERFIT.ENABLED=true) or "
            "tools/run_distributed_engines.py engine_name=vcf_cluster, or fix "
            "DATA.TRAIN.LABEL_PATHS"
        )
    try:
        labels = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(
            f"cluster label file {path} is unreadable ({e}): delete it and re-run"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"cluster label file {path} must hold a 1-D integer array, got "
            f"{labels.dtype} {labels.shape}"
        )
    if expected_len is not None and len(labels) != expected_len:
        raise ValueError(
            f"cluster label file {path} has {len(labels)} labels but {what} has "
            f"{expected_len} samples: it was made for another dataset or DATA_LIMIT. "
            "Delete it to re-cluster, or point LABEL_PATHS at the matching file"
        )
    meta_path = (
        path[: -len("_labels.npy")] + META_SUFFIX
        if path.endswith("_labels.npy")
        else ""
    )
    k = None
    if meta_path and os.path.isfile(meta_path):
        with open(meta_path) as f:
            k = json.load(f).get("num_clusters")
    if len(labels) and (labels.min() < 0 or (k is not None and labels.max() >= k)):
        raise ValueError(
            f"cluster label file {path} has labels in [{labels.min()}, {labels.max()}], "
            f"outside [0, {k}) (K from {meta_path}): the file is corrupt, delete it"
        )
    return labels.astype(np.int64)
