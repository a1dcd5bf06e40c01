"""Feature extraction to shards on disk (:mod:`.feature_store`), for data sets whose
features do not fit in memory (DeeperCluster, Caron et al. 2019, Sec. 4.2 clusters
features of the whole data set): shard s holds dataset rows [s R, (s + 1) R), computed
by rank s mod W in batches starting at s R, so the shards do not depend on W.
"""

import logging
import os
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch

from vissl_clusterfit.cluster_step import feature_store
from vissl_clusterfit.cluster_step.extraction_batches import (
    ExtractionProgress,
    IndexedImages,
    feature_batches,
)
from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.extraction_trunks import TrunkLayer, prepared_trunks
from vissl_clusterfit.clustering.comm import barrier, rank_and_world, run_on_rank0
from vissl_clusterfit.io import remove_stale_tmp_files


@torch.no_grad()
def extract_to_shards(
    trunks: List[TrunkLayer],
    dataset: Any,
    batch_size: int,
    device: torch.device,
    store_dir: str,
    rows_per_shard: int,
    dtype: str = "float32",
    loader: Optional[ExtractionLoader] = None,
    log_every_s: float = 10.0,
    preactivation: bool = False,
) -> str:
    """Features of every sample as shards under ``store_dir`` (see
    :mod:`.feature_store`): shard s = dataset rows [s R, (s + 1) R) on rank s mod W, in
    batches starting at s R, so shards are identical for any W. Finished shards are
    skipped (a killed run resumes); rank 0 writes the manifest when all exist (when it
    cannot, every rank raises its error). Called on every rank; returns ``store_dir``.
    """
    settings = loader or ExtractionLoader()
    rank, world = rank_and_world()
    n = len(dataset)
    ranges = feature_store.shard_ranges(n, rows_per_shard)
    os.makedirs(store_dir, exist_ok=True)
    remove_stale_tmp_files(store_dir)  # of killed writers only (live ones are kept)
    todo = [
        i
        for i in range(rank, len(ranges), world)
        if not feature_store.shard_complete(
            feature_store.shard_path(store_dir, i), ranges[i][1] - ranges[i][0]
        )
    ]
    mine = len(range(rank, len(ranges), world))
    logging.info(
        f"[vcf] rank {rank}: {mine - len(todo)} of its {mine} feature shards already "
        f"in {store_dir}, extracting {len(todo)}"
    )
    batches = [
        np.arange(s, min(s + batch_size, ranges[i][1]))
        for i in todo
        for s in range(ranges[i][0], ranges[i][1], batch_size)
    ]
    with prepared_trunks(trunks, device, preactivation, settings) as preact:
        if batches:
            data = torch.utils.data.DataLoader(
                IndexedImages(dataset),
                batch_sampler=batches,
                **settings.dataloader_kwargs(device),
            )
            _write_shards(
                feature_batches(trunks, data, device, preact, settings),
                todo,
                ranges,
                store_dir,
                dtype,
                ExtractionProgress(rank, sum(map(len, batches)), log_every_s),
            )
    barrier()  # every shard exists
    run_on_rank0(
        lambda: feature_store.write_manifest(store_dir, n, rows_per_shard, dtype),
        f"writing the manifest of the feature shards in {store_dir}",
    )
    return store_dir


def _write_shards(
    feats: Iterator[np.ndarray],
    todo: List[int],
    ranges: List[Tuple[int, int]],
    store_dir: str,
    dtype: str,
    progress: ExtractionProgress,
) -> None:
    """Fill the shards ``todo`` in order from the batch stream; write each when full."""
    for i in todo:
        rows = ranges[i][1] - ranges[i][0]
        shard: Optional[np.ndarray] = None
        done = 0
        while done < rows:
            batch = next(feats)
            if shard is None:
                shard = np.empty((rows, batch.shape[1]), dtype=np.float32)
            shard[done : done + len(batch)] = batch
            done += len(batch)
            progress.add(len(batch))
        feature_store.write_shard(feature_store.shard_path(store_dir, i), shard, dtype)
