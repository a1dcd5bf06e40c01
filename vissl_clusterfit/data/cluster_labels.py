"""Cluster label files: what the extract-and-cluster step writes and N_cf trains on.

For a prefix ``<dir>/<name>`` the files are

- ``<name>_labels.npy``: int64, one cluster id per sample of D_cf in dataset order;
  loadable by VISSL's own ``disk_filelist`` label source.
- ``<name>_centroids.npy``: float32 (K, D), in the clustered (pre-processed) space.
- ``<name>_distances.npy``: float32, squared distance of each sample to its centroid.
- ``<name>_pca.npz``: the fitted PCA, when PCA was used (to assign other splits).
- ``<name>_teacher_logits.npy``: N_pre's head outputs, with ``DISTILL`` (distillation
  baseline).
- ``<name>_images.txt``: the ordered sample list the labels belong to, one
  ``<path>\t<size>`` (or ``<id>\t<content hash>``) line per label
  (data/dataset_identity.py); its sha256 is the meta's ``dataset_identity``.
- ``<name>_meta.json``: K, layer, pooling, PCA settings, N_pre checkpoint and its hash,
  dataset name and length, seed, metrics, and ``fingerprint``: a hash of everything that
  determines the labels. It is written last: a prefix without it is incomplete.

Every file is written with ``vissl_clusterfit.io.atomic_write`` (a temporary name, then
a rename), so a run killed while writing leaves either the old complete set or no meta
file, never a half file that looks complete.
"""

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from vissl_clusterfit.io import atomic_write, remove_stale_tmp_files


META_SUFFIX = "_meta.json"
TEST_SUFFIX = "_test"  # <name>_test_*: DATA.TEST assigned to the train centroids
IMAGES_SUFFIX = "_images.txt"  # the ordered sample list (data/dataset_identity.py)


def clusterfit_output_dir(output_dir: str, checkpoint_dir: str) -> str:
    """Where the label files live: ``VCF.CLUSTERFIT.OUTPUT_DIR``, or by default
    ``<CHECKPOINT.DIR>/clusterfit``."""
    return output_dir if output_dir else os.path.join(checkpoint_dir, "clusterfit")


def label_paths(output_dir: str, name: str) -> Dict[str, str]:
    prefix = os.path.join(output_dir, name)
    return {
        "labels": prefix + "_labels.npy",
        "centroids": prefix + "_centroids.npy",
        "distances": prefix + "_distances.npy",
        "pca": prefix + "_pca.npz",
        "teacher_logits": prefix + "_teacher_logits.npy",
        "images": prefix + IMAGES_SUFFIX,
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


def save_npy(path: str, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def write_label_files(
    output_dir: str,
    name: str,
    labels: np.ndarray,
    centroids: np.ndarray,
    distances: np.ndarray,
    meta: Dict[str, Any],
    pca_state: Optional[Dict[str, Any]] = None,
    extra_arrays: Optional[Dict[str, np.ndarray]] = None,
    sample_list: Optional[Callable[[str], Dict[str, Any]]] = None,
) -> Dict[str, str]:
    """Write the label files atomically, the meta file last. Returns the paths.

    ``sample_list(path)`` writes the ordered sample list to ``<name>_images.txt`` and
    returns its identity, recorded in the meta as ``dataset_identity``."""
    paths = label_paths(output_dir, name)
    if os.path.exists(paths["meta"]):
        os.unlink(paths["meta"])  # the set is incomplete until the new meta lands
    remove_stale_tmp_files(output_dir)
    arrays = {
        "labels": np.asarray(labels, dtype=np.int64),
        "centroids": np.asarray(centroids, dtype=np.float32),
        "distances": np.asarray(distances, dtype=np.float32),
        **(extra_arrays or {}),
    }
    for key, array in arrays.items():
        save_npy(paths[key], array)
    written = {key: paths[key] for key in arrays}
    if pca_state is not None:
        atomic_write(paths["pca"], lambda f: np.savez(f, **pca_state))
        written["pca"] = paths["pca"]
    if sample_list is not None:
        meta = dict(meta, dataset_identity=sample_list(paths["images"]))
        written["images"] = paths["images"]
    written["meta"] = paths["meta"]
    meta = dict(meta, labels_sha256=file_sha256(paths["labels"]), files=written)
    atomic_write(paths["meta"], lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return written


def read_meta(output_dir: str, name: str) -> Optional[Dict[str, Any]]:
    """The meta of a complete label set, or None when there is none. Raises
    ValueError naming the file when it is unreadable."""
    path = label_paths(output_dir, name)["meta"]
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cluster label meta file {path} is unreadable ({e}): delete "
            f"{os.path.join(output_dir, name)}_* to re-cluster"
        ) from None


def verify_label_set(output_dir: str, name: str, meta: Dict[str, Any]) -> None:
    """Check that the labels file of a complete set is the one its meta describes
    (present, same sha256): a deleted, tampered or swapped file is refused."""
    path = label_paths(output_dir, name)["labels"]
    fix = f"delete {os.path.join(output_dir, name)}_* to re-cluster"
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"cluster label file {path} is missing although its meta file exists: {fix}"
        )
    expected = meta.get("labels_sha256")
    if expected and file_sha256(path) != expected:
        raise ValueError(
            f"cluster label file {path} does not match the sha256 recorded in its meta "
            f"file (it was modified or replaced after it was written): {fix}"
        )


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
    # a file of ours has a meta beside it: K and the sha256 come from there
    meta, output_dir, name = None, "", ""
    if path.endswith("_labels.npy"):
        output_dir, name = os.path.split(path[: -len("_labels.npy")])
        meta = read_meta(output_dir, name)
    problems = _label_problems(labels, meta)
    if problems:
        fix = (
            f"delete {os.path.join(output_dir, name)}_* to re-cluster"
            if meta is not None
            else "re-run the cluster step, or point LABEL_PATHS at a label file of it"
        )
        raise ValueError(
            f"cluster label file {path}: {'; '.join(problems)}. It is corrupt or was "
            f"edited after it was written: {fix}"
        )
    if meta is not None:
        verify_label_set(output_dir, name, meta)
    return labels.astype(np.int64)


def _label_problems(labels: np.ndarray, meta: Optional[Dict[str, Any]]) -> List[str]:
    """What is wrong with the values of a label file: labels are in [0, K) (K: the
    meta's num_clusters), and -1 only for the images that did not decode
    (ON_BAD_IMAGE=skip), as many as the meta lists under bad_images."""
    if not len(labels):
        return []
    problems = []
    if labels.min() < -1:
        problems.append(f"labels down to {labels.min()} (-1 is the only negative one)")
    k = meta.get("num_clusters") if meta else None
    if k is not None and labels.max() >= k:
        problems.append(f"labels up to {labels.max()}, outside [0, {k}) (K: its meta)")
    negative = int((labels == -1).sum())
    skipped = int(((meta or {}).get("bad_images") or {}).get("count", 0))
    if negative != skipped and meta is None:
        problems.append(
            f"{negative} labels are -1, which only marks an image that did not decode "
            "(listed under bad_images in the meta file), but there is no meta file"
        )
    elif negative != skipped:
        problems.append(
            f"{negative} labels are -1 (images that did not decode) but its meta lists "
            f"{skipped} under bad_images"
        )
    return problems
