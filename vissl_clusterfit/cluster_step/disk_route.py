"""The cluster step from features on disk, in bounded memory (``FEATURE_SHARDS``).

ClusterFit at ImageNet scale (Yan et al. 2020, Sec. 4) and DeeperCluster's 96M images
(Caron et al. 2019, Sec. 4): every rank writes its feature shards
(:func:`.shard_extraction.extract_to_shards`), or precomputed features are opened
(:mod:`.feature_store`); then :func:`vissl_clusterfit.clustering.bounded_kmeans` trains
on a seeded sample on rank 0 and every rank assigns its shards into memory-mapped
label and distance arrays. Nothing of size N x D is ever gathered or held.
"""

import logging
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import (
    extraction_trunks,
    feature_store,
    shard_extraction,
)
from vissl_clusterfit.cluster_step.params import ClusterFitParams
from vissl_clusterfit.cluster_step.routes import ClusterResult
from vissl_clusterfit.clustering.comm import run_on_rank0
from vissl_clusterfit.data.cluster_labels import fingerprint
from vissl_clusterfit.data.dataset_identity import sample_paths


# The label settings that determine the features (not K, PCA, seed, k-means backend).
FEATURE_KEYS = (
    "npre",
    "npre_features",
    "transforms",
    "batch_size",
    "autocast",
    "dataset",
)


def store_dir(params: ClusterFitParams, settings: Dict[str, Any]) -> str:
    """``<OUTPUT_DIR>/features_<hash>``, the hash of what determines the
    features (N_pre and its checkpoint, layer, transforms, data, dtype): shards of other
    settings never mix with these, a re-run finds its own, and re-clustering with
    another K or seed reuses kept shards."""
    key = {k: settings[k] for k in FEATURE_KEYS if k in settings}
    key["dtype"] = params.shards.dtype
    return os.path.join(params.output_dir, f"features_{fingerprint(key)[:12]}")


def _sample_list_expected(dataset: Any) -> Optional[List[str]]:
    """DATA.TRAIN's image paths in order (after DATA_LIMIT) for SAMPLE_LIST to match;
    None when its source has no files (the list cannot be checked)."""
    paths = list(sample_paths(dataset))
    if not paths:
        logging.warning(
            f"[vcf] {feature_store.SAMPLE_LIST_KEY} is not checked: DATA.TRAIN's "
            "source has no image files"
        )
    return paths or None


def open_features(
    params: ClusterFitParams,
    dataset: Any,
    device: torch.device,
    settings: Dict[str, Any],
    trunks: Callable[[], List[extraction_trunks.TrunkLayer]],
) -> Tuple[feature_store.FeatureStore, Optional[str]]:
    """(the store, its directory when this step made it): precomputed features, or
    shards extracted now (finished shards of a killed run are kept)."""
    shards, n = params.shards, len(dataset)
    if shards.precomputed.endswith(".npy"):
        expected = _sample_list_expected(dataset) if shards.sample_list else None
        return (
            feature_store.npy_matrix(
                shards.precomputed, n, shards.sample_list, expected
            ),
            None,
        )
    if os.path.isfile(os.path.join(shards.precomputed, feature_store.MANIFEST)):
        return feature_store.FeatureStore.open(shards.precomputed), None  # kept shards
    if shards.precomputed:
        store = feature_store.vissl_extracted(
            shards.precomputed, shards.precomputed_split, shards.layer, n
        )
        return store, None
    folder = store_dir(params, settings)
    if os.path.isfile(os.path.join(folder, feature_store.MANIFEST)):
        logging.info(f"[vcf] reusing the complete feature shards in {folder}")
        return feature_store.FeatureStore.open(folder), folder
    shard_extraction.extract_to_shards(
        trunks(),
        dataset,
        params.batch_size,
        device,
        folder,
        shards.rows,
        shards.dtype,
        params.loader,
    )
    return feature_store.FeatureStore.open(folder), folder


def label_arrays(folder: str, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, distances) memory-mapped in ``folder``, shared by every rank (rank 0
    creates them; every rank of ``torch.distributed`` must call this, and raises rank
    0's error when it cannot create them)."""
    paths = [os.path.join(folder, f"assign_{k}.npy") for k in ("labels", "dist")]

    def create() -> None:
        os.makedirs(folder, exist_ok=True)
        for path, dtype in zip(paths, (np.int64, np.float32)):
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n,)).flush()

    run_on_rank0(create, f"creating the label arrays in {folder}")
    return tuple(np.lib.format.open_memmap(p, mode="r+") for p in paths)


def scratch_dir(params: ClusterFitParams, folder: Optional[str]) -> str:
    """Where the label arrays are assembled: in the shard folder, else beside the
    label files."""
    return folder or os.path.join(params.output_dir, f"{params.name}_assign_tmp")


def cluster_from_disk(
    params: ClusterFitParams, store: feature_store.FeatureStore, scratch: str
) -> Tuple[Optional[ClusterResult], Dict[str, Any]]:
    """Bounded k-means over ``store`` on every rank: (result on rank 0, meta extras)."""
    t0 = time.time()
    labels, distances = label_arrays(scratch, store.num_rows)
    prep = {k: v for k, v in params.preprocessing().items() if k != "seed"}
    res = clustering.bounded_kmeans(
        store,
        params.num_clusters,
        labels,
        distances,
        niter=params.niter,
        seed=params.seed,
        rows_per_centroid=params.max_points_per_centroid,
        backend=params.shards.kmeans,
        **prep,
    )
    extra = {
        "kmeans": {
            "route": "bounded (features on disk)",
            "backend": res.backend,
            "training_sample_rows": res.sample_rows,
            "rows_per_centroid": params.max_points_per_centroid,
        },
        "phase_time_s": {k: round(v, 3) for k, v in res.time_s.items()},
    }
    logging.info(f"[vcf] bounded k-means: {extra}")
    if res.labels is None:
        return None, extra
    result = ClusterResult(
        labels=res.labels,
        centroids=res.centroids,
        distances=res.distances,
        pca=res.pca,
        n_empty_reseeded=res.n_empty_reseeded,
        objective=res.objective,
        feature_dim=store.dim,
        clustered_dim=res.clustered_dim,
        time_s=time.time() - t0,
        backend=res.backend,
    )
    return result, extra


def clean_up(folder: Optional[str], scratch: str, keep: bool) -> None:
    """Rank 0, after the label files are written: delete the scratch label arrays and,
    unless ``keep``, the shards this step extracted."""
    if folder is not None and not keep:
        shutil.rmtree(folder, ignore_errors=True)
        logging.info(f"[vcf] deleted the feature shards {folder} (FEATURE_SHARDS.KEEP)")
    for name in ("assign_labels.npy", "assign_dist.npy"):
        path = os.path.join(scratch, name)
        if os.path.exists(path):
            os.unlink(path)
    if scratch != folder and os.path.isdir(scratch) and not os.listdir(scratch):
        os.rmdir(scratch)
