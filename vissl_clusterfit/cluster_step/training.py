"""Hand cluster labels to a VISSL training task: the train dataset's targets, the
uniform-over-clusters loader (DeepCluster thesis Sec. 3.3), the cluster head check and
its re-initialisation after a re-clustering (thesis Sec. 3.4)."""

import logging
from typing import Any, Optional

import numpy as np
import torch

from vissl_clusterfit.data.cluster_sampler import UniformClusterSampler


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


def install_labels(
    task: Any, cfg: Any, labels: np.ndarray, epoch: int, uniform_sampling: bool
) -> None:
    """Make ``labels`` the train targets from this epoch on; optionally rebuild the
    train loader with a sampler drawing uniformly over clusters."""
    from vissl.data import build_dataloader

    dataset = task.datasets["train"]
    if len(labels) != len(dataset):
        raise ValueError(
            f"{len(labels)} cluster labels for {len(dataset)} training samples"
        )
    dataset.label_objs = [labels]
    dataset.labels_init = True
    if uniform_sampling:
        seed = int(cfg.SEED_VALUE)
        task.dataloaders["train"] = build_dataloader(
            dataset=dataset,
            dataset_config=cfg.DATA.TRAIN,
            num_dataloader_workers=cfg.DATA.NUM_DATALOADER_WORKERS,
            pin_memory=cfg.DATA.PIN_MEMORY,
            multi_processing_method=cfg.MULTI_PROCESSING_METHOD,
            device=task.device,
            sampler_seed=seed,
            get_sampler=lambda ds, cfg, s: UniformClusterSampler(labels, seed=s),
        )
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
