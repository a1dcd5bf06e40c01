"""Feature extraction of a dataset, sharded over VISSL's processes.

ClusterFit (Yan et al. 2020, Sec. 3.1) clusters N_pre's features at one layer (res5 by
default); DeepCluster (thesis Sec. 3.1) those of the network being trained.

Sharding: the dataset is cut into global batches of ``batch_size`` images; rank r takes
batches r, r+W, r+2W... Every image is therefore computed inside the same batch whatever
the number of processes, so features (and labels) are bit-identical with 1 or N
processes. Rank 0 gathers them in dataset order.
"""

import contextlib
import copy
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from vissl_clusterfit.cluster_step import feature_store
from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.log_lines import EXTRACTION_LINE
from vissl_clusterfit.cluster_step.runtime_checks import (
    check_data_limit,
    check_layer,
    check_transforms_fit,
)
from vissl_clusterfit.clustering.comm import Comm, barrier, rank_and_world
from vissl_clusterfit.io import remove_stale_tmp_files


# (trunk, feature name, pooling): one entry per network whose features are concatenated
TrunkLayer = Tuple[torch.nn.Module, str, str]


class SingleFeatureTrunk(torch.nn.Module):
    """A module seen by ``extract_features`` as a trunk with one feature,
    ``feature``: ``compute(x)`` of the wrapped module (e.g. a model's logits, or a
    trunk's res5 pooled to a grid)."""

    def __init__(self, module: torch.nn.Module, feature: str) -> None:
        super().__init__()
        self.module = module
        self.feat_eval_mapping = {feature: feature}

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, out_feat_keys: Optional[List[str]] = None
    ) -> List[torch.Tensor]:
        return [self.compute(x)]


def ground_truth(dataset: Any) -> Optional[np.ndarray]:
    """The data source's class labels (for cluster metrics only), when it has any."""
    data_obj = dataset.data_objs[0]
    if hasattr(data_obj, "get_labels"):
        return np.asarray(data_obj.get_labels(), dtype=np.int64)
    return None


def pool_features(feat: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, D): global average / max pooling or flattening (the name
    is validated with the config: params.POOLINGS)."""
    if feat.dim() == 2:
        return feat
    if pooling == "avg":
        return feat.flatten(2).mean(-1)
    if pooling == "max":
        return feat.flatten(2).amax(-1)
    if pooling == "flatten":
        return feat.flatten(1)
    raise ValueError(f"pooling={pooling}: use avg, max or flatten")


def concat_npre_features(parts: List[torch.Tensor]) -> torch.Tensor:
    """Multi-task ClusterFit (paper, supplementary): each N_pre's features L2-normalised,
    then concatenated, so no network dominates the distances by the scale or width of
    its features. One N_pre: unchanged (L2_NORM / PCA apply later)."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat([torch.nn.functional.normalize(p, dim=1) for p in parts], 1)


def last_relu(trunk: torch.nn.Module, layer: str) -> torch.nn.ReLU:
    """The ReLU that produces ``layer``'s output: the last ReLU module of the block the
    trunk maps ``layer`` to (torchvision's and VISSL's ResNet blocks call their ``relu``
    last on ``out + identity``)."""
    blocks = getattr(trunk, "_feature_blocks", None)
    mapping = getattr(trunk, "feat_eval_mapping", None) or {}
    block = blocks[mapping.get(layer, layer)] if blocks is not None else None
    relus = (
        [m for m in block.modules() if isinstance(m, torch.nn.ReLU)] if block else []
    )
    if not relus:
        raise ValueError(
            f"pre-activation features of {layer}: no ReLU found in the block of "
            f"{type(trunk).__name__} that produces it; set PREACTIVATION: False"
        )
    return relus[-1]


@contextlib.contextmanager
def capture_preactivation(trunk: torch.nn.Module, layer: str):
    """Yields a dict whose ``"x"`` holds, after each forward, the input of the last
    call of ``layer``'s final ReLU: the pre-activation features (DeepCluster thesis
    Sec. 3.1 clusters the penultimate layer before its ReLU). Cloned, because the ReLU
    may run in place."""
    holder: Dict[str, torch.Tensor] = {}

    def keep_input(_module: torch.nn.Module, inputs: Tuple[torch.Tensor]) -> None:
        holder["x"] = inputs[0].detach().clone()

    handle = last_relu(trunk, layer).register_forward_pre_hook(keep_input)
    try:
        yield holder
    finally:
        handle.remove()


