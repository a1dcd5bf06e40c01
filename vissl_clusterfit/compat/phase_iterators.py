"""VISSL's phase start (the data iterator it re-creates for every phase), timed, without
its ``gc.collect()``, and with DataLoader workers that can outlive a phase.

VISSL 0.1.6 starts every phase with ``SelfSupervisionTask.recreate_data_iterator``:
``del self.data_iterator; gc.collect(); iter(loader)``, on a loader
(``vissl.data.build_dataloader``) that never keeps its workers, so every phase forks
``DATA.NUM_DATALOADER_WORKERS`` new workers. The ``gc.collect()`` is there so that "all
dataloader processes are cleaned up"; but a torch iterator shuts its workers down
itself when its epoch is exhausted, and on ``del`` otherwise (no reference cycle holds
it: ``tests/compat/test_phase_iterators.py`` checks the workers are gone without a
collection), so the full collection is pure cost: 0.5-0.7 s per phase on a shared
2-core CPU, every phase (benchmarks/phase_startup_jpeg.py).

Config params (``config.VCF.DATA``, plugin.yaml): ``GC_EACH_PHASE`` (VISSL's collection,
off by default) and ``PERSISTENT_WORKERS`` (torch's ``persistent_workers``: the train
and test loaders each keep their workers from phase to phase, so only a loader's first
phase forks them). ``set_epoch`` still reshuffles: torch draws a persistent iterator's
indices from the sampler in the main process at every ``iter()``, after VISSL's
``set_epoch``. What persistent workers change: each worker's random stream runs on
across epochs instead of being re-seeded from the main process every phase, so the
augmentations differ from a run without them, and a resumed run (``RngStateHook``)
re-seeds its workers at the resume and no longer repeats the augmentations of an
uninterrupted run; a dataset changed in the main process after the first phase is not
seen by the workers (DeepCluster's new labels: ``cluster_step.training.install_labels``
rebuilds the loader when its workers persist).

Every re-creation leaves its time stamps in ``task.vcf_iterator_times`` for
``PhaseTimerHook``'s start line (``runtime/log_lines.py``: ``PHASE_START_LINE``).
"""

import gc
import time
from dataclasses import dataclass
from typing import Any, Dict

from vissl_clusterfit.compat.patching import once


@dataclass(frozen=True)
class PhaseLoaderSettings:
    """``config.VCF.DATA``: how the training's loaders behave across phases."""

    persistent_workers: bool = False
    gc_each_phase: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> "PhaseLoaderSettings":
        section = (cfg.get("VCF", {}) or {}).get("DATA", {}) or {}
        return cls(
            persistent_workers=bool(section.get("PERSISTENT_WORKERS", False)),
            gc_each_phase=bool(section.get("GC_EACH_PHASE", False)),
        )


@dataclass(frozen=True)
class IteratorTimes:
    """``time.perf_counter()`` stamps of one ``recreate_data_iterator`` call: its start,
    the old iterator released (sampler epoch set, ``del``: shuts its workers down when
    its epoch was not exhausted), the collection done, the new iterator built (workers
    forked unless they persist; on a GPU also the first batch, which VISSL's
    ``DataloaderAsyncGPUWrapper`` loads inside ``iter()``)."""

    start: float
    released: float
    collected: float
    end: float
    workers: str  # kept (persistent, reused) | started (forked by iter()) | none

    def parts(self, last_end: float, phase_start: float) -> Dict[str, Any]:
        """The fields of ``PHASE_START_LINE`` for a phase whose advance ran from
        ``last_end`` to ``phase_start`` (the end of its ``on_phase_start`` hooks)."""
        return {
            "advance": phase_start - last_end,
            "before": self.start - last_end,
            "release": self.released - self.start,
            "gc": self.collected - self.released,
            "create": self.end - self.collected,
            "workers": self.workers,
            "after": phase_start - self.end,
        }


def torch_loader(loader: Any) -> Any:
    """The ``torch.utils.data.DataLoader`` inside classy-vision's GPU copy wrappers."""
    while hasattr(loader, "dataloader"):
        loader = loader.dataloader
    return loader


def workers_persist(loader: Any) -> bool:
    """Whether ``loader``'s worker processes outlive an epoch."""
    inner = torch_loader(loader)
    return bool(getattr(inner, "persistent_workers", False)) and inner.num_workers > 0


def worker_start(loader: Any) -> str:
    """What ``iter(loader)`` is about to do with workers: "kept" (persistent workers
    from an earlier phase), "started" (forks them) or "none" (loads in-process)."""
    inner = torch_loader(loader)
    if not getattr(inner, "num_workers", 0):
        return "none"
    # torch keeps a persistent loader's iterator (and its workers) in ``_iterator``
    if workers_persist(loader) and getattr(inner, "_iterator", None) is not None:
        return "kept"
    return "started"


