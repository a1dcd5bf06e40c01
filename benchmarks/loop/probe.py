"""Steady-state timing of a training loop, step by step, for ``benchmarks/train_loop.py``:
the same clock around a plain PyTorch loop and inside VISSL's own loop (as a hook).

A run is ``warmup`` untimed steps, ``steps`` timed steps (the device synchronised at both
ends of the window, nowhere inside it), then ``profile_steps`` steps under
``torch.profiler``. A deadline (``time.perf_counter()`` value) ends the timed window early,
keeping what it timed (at least 3 steps), and skips the profile.

Inside VISSL's loop, ``LoopProbe`` (a ClassyHook, put last in the hook list) wraps the
phase's data iterator so that the phase ends after the planned steps (VISSL's loop ends a
phase on ``StopIteration``), optionally replacing it by one of VISSL's own batches,
already on the device, handed over again each step (the loader then costs nothing). VISSL's
per-part timers (``task.perf_stats``: ``HOOKS.PERF_STATS.MONITOR_PERF_STATS``) are reset at
the end of the warm-up and read at the end of the timed window.
"""

import dataclasses
import itertools
import re
import statistics
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from benchmarks.ceilings import sync
from benchmarks.plugin import VcfHook


@dataclasses.dataclass(frozen=True)
class Plan:
    """Steps of one mode: untimed warm-up, timed window, profiled window."""

    warmup: int = 10
    steps: int = 30
    profile_steps: int = 2

    @property
    def total(self) -> int:
        return self.warmup + self.steps + self.profile_steps


