"""Checks that run before any work and name the key or file to fix.

Without them, three user errors fail late with another library's words: a resumed run
whose K changed (VISSL: ``size mismatch for 0.clf.0.weight``), transforms that do not
fit the images (torchvision: ``Required crop size (28, 28) is larger than input image
size (12, 12)``, e.g. scikit-learn's 8 px digits as D_cf with the Fashion-MNIST crops),
and a DATA_LIMIT larger than the data set (numpy: ``Cannot take a larger sample than
population``).
"""

import logging
import os
from typing import Any, List, Optional

import torch

from vissl_clusterfit.cluster_step.rng import preserved_rng
from vissl_clusterfit.compat.vissl_subset import vissl_subsets


def check_data_limit(dataset: Any, split: str) -> None:
    """``config.DATA.<split>.DATA_LIMIT`` (+ SKIP_NUM_SAMPLES where VISSL subsets)
    must not exceed any data source of the split."""
    limit = int(dataset.data_limit)
    if limit < 0:
        return
    skip = 0
    if vissl_subsets(dataset):
        skip = int(dataset.data_limit_sampling.get("SKIP_NUM_SAMPLES", 0))
    for i, source in enumerate(dataset.data_objs):
        size = len(source)
        if limit + skip > size:
            plus = f" + DATA_LIMIT_SAMPLING.SKIP_NUM_SAMPLES={skip}" if skip else ""
            raise ValueError(
                f"config.DATA.{split}.DATA_LIMIT={limit}{plus} is larger than the data "
                f"set: {dataset.dataset_names[i]} ({dataset.data_sources[i]}, "
                f"{dataset.data_paths[i]}) has {size} images. Set "
                f"config.DATA.{split}.DATA_LIMIT to at most {size - skip}, or to -1 "
                "(all images)"
            )


def check_transforms_fit(dataset: Any, key: str, split: str = "TRAIN") -> None:
    """Run the split's transforms on its first image (random transforms with the global
    generators preserved): transforms that cannot process the images fail here with
    ``key`` and the image size."""
    if not dataset.transform or not all(len(obj) for obj in dataset.data_objs):
        return
    images = [obj[0][0] for obj in dataset.data_objs]
    item = {
        "data": images,
        "data_valid": [1] * len(images),
        "data_idx": [0] * len(images),
        "label": [0] * len(images),
    }
    try:
        with preserved_rng():
            dataset.transform(item)
    except Exception as e:
        width, height = getattr(images[0], "size", ("?", "?"))
        raise ValueError(
            f"{key} do not fit the images of DATA.{split} "
            f"({', '.join(dataset.dataset_names)}: {width}x{height} px): "
            f"{type(e).__name__}: {e}. Resize the images first (e.g. put "
            "{name: Resize, size: 28} in front of the crops) or crop at most the "
            "image size"
        ) from None


def _resume_checkpoint(cfg: Any) -> Optional[str]:
    """The checkpoint VISSL's launcher will resume from (same rule), or None."""
    from vissl.utils.checkpoint import get_checkpoint_folder, get_resume_checkpoint

    if not cfg.CHECKPOINT.AUTO_RESUME or not os.path.isdir(cfg.CHECKPOINT.DIR):
        return None
    folder = get_checkpoint_folder(cfg)
    symlink = os.path.join(folder, "checkpoint.torch")
    if cfg.CHECKPOINT.USE_SYMLINK_CHECKPOINT_FOR_RESUME and os.path.exists(symlink):
        return symlink
    return get_resume_checkpoint(cfg, checkpoint_folder=folder)


def checkpoint_head_classes(path: str) -> Optional[int]:
    """Outputs of the last Linear layer of the last head in a VISSL checkpoint, read
    memory-mapped (only that tensor is touched); None when unreadable or absent."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        heads = checkpoint["classy_state_dict"]["base_model"]["model"]["heads"]
    except Exception as e:  # a corrupt checkpoint is the resume logic's business
        logging.info(f"[vcf] not checking the head of {path}: {e}")
        return None
    # VISSL's heads are a ModuleList: keys "<head index>.<module path>"
    index = [k.split(".")[0] for k in heads]
    last = max((i for i in index if i.isdigit()), key=int, default=None)
    weights = [
        v
        for i, (k, v) in zip(index, heads.items())
        if i == last and k.endswith("weight") and v.dim() == 2
    ]
    return int(weights[-1].shape[0]) if weights else None


def check_resume_head(cfg: Any, classes: int, key: str) -> None:
    """With AUTO_RESUME, the checkpoint in CHECKPOINT.DIR must have a cluster head of
    ``classes`` outputs: one of another K is a run with other settings."""
    path = _resume_checkpoint(cfg)
    found = checkpoint_head_classes(path) if path else None
    if found is None or found == classes:
        return
    raise ValueError(
        f"config.CHECKPOINT.DIR={cfg.CHECKPOINT.DIR} holds a run with K={found} (the "
        f"cluster head in its checkpoint {os.path.basename(path)} has {found} outputs) "
        f"but {key}={classes}: CHECKPOINT.AUTO_RESUME would resume it with the wrong head. "
        f"Use another config.CHECKPOINT.DIR for K={classes}, or set {key}={found} to "
        "resume that run"
    )


def feature_names(trunk: torch.nn.Module) -> List[str]:
    mapping = getattr(trunk, "feat_eval_mapping", None)
    if mapping:
        return list(mapping.keys())
    blocks = getattr(trunk, "_feature_blocks", None)
    return list(blocks.keys()) if blocks is not None else []


def check_layer(
    trunk: torch.nn.Module, layer: str, key: str = "config.VCF.CLUSTERFIT.FEATURE_LAYER"
) -> None:
    names = feature_names(trunk)
    if layer not in names:
        raise ValueError(
            f"{key}={layer} is not a feature of the trunk ({type(trunk).__name__}); "
            f"available: {', '.join(names)}"
        )
