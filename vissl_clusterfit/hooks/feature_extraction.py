"""Load N_pre and extract features of a dataset, sharded over VISSL's processes.

ClusterFit (Yan et al. 2020, Sec. 3.1) clusters features of a pre-trained N_pre taken at
one layer (res5 / penultimate by default). N_pre may have another architecture than the
N_cf being trained, so we build its trunk from its own config: ``NPRE_CONFIG`` (a config
name, composed like ``config=...``) or, by default, the ``train_config.yaml`` VISSL wrote
next to the checkpoint.

Sharding: the dataset is cut into global batches of ``BATCHSIZE`` images, rank r takes
batches r, r+W, r+2W... Every image is therefore computed inside the same batch whatever
the number of processes, so features (and labels) are bit-identical with 1 or N
processes. Rank 0 gathers them in dataset order.
"""

import copy
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import yaml
from vissl.config import AttrDict


POOLINGS = ("avg", "max", "flatten")


def _rank_world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def ground_truth(dataset: Any) -> Optional[np.ndarray]:
    """The data source's class labels (for cluster metrics only), when it has any."""
    data_obj = dataset.data_objs[0]
    if hasattr(data_obj, "get_labels"):
        return np.asarray(data_obj.get_labels(), dtype=np.int64)
    return None


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a VISSL checkpoint on CPU with clear errors for missing or corrupt files."""
    if not path:
        raise ValueError(
            "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT is empty: set it to the N_pre "
            "checkpoint (e.g. <pretrain CHECKPOINT.DIR>/model_final_checkpoint_phaseN.torch)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"N_pre checkpoint {path} does not exist: check "
            "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT (pre-train N_pre first)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(
            f"N_pre checkpoint {path} is corrupt or not a torch file ({type(e).__name__}: "
            f"{e}): re-run the pre-training or point NPRE_CHECKPOINT at a good checkpoint"
        )


def trunk_state_dict(checkpoint: Dict[str, Any], path: str) -> Dict[str, torch.Tensor]:
    """The trunk weights of a VISSL training checkpoint (or of a plain trunk state)."""
    try:
        return checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]
    except (KeyError, TypeError):
        pass
    if "trunk" in checkpoint:
        return checkpoint["trunk"]
    raise ValueError(
        f"N_pre checkpoint {path} has no trunk weights (expected "
        "classy_state_dict.base_model.model.trunk, as VISSL's training writes)"
    )


def npre_model_config(
    checkpoint_path: str, config_name: str, overrides: List[str]
) -> AttrDict:
    """N_pre's MODEL config: from ``config_name`` or the train_config.yaml beside the
    checkpoint."""
    if config_name:
        from vissl_clusterfit.launcher import compose_config

        _, cfg = compose_config(
            [f"config={config_name}", *overrides], dump_config=False
        )
        return cfg.MODEL
    yaml_path = os.path.join(
        os.path.dirname(os.path.abspath(checkpoint_path)), "train_config.yaml"
    )
    if not os.path.isfile(yaml_path):
        raise FileNotFoundError(
            f"N_pre's model config: {yaml_path} does not exist. Set "
            "config.VCF.CLUSTERFIT.NPRE_CONFIG to the config N_pre was trained with "
            "(e.g. vissl_clusterfit/pretrain/rotnet_fmnist_cpu)"
        )
    with open(yaml_path) as f:
        return AttrDict(yaml.safe_load(f)["MODEL"])


def build_npre_trunk(
    checkpoint_path: str, config_name: str = "", overrides: Optional[List[str]] = None
) -> torch.nn.Module:
    """N_pre's trunk with the checkpoint's weights, in eval mode."""
    from vissl.models.trunks import get_model_trunk

    checkpoint = load_checkpoint(checkpoint_path)
    model_cfg = npre_model_config(checkpoint_path, config_name, list(overrides or []))
    model_cfg = copy.deepcopy(model_cfg)
    # extraction runs on the plain trunk: no eval-mode feature pooling from the config
    model_cfg.FEATURE_EVAL_SETTINGS.EVAL_MODE_ON = False
    trunk = get_model_trunk(model_cfg.TRUNK.NAME)(model_cfg, model_cfg.TRUNK.NAME)
    state = trunk_state_dict(checkpoint, checkpoint_path)
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(
            f"N_pre checkpoint {checkpoint_path} does not match its model config "
            f"({model_cfg.TRUNK.NAME}): missing {missing[:5]}... Set NPRE_CONFIG to "
            "the config it was trained with"
        )
    return trunk.eval()


class TeacherLogits(torch.nn.Module):
    """N_pre's whole model (trunk + heads) exposed like a trunk with one feature,
    ``logits``: the last head's output. Used for the distillation baseline."""

    feat_eval_mapping = {"logits": "logits"}

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: torch.Tensor, out_feat_keys: Optional[List[str]] = None
    ) -> List[torch.Tensor]:
        out = self.model(x)
        while isinstance(out, (list, tuple)):
            out = out[-1]
        return [out]


