"""Hand cluster labels to a VISSL training task: the train dataset's targets, the
uniform-over-clusters loader (DeepCluster thesis Sec. 3.3), the cluster head check and
its re-initialisation after a re-clustering (thesis Sec. 3.4)."""

import logging
from typing import Any, Optional

import numpy as np
import torch

from vissl_clusterfit.compat.phase_iterators import torch_loader, workers_persist
from vissl_clusterfit.compat.vissl_subset import source_indexed
from vissl_clusterfit.data.cluster_sampler import UniformClusterSampler
from vissl_clusterfit.data.labelled_sampler import LabelledSampler


def last_linear(task: Any) -> Optional[torch.nn.Linear]:
    """The last Linear layer of the model's last head (the cluster classifier)."""
    heads = getattr(task.base_model, "heads", None)
    if not heads:
        return None
    linears = [m for m in heads[-1].modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1] if linears else None


def check_head(task: Any, k: int, key: str) -> None:
    """The cluster head must output K classes."""
    linear = last_linear(task)
    if linear is not None and linear.out_features != k:
        raise ValueError(
            f"the model's head outputs {linear.out_features} classes but {key}={k}: "
            "set the head's last dim to K (MODEL.HEAD.PARAMS)"
        )


def trunk_output_dim(
    trunk: torch.nn.Module, feature_names: Any = None
) -> Optional[int]:
    """The size of the trunk output that the first head receives, from a forward pass
    of two images at 64 and at 96 px (eval mode, no grad, train/eval mode restored).
    None when the trunk cannot run on them or its output size depends on the image size
    (then only the real batch can tell)."""
    try:
        device = next(trunk.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training, dims = trunk.training, set()
    try:
        trunk.eval()
        with torch.no_grad():
            for size in (64, 96):
                out = trunk(torch.zeros(2, 3, size, size, device=device), feature_names)
                dims.add(int(out[0].flatten(1).shape[1]))
    except Exception as e:  # an unusual trunk: the check is skipped, never fatal
        logging.info(f"[vcf] head input check skipped ({type(e).__name__}: {e})")
        return None
    finally:
        trunk.train(was_training)
    return dims.pop() if len(dims) == 1 else None


def check_head_input(task: Any) -> None:
    """The first head must take the trunk's output size. Checked at start-up, before
    any clustering: a mismatch would otherwise fail in the first training step, after
    the features of the whole data set were extracted and clustered."""
    model = task.base_model
    config = model.model_config
    if config.FEATURE_EVAL_SETTINGS.EVAL_MODE_ON or config.MULTI_INPUT_HEAD_MAPPING:
        return  # one head per trunk feature: not the cluster-head layout checked here
    linears = [m for m in model.heads[0].modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        return
    dim = trunk_output_dim(model.trunk, model._output_feature_names)
    if dim is not None and linears[0].in_features != dim:
        raise ValueError(
            f"config.MODEL.HEAD.PARAMS: the first head takes {linears[0].in_features}-d "
            f"input but the trunk (MODEL.TRUNK.NAME={config.TRUNK.NAME}) outputs "
            f"{dim}-d features: set the head's input dim to {dim} "
            f'(e.g. [["mlp", {{"dims": [{dim}, K]}}]])'
        )


def rebuild_train_loader(task: Any, cfg: Any, get_sampler: Any) -> None:
    """VISSL's train loader again, with the sampler ``get_sampler(dataset, config,
    seed)`` (seed: SEED_VALUE, the same on every rank)."""
    from vissl.data import build_dataloader

    task.dataloaders["train"] = build_dataloader(
        dataset=task.datasets["train"],
        dataset_config=cfg.DATA.TRAIN,
        num_dataloader_workers=cfg.DATA.NUM_DATALOADER_WORKERS,
        pin_memory=cfg.DATA.PIN_MEMORY,
        multi_processing_method=cfg.MULTI_PROCESSING_METHOD,
        device=task.device,
        sampler_seed=int(cfg.SEED_VALUE),
        get_sampler=get_sampler,
    )


def train_on_labelled_only(task: Any, cfg: Any, labels: np.ndarray) -> None:
    """Images labelled -1 (ON_BAD_IMAGE=skip) are never drawn: a loader whose sampler
    skips them (VISSL rebuilds the iterator at the first phase)."""
    rebuild_train_loader(task, cfg, lambda ds, cfg, s: LabelledSampler(labels, seed=s))


def install_labels(
    task: Any, cfg: Any, labels: np.ndarray, epoch: int, uniform_sampling: bool
) -> None:
    """Make ``labels`` the train targets from this epoch on; optionally rebuild the
    train loader with a sampler drawing uniformly over clusters."""
    dataset = task.datasets["train"]
    if len(labels) != len(dataset):
        raise ValueError(
            f"{len(labels)} cluster labels for {len(dataset)} training samples"
        )
    dataset.label_objs = [source_indexed(dataset, labels)]
    dataset.labels_init = True
    if uniform_sampling:
        rebuild_train_loader(
            task, cfg, lambda ds, cfg, s: UniformClusterSampler(labels, seed=s)
        )
    elif workers_persist(task.dataloaders["train"]):
        # persistent workers hold the dataset as it was when they were forked: a new
        # loader (same sampler) forks workers that see the new labels
        sampler = torch_loader(task.dataloaders["train"]).sampler
        rebuild_train_loader(task, cfg, lambda ds, cfg, s: sampler)
    sampler = getattr(task.dataloaders["train"], "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    # the iterator of this epoch was created before the hook ran: recreate it so that
    # it (and its workers) see the new labels and sampler
    task.data_iterator = iter(task.dataloaders["train"])


def reset_head(task: Any, seed: int) -> None:
    """Re-initialise the last head identically on every rank (seeded, without touching
    the global generator) and forget its optimizer state: momentum refers to the
    previous cluster ids."""
    head = task.base_model.heads[-1]
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    for module in head.modules():
        if hasattr(module, "reset_parameters") and module is not head:
            module.reset_parameters()
    torch.set_rng_state(generator_state)
    optimizer = getattr(task.optimizer, "optimizer", task.optimizer)
    for param in head.parameters():
        optimizer.state.pop(param, None)
    logging.info("[vcf] DeepCluster: cluster head re-initialised")