class StepClock:
    """Call ``after_step()`` after every step while ``more()``; then ``result()``.
    ``on_warm`` runs at the end of the warm-up, ``on_timed`` at the end of the timed
    window (both after the device is synchronised)."""

    def __init__(
        self,
        device: torch.device,
        plan: Plan,
        deadline: float,
        top_ops: int = 8,
    ) -> None:
        self.device, self.plan, self.deadline, self.top_ops = (
            device,
            plan,
            deadline,
            top_ops,
        )
        self.on_warm: Callable[[], None] = lambda: None
        self.on_timed: Callable[[], None] = lambda: None
        self.n = 0
        self.done = False
        self.cut = False
        self.timed = 0
        self.t_start = time.perf_counter()
        self.t_last = self.t_start
        self.step_s: List[float] = []
        self.t0: Optional[float] = None
        self.t1: Optional[float] = None
        self.profiler: Optional[torch.profiler.profile] = None
        self.profile: Optional[Dict[str, Any]] = None
        self._profile_from = 0
        self._profile_t0 = 0.0

    def start(self) -> None:
        """Start the clock (the first step's time runs from here)."""
        self.t_start = self.t_last = time.perf_counter()

    def more(self) -> bool:
        return not self.done

    def after_step(self) -> None:
        now = time.perf_counter()
        self.step_s.append(now - self.t_last)
        self.t_last = now
        self.n += 1
        warmup, steps = self.plan.warmup, self.plan.steps
        if self.t0 is None:
            if self.n >= warmup:
                sync(self.device)
                self.on_warm()
                self.t0 = self.t_last = time.perf_counter()
            elif now > self.deadline:
                self.done = self.cut = True  # no timed step fits
            return
        if self.t1 is None:
            timed = self.n - warmup
            late = now > self.deadline and timed >= 3
            if timed >= steps or late:
                sync(self.device)
                self.t1 = self.t_last = time.perf_counter()
                self.timed, self.cut = timed, late
                self.on_timed()
                if self.plan.profile_steps > 0 and not late:
                    self._start_profiler()
                else:
                    self.done = True
            return
        if (
            self.n - self._profile_from >= self.plan.profile_steps
            or now > self.deadline
        ):
            self._stop_profiler()
            self.done = True

    def _start_profiler(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.start()
        self._profile_from = self.n
        self._profile_t0 = time.perf_counter()

    def _stop_profiler(self) -> None:
        sync(self.device)
        wall = time.perf_counter() - self._profile_t0
        assert self.profiler is not None
        self.profiler.stop()
        steps = self.n - self._profile_from
        self.profile = profile_summary(self.profiler, steps, wall, self.top_ops)
        self.profiler = None
        self.t_last = time.perf_counter()

    def close(self) -> None:
        """Stop a profiler a failed step left running (its window is not reported)."""
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None

    def result(self, batch_size: int) -> Dict[str, Any]:
        """img/s over the timed window; the median step (per-step times are not
        synchronised: a step's device work may finish in the next one)."""
        out: Dict[str, Any] = {
            "steps_run": self.n,
            "warmup": self.plan.warmup,
            "timed_steps": self.timed,
            "cut_by_deadline": self.cut,
            "batch_size": batch_size,
        }
        if self.t0 is not None and self.t1 is not None and self.timed:
            span = self.t1 - self.t0
            timed = self.step_s[self.plan.warmup : self.plan.warmup + self.timed]
            out.update(
                img_s=round(self.timed * batch_size / span, 1),
                ms_per_step=round(1000 * span / self.timed, 2),
                median_step_ms=round(1000 * statistics.median(timed), 2),
                warmup_s=round(self.t0 - self.t_start, 2),
            )
        if self.profile is not None:
            out["profile"] = self.profile
        return out


def run_plain(step: Callable[[], None], clock: StepClock, batch_size: int) -> Dict:
    """Drive ``step`` with ``clock``."""
    clock.start()
    while clock.more():
        step()
        clock.after_step()
    return clock.result(batch_size)


# --------------------------------------------------------------------------- profile


def _device_us(event: Any) -> float:
    return float(getattr(event, "self_device_time_total", 0.0) or 0.0)


def profile_summary(
    prof: torch.profiler.profile, steps: int, wall_s: float, top: int = 8
) -> Dict[str, Any]:
    """Per step: the window's wall time, the device's busy time (the device-side events:
    kernels, copies, memsets; None without a GPU) and the top operators by self CPU
    time and by self device time."""
    steps = max(steps, 1)
    rows = []
    for e in prof.key_averages():
        rows.append(
            {
                "op": e.key[:60],
                "calls_per_step": round(e.count / steps, 1),
                "self_cpu_ms": round(e.self_cpu_time_total / 1000 / steps, 3),
                "self_device_ms": round(_device_us(e) / 1000 / steps, 3),
            }
        )
    busy = None
    if any(r["self_device_ms"] for r in rows):
        kinds = {"CUDA", "PrivateUse1"}
        device_events = [
            e for e in prof.events() if getattr(e.device_type, "name", "") in kinds
        ]
        total_us = sum(e.time_range.elapsed_us() for e in device_events)
        busy = round(total_us / 1000 / steps, 2)
    wall_ms = 1000 * wall_s / steps
    return {
        "steps": steps,
        "wall_ms_per_step": round(wall_ms, 2),
        "device_busy_ms_per_step": busy,
        "device_busy_fraction": round(busy / wall_ms, 3) if busy else None,
        "cpu_ops_ms_per_step": round(
            sum(r["self_cpu_ms"] for r in rows), 2
        ),  # profiler overhead included
        "top_by_cpu": sorted(rows, key=lambda r: -r["self_cpu_ms"])[:top],
        "top_by_device": (
            sorted(rows, key=lambda r: -r["self_device_ms"])[:top] if busy else []
        ),
    }


# --------------------------------------------------------------------------- VISSL


PERF_ROW = re.compile(r"^\s*(\S+):\s+([-\d.]+) ms\s+([-\d.]+) ms\s*$")


def parse_perf_stats(report: str, cuda: bool) -> Dict[str, Dict[str, Optional[float]]]:
    """VISSL's ``PerfStats.report_str()`` (mean ms per step of each timer: host clock
    and CUDA events) as ``{timer: {"host_ms", "cuda_ms"}}``; ``cuda_ms`` None off
    CUDA (VISSL then records no events)."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for line in report.splitlines():
        m = PERF_ROW.match(line)
        if m:
            out[m.group(1)] = {
                "host_ms": float(m.group(2)),
                "cuda_ms": float(m.group(3)) if cuda else None,
            }
    return out


class _Limited:
    """The phase's data iterator, ended when the clock has its steps."""

    def __init__(self, source: Iterator[Any], clock: StepClock) -> None:
        self.source, self.clock = source, clock

    def __iter__(self) -> "_Limited":
        return self

    def __next__(self) -> Any:
        if not self.clock.more():
            raise StopIteration
        return next(self.source)

    def __len__(self) -> int:
        return self.clock.plan.total


class LoopProbe(VcfHook):
    """Times VISSL's train phase with ``clock`` (see the module docstring).
    ``cached``: feed VISSL's first batch (on the device) every step."""

    def __init__(self, clock: StepClock, cached: bool) -> None:
        super().__init__()
        self.clock, self.cached = clock, cached
        self.perf_stats: Dict[str, Dict[str, Optional[float]]] = {}
        self.batch_seen: Optional[Dict[str, Any]] = None

    def on_phase_start(self, task: Any) -> None:
        if not task.train:
            return
        source = task.data_iterator
        if self.cached:
            batch = next(source)
            source = itertools.repeat(batch)
            self.batch_seen = describe_batch(batch)
        task.data_iterator = _Limited(source, self.clock)

        def reset_timers() -> None:
            if task.perf_stats is not None:
                from vissl.utils.perf_stats import PerfStats

                task.perf_stats = PerfStats()

        def read_timers() -> None:
            if task.perf_stats is not None:
                cuda = task.device.type == "cuda"
                self.perf_stats = parse_perf_stats(task.perf_stats.report_str(), cuda)

        self.clock.on_warm, self.clock.on_timed = reset_timers, read_timers
        self.clock.start()

    def on_step(self, task: Any) -> None:
        if task.train:
            if self.batch_seen is None:
                self.batch_seen = describe_batch(task.last_batch.sample)
            self.clock.after_step()


def describe_batch(batch: Dict[str, Any]) -> Dict[str, Any]:
    """Shape, dtype, device and memory format of a batch's input (VISSL's batch
    ``{"data": [tensor], ...}`` or a sample ``{"input": tensor, ...}``)."""
    x = batch.get("input", batch.get("data"))
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    if not isinstance(x, torch.Tensor):
        return {"type": type(x).__name__}
    return {
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "device": str(x.device),
        "channels_last": x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last),
    }
