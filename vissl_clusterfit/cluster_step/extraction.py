"""Feature extraction of a dataset, sharded over VISSL's processes.

ClusterFit (Yan et al. 2020, Sec. 3.1) clusters N_pre's features at one layer (res5 by
default); DeepCluster (thesis Sec. 3.1) those of the network being trained.

Sharding: the dataset is cut into global batches of ``batch_size`` images; rank r takes
batches r, r+W, r+2W... Every image is therefore computed inside the same batch whatever
the number of processes, so features (and labels) are bit-identical with 1 or N
processes. Rank 0 gathers them in dataset order. The networks are
:mod:`.extraction_trunks`, the forward loop :mod:`.extraction_batches`; extraction to
shards on disk is :mod:`.shard_extraction`.
"""

import copy
import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from vissl_clusterfit.cluster_step.extraction_batches import (
    ExtractionProgress,
    IndexedImages,
    feature_batches,
    rank_batches,
)
from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.extraction_trunks import TrunkLayer, prepared_trunks
from vissl_clusterfit.cluster_step.runtime_checks import (
    check_data_limit,
    check_transforms_fit,
)
from vissl_clusterfit.clustering.comm import Comm, rank_and_world
from vissl_clusterfit.runtime.log_lines import EXTRACTION_LINE


def ground_truth(dataset: Any) -> Optional[np.ndarray]:
    """The data source's class labels (for cluster metrics only), when it has any."""
    data_obj = dataset.data_objs[0]
    if hasattr(data_obj, "get_labels"):
        return np.asarray(data_obj.get_labels(), dtype=np.int64)
    return None


def extraction_dataset(
    cfg: Any,
    transforms: Sequence[Dict[str, Any]],
    split: str = "TRAIN",
    transforms_key: str = "",
) -> Any:
    """The split's GenericSSLDataset with the given deterministic transforms and no
    labels (the data as the extracted network sees it). Checked before any work: its
    DATA_LIMIT against the data set and, when ``transforms_key`` names the transforms'
    config key, the transforms against its first image."""
    from vissl.data import build_dataset

    ecfg = copy.deepcopy(cfg)
    split_cfg = ecfg.DATA[split]
    split_cfg.TRANSFORMS = [dict(t) for t in transforms]
    split_cfg.LABEL_SOURCES = []
    split_cfg.LABEL_TYPE = "sample_index"
    dataset = build_dataset(ecfg, split)
    check_data_limit(dataset, split)
    if transforms_key:
        check_transforms_fit(dataset, transforms_key, split)
    return dataset


def _gather_in_order(
    local: np.ndarray, n: int, batch_size: int, rank: int, world: int
) -> Optional[np.ndarray]:
    """Rank 0: every rank's rows placed at their dataset positions; None elsewhere.
    A rank without a batch sends an empty array (fewer images than batches x ranks)."""
    gathered: Optional[List[Any]] = [None] * world if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if rank != 0:
        return None
    dim = max(g.shape[1] for g in gathered if g.size)
    out = np.empty((n, dim), dtype=np.float32)
    for r, g in enumerate(gathered):
        batches = rank_batches(n, batch_size, r, world)
        if batches:
            out[np.concatenate(batches)] = g
    return out


@torch.no_grad()
def extract_features(
    trunks: List[TrunkLayer],
    dataset: Any,
    batch_size: int,
    device: torch.device,
    loader: Optional[ExtractionLoader] = None,
    log_every_s: float = 10.0,
    shard: bool = True,
    gather: bool = True,
    preactivation: bool = False,
) -> Optional[np.ndarray]:
    """Features of every sample, the pooled layer of each trunk (several trunks:
    multi-task ClusterFit, ``concat_npre_features``), on rank 0 as ``(N, D)`` float32
    in dataset order; None on other ranks.

    ``shard=False``: this process alone extracts everything (no collective calls).
    ``gather=False``: nothing is gathered; every rank returns the features of its own
    contiguous block of the dataset (``rank_batches(..., contiguous=True)``), for the
    sharded k-means. ``preactivation``: the layer's features before its final ReLU
    (one trunk only). ``loader``: workers, pinning, channels_last, autocast (default:
    float32, no workers); with channels_last the trunks are converted in place.
    """
    settings = loader or ExtractionLoader()
    rank, world = rank_and_world() if shard else (0, 1)
    logging.info(f"[vcf] extraction: {settings}, batch {batch_size}, {device}")
    n = len(dataset)
    batches = rank_batches(n, batch_size, rank, world, contiguous=not gather)
    data = torch.utils.data.DataLoader(
        IndexedImages(dataset),
        batch_sampler=batches,
        **settings.dataloader_kwargs(device),
    )
    with prepared_trunks(trunks, device, preactivation, settings) as preact:
        local = _extract_local(
            trunks, data, batches, device, rank, log_every_s, preact, settings
        )
    if world == 1:
        return local
    if not gather:
        return _with_common_width(local)
    return _gather_in_order(local, n, batch_size, rank, world)


def _with_common_width(local: np.ndarray) -> np.ndarray:
    """A rank without an extraction batch (fewer images than batches x ranks) holds a
    (0, 0) array: give it the others' feature width, (0, D), which the sharded k-means
    takes as an empty shard. A collective: every rank calls it."""
    widths = Comm().all_gather(torch.tensor([local.shape[1]], dtype=torch.int64))
    dim = int(widths.max())
    return local if local.shape[1] == dim else np.zeros((0, dim), np.float32)


def _extract_local(
    trunks: List[TrunkLayer],
    loader: Any,
    batches: List[np.ndarray],
    device: torch.device,
    rank: int,
    log_every_s: float,
    preact: Optional[Dict[str, torch.Tensor]],
    settings: ExtractionLoader,
) -> np.ndarray:
    """This rank's features, in the order of its batches."""
    # written in place into one preallocated array: a list of batches concatenated at
    # the end would hold the features twice at the peak
    n_local = sum(map(len, batches))
    local: Optional[np.ndarray] = None
    progress = ExtractionProgress(rank, n_local, log_every_s)
    # when the first batch's features were done: the steady rate excludes start-up
    first, first_n = 0.0, 0
    for feats in feature_batches(trunks, loader, device, preact, settings):
        if not first:
            first, first_n = time.time(), len(feats)
        if local is None:
            local = np.empty((n_local, feats.shape[1]), dtype=np.float32)
        local[progress.done : progress.done + len(feats)] = feats
        progress.add(len(feats))
    if local is None:
        local = np.zeros((0, 0), np.float32)
    end = time.time()
    steady = (progress.done - first_n) / (end - first) if first and end > first else 0.0
    logging.info(
        EXTRACTION_LINE.format(
            rank=rank,
            n=local.shape[0],
            dim=local.shape[1],
            total=end - progress.t0,
            first=(first or end) - progress.t0,
            rate=steady,
        )
    )
    return local