def rank_batches(
    n: int, batch_size: int, rank: int, world: int, contiguous: bool = False
) -> List[np.ndarray]:
    """Global batches of ``batch_size`` consecutive indices; rank r gets r, r+W, ...

    ``contiguous``: rank r gets a contiguous run of global batches instead (ranks in
    order cover the dataset in order), as the sharded k-means needs (its global row
    order is rank 0's rows, then rank 1's...). Same batches, so same features.
    """
    if contiguous:
        num = (n + batch_size - 1) // batch_size
        first, last = rank * num // world, (rank + 1) * num // world
        return [
            np.arange(b * batch_size, min((b + 1) * batch_size, n))
            for b in range(first, last)
        ]
    starts = range(rank * batch_size, n, world * batch_size)
    return [np.arange(s, min(s + batch_size, n)) for s in starts]


class _IndexedImages(torch.utils.data.Dataset):
    """Item i -> (transformed image tensor of dataset[i], i)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, int]:
        return self.dataset[idx]["data"][0], idx


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
        _IndexedImages(dataset),
        batch_sampler=batches,
        **settings.dataloader_kwargs(device),
    )
    with _prepared(trunks, device, preactivation, settings) as preact:
        local = _extract_local(
            trunks, data, batches, device, rank, log_every_s, preact, settings
        )
    if world == 1:
        return local
    if not gather:
        return _with_common_width(local)
    return _gather_in_order(local, n, batch_size, rank, world)


@contextlib.contextmanager
def _prepared(
    trunks: List[TrunkLayer],
    device: torch.device,
    preactivation: bool,
    settings: ExtractionLoader,
) -> Iterator[Optional[Dict[str, torch.Tensor]]]:
    """Trunks on ``device`` in eval mode (and the loader's memory format) with their
    layer checked; yields the pre-activation holder (``capture_preactivation``) or
    None."""
    for trunk, layer, _ in trunks:
        trunk.to(device, memory_format=settings.memory_format()).eval()
        check_layer(trunk, layer)
    if not preactivation:
        yield None
        return
    if len(trunks) != 1:
        raise ValueError("pre-activation features: extract one trunk at a time")
    with capture_preactivation(*trunks[0][:2]) as preact:
        yield preact


def _with_common_width(local: np.ndarray) -> np.ndarray:
    """A rank without an extraction batch (fewer images than batches x ranks) holds a
    (0, 0) array: give it the others' feature width, (0, D), which the sharded k-means
    takes as an empty shard. A collective: every rank calls it."""
    widths = Comm().all_gather(torch.tensor([local.shape[1]], dtype=torch.int64))
    dim = int(widths.max())
    return local if local.shape[1] == dim else np.zeros((0, dim), np.float32)


def _feature_batches(
    trunks: List[TrunkLayer],
    loader: Any,
    device: torch.device,
    preact: Optional[Dict[str, torch.Tensor]],
    settings: ExtractionLoader,
) -> Iterator[np.ndarray]:
    """float32 (B, D) features of each batch of ``loader``, in its order."""
    for images, _ in loader:
        images = images.to(
            device, non_blocking=True, memory_format=settings.memory_format()
        )
        parts = []
        with settings.autocast_context(device):
            for trunk, layer, pooling in trunks:
                out = trunk(images, out_feat_keys=[layer])[0]
                out = preact["x"] if preact is not None else out
                parts.append(pool_features(out.float(), pooling).cpu())
        yield concat_npre_features(parts).numpy()


class _Progress:
    """Logs images done and img/s at most every ``every_s`` seconds."""

    def __init__(self, rank: int, total: int, every_s: float) -> None:
        self.rank, self.total, self.every_s = rank, total, every_s
        self.done, self.t0, self.last = 0, time.time(), time.time()

    def add(self, count: int) -> None:
        self.done += count
        if time.time() - self.last > self.every_s:
            self.last = time.time()
            logging.info(
                f"[vcf] extracting features: rank {self.rank} {self.done}/{self.total} "
                f"images, {self.done / (self.last - self.t0):.0f} img/s"
            )


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
    progress = _Progress(rank, n_local, log_every_s)
    # when the first batch's features were done: the steady rate excludes start-up
    first, first_n = 0.0, 0
    for feats in _feature_batches(trunks, loader, device, preact, settings):
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
    skipped (a killed run resumes); rank 0 writes the manifest when all exist. Called
    on every rank; returns ``store_dir``."""
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
    with _prepared(trunks, device, preactivation, settings) as preact:
        if batches:
            data = torch.utils.data.DataLoader(
                _IndexedImages(dataset),
                batch_sampler=batches,
                **settings.dataloader_kwargs(device),
            )
            _write_shards(
                _feature_batches(trunks, data, device, preact, settings),
                todo,
                ranges,
                store_dir,
                dtype,
                _Progress(rank, sum(map(len, batches)), log_every_s),
            )
    barrier()
    if rank == 0:
        feature_store.write_manifest(store_dir, n, rows_per_shard, dtype)
    barrier()
    return store_dir


def _write_shards(
    feats: Iterator[np.ndarray],
    todo: List[int],
    ranges: List[Tuple[int, int]],
    store_dir: str,
    dtype: str,
    progress: _Progress,
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