def build_npre_model(
    checkpoint_path: str, config_name: str = "", overrides: Optional[List[str]] = None
) -> TeacherLogits:
    """N_pre's full VISSL model (trunk and heads) with the checkpoint's weights, eval mode."""
    from vissl.models import build_model

    checkpoint = load_checkpoint(checkpoint_path)
    model_cfg = copy.deepcopy(
        npre_model_config(checkpoint_path, config_name, list(overrides or []))
    )
    model_cfg.FEATURE_EVAL_SETTINGS.EVAL_MODE_ON = False
    model = build_model(model_cfg, AttrDict({"name": "sgd"}))
    try:
        model.set_classy_state(checkpoint["classy_state_dict"]["base_model"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(
            f"N_pre checkpoint {checkpoint_path} has no trunk+heads matching its config "
            f"({e}); distillation needs a checkpoint written by VISSL's training"
        )
    return TeacherLogits(model).eval()


def feature_names(trunk: torch.nn.Module) -> List[str]:
    mapping = getattr(trunk, "feat_eval_mapping", None)
    if mapping:
        return list(mapping.keys())
    blocks = getattr(trunk, "_feature_blocks", None)
    return list(blocks.keys()) if blocks is not None else []


def check_layer(trunk: torch.nn.Module, layer: str) -> None:
    names = feature_names(trunk)
    if layer not in names:
        raise ValueError(
            f"config.VCF.CLUSTERFIT.FEATURE_LAYER={layer} is not a feature of N_pre's "
            f"trunk ({type(trunk).__name__}); available: {', '.join(names)}"
        )


def pool_features(feat: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, D): global average / max pooling or flattening."""
    if feat.dim() == 2:
        return feat
    if pooling == "avg":
        return feat.flatten(2).mean(-1)
    if pooling == "max":
        return feat.flatten(2).amax(-1)
    if pooling == "flatten":
        return feat.flatten(1)
    raise ValueError(
        f"config.VCF.CLUSTERFIT.POOLING={pooling} is not supported: use one of {POOLINGS}"
    )


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


def extraction_dataset(cfg: AttrDict, split: str = "TRAIN") -> Any:
    """The split's GenericSSLDataset with the deterministic extraction transforms and no
    labels (D_cf as N_pre sees it)."""
    from vissl.data import build_dataset

    ecfg = copy.deepcopy(cfg)
    split_cfg = ecfg.DATA[split]
    split_cfg.TRANSFORMS = ecfg.VCF.CLUSTERFIT.TRANSFORMS
    split_cfg.LABEL_SOURCES = []
    split_cfg.LABEL_TYPE = "sample_index"
    return build_dataset(ecfg, split)


@torch.no_grad()
def extract_features(
    trunks: List[Tuple[torch.nn.Module, str, str]],
    dataset: Any,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    log_every_s: float = 10.0,
    shard: bool = True,
    gather: bool = True,
) -> Optional[np.ndarray]:
    """Features of every sample, the pooled layer of each trunk concatenated (multi-task
    ClusterFit), on rank 0 as ``(N, D)`` float32 in dataset order; None on other ranks.

    ``trunks``: list of (trunk, layer, pooling). ``shard=False``: this process alone
    extracts everything (no collective calls). ``gather=False``: nothing is gathered;
    every rank returns the features of its own contiguous block of the dataset
    (``rank_batches(..., contiguous=True)``), for the sharded k-means.
    """
    rank, world = _rank_world() if shard else (0, 1)
    n = len(dataset)
    batches = rank_batches(n, batch_size, rank, world, contiguous=not gather)
    if not gather and (n + batch_size - 1) // batch_size < world:
        # checked identically on every rank, so all of them raise (no hung collective)
        raise ValueError(
            f"{n} images in batches of {batch_size} leave some of the {world} ranks "
            "without an extraction batch: lower the extraction BATCHSIZE"
        )
    loader = torch.utils.data.DataLoader(
        _IndexedImages(dataset), batch_sampler=batches, num_workers=num_workers
    )
    for trunk, layer, _ in trunks:
        trunk.to(device).eval()
        check_layer(trunk, layer)
    # written in place into one preallocated array: a list of batches concatenated at
    # the end would hold the features twice at the peak
    n_local = sum(map(len, batches))
    local: Optional[np.ndarray] = None
    done, t0, last = 0, time.time(), time.time()
    for images, _ in loader:
        images = images.to(device)
        parts = [
            pool_features(trunk(images, out_feat_keys=[layer])[0], pooling)
            .float()
            .cpu()
            for trunk, layer, pooling in trunks
        ]
        feats = torch.cat(parts, 1).numpy()
        if local is None:
            local = np.empty((n_local, feats.shape[1]), dtype=np.float32)
        local[done : done + len(feats)] = feats
        done += len(images)
        if time.time() - last > log_every_s:
            last = time.time()
            logging.info(
                f"[vcf] extracting features: rank {rank} {done}/{sum(map(len, batches))} "
                f"images, {done / (last - t0):.0f} img/s"
            )
    if local is None:
        local = np.zeros((0, 0), np.float32)
    logging.info(
        f"[vcf] rank {rank} extracted {local.shape} in {time.time() - t0:.1f}s"
    )
    if world == 1 or not gather:
        return local
    gathered: List[Any] = [None] * world if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if rank != 0:
        return None
    dim = max(g.shape[1] for g in gathered if g.size)
    out = np.empty((n, dim), dtype=np.float32)
    for r, g in enumerate(gathered):
        rows = np.concatenate(
            rank_batches(n, batch_size, r, world) or [np.zeros(0, int)]
        )
        out[rows] = g
    return out
