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
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from vissl_clusterfit.cluster_step.runtime_checks import (
    check_data_limit,
    check_layer,
    check_transforms_fit,
)
from vissl_clusterfit.clustering.comm import Comm, rank_and_world


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
    num_workers: int = 0,
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
    (one trunk only).
    """
    rank, world = rank_and_world() if shard else (0, 1)
    n = len(dataset)
    batches = rank_batches(n, batch_size, rank, world, contiguous=not gather)
    loader = torch.utils.data.DataLoader(
        _IndexedImages(dataset), batch_sampler=batches, num_workers=num_workers
    )
    for trunk, layer, _ in trunks:
        trunk.to(device).eval()
        check_layer(trunk, layer)
    with contextlib.ExitStack() as stack:
        preact = None
        if preactivation:
            if len(trunks) != 1:
                raise ValueError("pre-activation features: extract one trunk at a time")
            preact = stack.enter_context(capture_preactivation(*trunks[0][:2]))
        local = _extract_local(
            trunks, loader, batches, device, rank, log_every_s, preact
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
) -> np.ndarray:
    """This rank's features, in the order of its batches."""
    # written in place into one preallocated array: a list of batches concatenated at
    # the end would hold the features twice at the peak
    n_local = sum(map(len, batches))
    local: Optional[np.ndarray] = None
    done, t0, last = 0, time.time(), time.time()
    for images, _ in loader:
        images = images.to(device)
        parts = []
        for trunk, layer, pooling in trunks:
            out = trunk(images, out_feat_keys=[layer])[0]
            out = preact["x"] if preact is not None else out
            parts.append(pool_features(out, pooling).float().cpu())
        feats = concat_npre_features(parts).numpy()
        if local is None:
            local = np.empty((n_local, feats.shape[1]), dtype=np.float32)
        local[done : done + len(feats)] = feats
        done += len(images)
        if time.time() - last > log_every_s:
            last = time.time()
            logging.info(
                f"[vcf] extracting features: rank {rank} {done}/{n_local} images, "
                f"{done / (last - t0):.0f} img/s"
            )
    if local is None:
        local = np.zeros((0, 0), np.float32)
    logging.info(
        f"[vcf] rank {rank} extracted {local.shape} in {time.time() - t0:.1f}s"
    )
    return local
