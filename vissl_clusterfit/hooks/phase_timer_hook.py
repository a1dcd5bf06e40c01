"""``PhaseTimerHook``: how long each phase waits for its first batch, and how fast it
runs after that, one log line per phase.

A GPU idles between phases while VISSL re-creates the data iterator and its workers
start (with forkserver each worker imports torch, VISSL and the plugin again: 29-67 s
per phase on one H200). These lines make that dead time visible in every run's log;
``benchmarks/gpu_check.py`` reads them back (``runtime.log_lines``).

- advance: from the end of the previous phase's hooks (or the run's start) to the end
  of this phase's ``on_phase_start`` hooks (VISSL builds the data iterator in between).
- first batch: from there until the data iterator hands over its first batch
  (workers started, batch loaded; no model time).
- first step: from there until the first step is done (adds the first forward and
  backward pass, cuDNN's autotuning included).
- rate: images per second from the end of the first step to the end of the last
  (the steady rate; VISSL's loss ``.item()`` per step synchronises the device).

A second line (``PHASE_START_LINE``) splits the advance at the time stamps of VISSL's
iterator re-creation (``compat/phase_iterators.py``): before it (phase 0: the model's
log line), the old iterator's release, ``gc.collect``, the new iterator (worker fork;
on a GPU also the first batch, which VISSL's async copy wrapper loads inside
``iter()``), and after it (model mode, optimizer, the other hooks' ``on_phase_start``).
"""

import logging
import time
from typing import Any, Dict, Optional

from vissl_clusterfit.hooks.base import VcfHook
from vissl_clusterfit.runtime.log_lines import PHASE_LINE, PHASE_START_LINE


class PhaseTimerHook(VcfHook):
    """Logs ``PHASE_LINE`` at the end of every phase (rank 0 logs; every rank times).
    ``hook_generator`` puts it last, so the times exclude the other hooks' phase work
    (checkpoints, clustering) and measure only the loader's dead time."""

    def __init__(self) -> None:
        super().__init__()
        self._last_end = time.perf_counter()
        self._phase_start = self._last_end
        self._first_batch: Optional[float] = None
        self._first_step: Optional[float] = None
        self._last_step = 0.0
        self._steps = 0
        self._images = 0
        self._start_parts: Optional[Dict[str, Any]] = None

    def on_start(self, task: Any) -> None:
        self._last_end = time.perf_counter()

    def on_phase_start(self, task: Any) -> None:
        self._phase_start = time.perf_counter()
        self._first_batch = self._first_step = None
        self._steps = self._images = 0
        # stamps of this phase's iterator re-creation (none from an earlier phase)
        times = getattr(task, "vcf_iterator_times", None)
        task.vcf_iterator_times = None
        self._start_parts = None
        if times is not None and times.start >= self._last_end:
            self._start_parts = times.parts(self._last_end, self._phase_start)
        # VISSL has no event between "batch read" and "forward": the phase's iterator
        # (just built by VISSL) is wrapped to note when its first batch arrives
        if hasattr(task, "data_iterator"):
            task.data_iterator = _FirstBatchClock(task.data_iterator, self)

    def batch_arrived(self) -> None:
        if self._first_batch is None:
            self._first_batch = time.perf_counter()

    def on_forward(self, task: Any) -> None:
        self.batch_arrived()  # no-op when the iterator noted it

    def on_step(self, task: Any) -> None:
        now = time.perf_counter()
        self._steps += 1
        if self._first_step is None:
            self._first_step = now
        else:
            self._images += _batch_images(task)
        self._last_step = now

    def on_phase_end(self, task: Any) -> None:
        if self._first_batch is not None and self._first_step is not None:
            span = self._last_step - self._first_step
            logging.info(
                PHASE_LINE.format(
                    phase=task.phase_idx,
                    kind="train" if task.train else "test",
                    first_batch=self._first_batch - self._phase_start,
                    first_step=self._first_step - self._phase_start,
                    advance=self._phase_start - self._last_end,
                    steps=self._steps,
                    images=self._images,
                    rate=self._images / span if span > 0 else 0.0,
                )
            )
        if self._start_parts is not None:
            logging.info(
                PHASE_START_LINE.format(phase=task.phase_idx, **self._start_parts)
            )
        self._last_end = time.perf_counter()


class _FirstBatchClock:
    """A data iterator that tells the hook when its first batch is handed over."""

    def __init__(self, iterator: Any, hook: PhaseTimerHook) -> None:
        self._iterator = iterator
        self._hook = hook

    def __iter__(self) -> "_FirstBatchClock":
        return self

    def __next__(self) -> Any:
        batch = next(self._iterator)
        self._hook.batch_arrived()
        return batch

    def __len__(self) -> int:  # classy's num_batches_per_phase
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


def _batch_images(task: Any) -> int:
    """Images in this process's last batch (the first tensor of the model input)."""
    sample = getattr(task.last_batch, "sample", None) or {}
    x = sample.get("input")
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    return int(x.shape[0]) if hasattr(x, "shape") else 0
