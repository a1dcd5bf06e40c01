"""How features are extracted: the DataLoader settings and the numeric format,
read once from ``config.VCF.CLUSTERFIT.LOADER`` (keys and defaults: plugin.yaml).

On one H200 the extraction of ClusterFit's N_pre features ran at ~1,230 img/s with
VISSL's 5 training workers while a plain ImageFolder loader gave 4,860 img/s with 15:
extraction is a phase of its own (the training workers are idle), so on a GPU it takes
this process's share of the CPUs. channels_last and bf16 autocast let the trunk keep up
(tensor-core convolutions); the extraction-precision test bounds their effect on the
features and on the cluster labels.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict

import torch

from vissl_clusterfit.runtime.precision import autocast_context, checked_autocast


@dataclass(frozen=True)
class ExtractionLoader:
    """The extraction DataLoader and the trunk's numeric format.

    Args:
        num_workers: DataLoader worker processes (0: load in the main process).
        pin_memory: page-locked batches, copied to the GPU asynchronously (CUDA only).
        prefetch_factor: batches each worker loads ahead.
        multiprocessing_method: how workers start (config.MULTI_PROCESSING_METHOD).
        channels_last: NHWC input and trunk (convolutions on tensor cores).
        autocast: "" (float32) or "bfloat16" (torch.autocast around the trunk).
    """

    num_workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int = 2
    multiprocessing_method: str = ""
    channels_last: bool = False
    autocast: str = ""

    @classmethod
    def from_config(cls, cfg: Any, section: str = "CLUSTERFIT") -> "ExtractionLoader":
        c = cfg.VCF[section].get("LOADER", {}) or {}
        key = f"config.VCF.{section}.LOADER"
        workers = int(c.get("NUM_WORKERS", -1))
        if workers < -1:
            raise ValueError(f"{key}.NUM_WORKERS={workers}: use -1 (auto) or >= 0")
        if workers == -1:
            workers = default_workers(cfg)
        prefetch = int(c.get("PREFETCH_FACTOR", 2))
        if prefetch < 1:
            raise ValueError(f"{key}.PREFETCH_FACTOR={prefetch} must be >= 1")
        autocast = checked_autocast(c.get("AUTOCAST", ""), f"{key}.AUTOCAST")
        return cls(
            num_workers=workers,
            pin_memory=bool(c.get("PIN_MEMORY", True)),
            prefetch_factor=prefetch,
            multiprocessing_method=str(cfg.get("MULTI_PROCESSING_METHOD", "") or ""),
            # GPU only: on a CPU the NCHW kernels are as fast, and CPU runs keep
            # bit-identical features (and label files) across versions
            channels_last=bool(c.get("CHANNELS_LAST", False))
            and str(cfg.MACHINE.DEVICE) == "gpu",
            autocast=autocast,
        )

    def dataloader_kwargs(self, device: torch.device) -> Dict[str, Any]:
        """Keyword arguments of ``torch.utils.data.DataLoader`` on ``device``."""
        kwargs: Dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory and device.type == "cuda",
        }
        if self.num_workers > 0:
            kwargs["prefetch_factor"] = self.prefetch_factor
            if self.multiprocessing_method:
                kwargs["multiprocessing_context"] = self.multiprocessing_method
        return kwargs

    def autocast_context(self, device: torch.device) -> Any:
        return autocast_context(self.autocast, device)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def default_workers(cfg: Any) -> int:
    """NUM_WORKERS=-1: on a GPU, this process's share of the CPUs minus one (for the
    main process); on a CPU, the training's DATA.NUM_DATALOADER_WORKERS (the model
    competes with workers for the same cores)."""
    if str(cfg.MACHINE.DEVICE) != "gpu":
        return int(cfg.DATA.NUM_DATALOADER_WORKERS)
    per_node = max(1, int(cfg.DISTRIBUTED.NUM_PROC_PER_NODE))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return max(1, (cpus or os.cpu_count() or 2) // per_node - 1)