def build_dataloader(
    dataset: Any,
    dataset_config: Any,
    num_dataloader_workers: int,
    pin_memory: bool,
    multi_processing_method: str,
    device: Any,
    sampler_seed: int = 0,
    get_sampler: Any = None,
    worker_init_fn: Any = None,
    **kwargs: Any,
) -> Any:
    """``vissl.data.build_dataloader`` (same arguments, same loader) plus torch's
    ``persistent_workers`` from ``dataset.cfg.VCF.DATA.PERSISTENT_WORKERS`` (with at
    least one worker)."""
    from torch.utils.data import DataLoader
    from vissl import data as vd
    from vissl.data.collators import get_collator
    from vissl.utils.misc import setup_multiprocessing_method

    setup_multiprocessing_method(multi_processing_method)
    sampler = (get_sampler or vd.get_sampler)(dataset, dataset_config, sampler_seed)
    collate_function = get_collator(
        dataset_config["COLLATE_FUNCTION"], dataset_config["COLLATE_FUNCTION_PARAMS"]
    )
    worker_init_fn = worker_init_fn or vd.set_dataloader_seeds
    if dataset_config["USE_DEBUGGING_SAMPLER"]:
        worker_init_fn = vd.debugging_worker_init_fn
    settings = PhaseLoaderSettings.from_config(dataset.cfg)
    dataloader = DataLoader(
        dataset=dataset,
        num_workers=num_dataloader_workers,
        pin_memory=pin_memory,
        shuffle=False,
        batch_size=dataset_config["BATCHSIZE_PER_REPLICA"],
        collate_fn=collate_function,
        sampler=sampler,
        drop_last=dataset_config["DROP_LAST"],
        worker_init_fn=worker_init_fn,
        persistent_workers=settings.persistent_workers and num_dataloader_workers > 0,
    )
    return vd.wrap_dataloader(
        dataloader, dataset.cfg["DATA"]["ENABLE_ASYNC_GPU_COPY"], device
    )


def recreate_data_iterator(
    self: Any,
    phase_type: str,
    epoch: int,
    compute_start_iter: bool,
    train_phase_idx: int,
) -> None:
    """``SelfSupervisionTask.recreate_data_iterator``, with VISSL's ``gc.collect()``
    only when ``VCF.DATA.GC_EACH_PHASE`` asks for it, timed into
    ``self.vcf_iterator_times``."""
    start = time.perf_counter()
    settings = PhaseLoaderSettings.from_config(self.config)
    start_iter = 0
    if compute_start_iter:
        start_iter = self._compute_start_iter_from_checkpoint(phase_type)
    self.set_epoch(phase_type, epoch, start_iter, train_phase_idx)
    dataset = self.datasets[phase_type]
    if dataset.rebuild_dataloader():  # never true for VISSL's own datasets
        from vissl.trainer import train_task

        dataloader = train_task.build_dataloader(
            dataset=dataset,
            dataset_config=self.config.DATA[phase_type.upper()],
            num_dataloader_workers=self.config.DATA.NUM_DATALOADER_WORKERS,
            pin_memory=self.config.DATA.PIN_MEMORY,
            multi_processing_method=self.config.MULTI_PROCESSING_METHOD,
            device=self.device,
            sampler_seed=self.config["SEED_VALUE"],
            split=phase_type,
        )
        del self.dataloaders[phase_type]
        self.dataloaders[phase_type] = dataloader
    # the last reference: an iterator whose epoch was not exhausted stops its workers
    # here (persistent workers belong to the loader and stay)
    self.data_iterator = None
    released = time.perf_counter()
    if settings.gc_each_phase:
        gc.collect()
    collected = time.perf_counter()
    loader = self.dataloaders[phase_type]
    workers = worker_start(loader)
    self.data_iterator = iter(loader)
    self.vcf_iterator_times = IteratorTimes(
        start, released, collected, time.perf_counter(), workers
    )


@once("phase_iterators")
def patch_phase_iterators() -> None:
    """Our ``build_dataloader`` everywhere VISSL's is looked up by name (the task's
    loaders, the plugin's ``rebuild_train_loader``), our ``recreate_data_iterator`` on
    VISSL's task."""
    import vissl.data as vd
    from vissl.trainer import train_task

    vd.build_dataloader = build_dataloader
    train_task.build_dataloader = build_dataloader
    train_task.SelfSupervisionTask.recreate_data_iterator = recreate_data_iterator
