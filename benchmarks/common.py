"""Shared pieces of the benchmarks: machine description, timers, peak memory, tables,
and the results files (``benchmarks/results/<name>.json`` + ``.md``).

Benchmarks measure and report; they never assert on time. Every results file records
the machine, the git commit of the repository, the exact command and the wall time, so
a number can be traced back to how it was produced.
"""

import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
WORK_DIR = os.path.join(ROOT, "benchmarks", "_work")  # git-ignored scratch space

_STARTED = time.time()


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def git_commit(repo: str = ROOT) -> str:
    """HEAD of ``repo``, with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", repo, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    """The command as typed, with the interpreter: paste it to reproduce the run."""
    return shlex.join([sys.executable] + sys.argv)


_THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


def machine_info() -> Dict[str, Any]:
    import numpy as np
    import torch

    info: Dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "mem_total_gib": _mem_total_gib(),
        "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threading_env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
        "git_commit": git_commit(),
        "command": command_line(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_omp_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        info["faiss"] = None
    try:
        import sklearn

        info["sklearn"] = sklearn.__version__
    except ImportError:
        info["sklearn"] = None
    return info


# --------------------------------------------------------------------------- timing


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


def elapsed_s() -> float:
    """Seconds since this module was imported (the benchmark's wall time)."""
    return time.time() - _STARTED


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


# --------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.2f}"
        return f"{value:.2g}"
    return str(value)


def format_table(
    rows: Iterable[Dict[str, Any]], columns: Sequence[str], markdown: bool = False
) -> str:
    """Rows (dicts) as an aligned text table, or a GitHub Markdown table."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [
        max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)
    ]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    lines = [fmt.format(*columns), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in cells]
    return "\n".join(lines)


def print_table(
    rows: Iterable[Dict[str, Any]], columns: Sequence[str], title: str = ""
) -> None:
    if title:
        print(f"\n{title}")
    print(format_table(list(rows), columns), flush=True)


# --------------------------------------------------------------------------- results


def write_results(
    name: str,
    machine: Dict[str, Any],
    tables: List[Dict[str, Any]],
    data: Dict[str, Any],
    notes: Sequence[str] = (),
    title: str = "",
) -> Dict[str, str]:
    """Write ``results/<name>.json`` (everything) and ``results/<name>.md`` (readable).

    ``tables``: ``{"title": str, "columns": [...], "rows": [dict, ...]}`` each.
    Returns the two paths.
    """
    os.makedirs(RESULTS_DIR, exist_ok=True)
    wall = round(elapsed_s(), 1)
    payload = {
        "benchmark": name,
        "machine": machine,
        "wall_time_s": wall,
        "tables": [
            dict(t, rows=[{c: r.get(c) for c in t["columns"]} for r in t["rows"]])
            for t in tables
        ],
        "data": data,
        "notes": list(notes),
    }
    json_path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    md = [f"# {title or name}", ""]
    md += [
        f"- command: `{machine.get('command')}`",
        f"- commit: `{machine.get('git_commit')}`",
        f"- date: {machine.get('date')}",
        f"- machine: {machine.get('cpu')}, {machine.get('cores')} cores, "
        f"{machine.get('mem_total_gib')} GiB, GPU: {machine.get('gpu') or 'none'}, "
        f"load average at start {machine.get('load_avg_at_start')}",
        f"- software: Python {machine.get('python')}, torch {machine.get('torch')} "
        f"({machine.get('torch_threads')} threads), numpy {machine.get('numpy')}, "
        f"faiss {machine.get('faiss')}, scikit-learn {machine.get('sklearn')}",
        f"- wall time of the benchmark: {wall} s",
        "",
    ]
    for table in tables:
        body = format_table(table["rows"], table["columns"], markdown=True)
        md += [f"## {table['title']}", "", body, ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md_path = os.path.join(RESULTS_DIR, f"{name}.md")
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    return {"json": json_path, "md": md_path}


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)
