"""Timers and peak memory of the benchmarks' measured blocks.

Timing wraps the public call being measured (``with Timer() as t: f()``); phases inside
a call come from what the code under test reports (e.g. the cluster step's meta file),
never from patching its functions.
"""

import gc
import resource
import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence


class Timer:
    """``with Timer() as t: ...`` then ``t.s`` (wall seconds, perf_counter)."""

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        self.s = float("nan")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.s = time.perf_counter() - self._t0


def repeat_times(fn: Callable[[], Any], repeats: int) -> List[float]:
    out = []
    for _ in range(repeats):
        with Timer() as t:
            fn()
        out.append(t.s)
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # best effort


def trim_heap() -> None:
    """Give freed malloc memory back to the OS (glibc ``malloc_trim``), so that memory a
    measured block allocates shows up in RSS instead of reusing pages freed before it.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory of this process inside a ``with`` block.

    ``delta`` = peak RSS in the block minus RSS at entry (bytes): what the block needed on
    top of what was already resident. Uses the kernel's VmHWM, reset at entry through
    /proc/self/clear_refs; where that is not allowed, a thread samples VmRSS every 2 ms
    (may miss short spikes; ``method`` says which was used). ``mark()`` starts a new phase:
    it records the peak so far and the RSS now, and resets the peak, so a block can be
    split (e.g. extraction, then clustering) without a second run. Entry and ``mark()``
    call ``trim_heap()`` first (a few ms) so freed memory is not silently reused.
    """

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        trim_heap()
        self.start = rss_bytes()
        self.phases: List[Dict[str, int]] = []
        self._phase_start = self.start
        self.method = (
            "VmHWM" if _reset_hwm() and _status_kib("VmHWM") is not None else "sampling"
        )
        self._sampled_peak = self.start
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if self.method == "sampling":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled_peak = max(self._sampled_peak, rss_bytes())
            time.sleep(0.002)

    def _peak_now(self) -> int:
        if self.method == "VmHWM":
            return (_status_kib("VmHWM") or 0) * 1024
        return max(self._sampled_peak, rss_bytes())

    def mark(self) -> None:
        peak = self._peak_now()
        trim_heap()
        now = rss_bytes()
        self.phases.append({"start": self._phase_start, "peak": peak, "end": now})
        self._phase_start = now
        if self.method == "VmHWM":
            _reset_hwm()
        else:
            self._sampled_peak = now

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.mark()
        self.peak = max(p["peak"] for p in self.phases)
        self.delta = self.peak - self.start


def children_max_rss_bytes() -> int:
    """Largest peak RSS of any waited-for child process so far (getrusage)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20
