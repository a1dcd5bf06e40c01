"""Paths, the machine, and the results files (``benchmarks/results/<name>.json`` + ``.md``).

Benchmarks measure and report; they never assert on time. Every results file records
the machine, the git commit of the repository, the exact command and the wall time, so
a number can be traced back to how it was produced.
"""

import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.report import format_table


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
WORK_DIR = os.path.join(ROOT, "benchmarks", "_work")  # git-ignored scratch space

_STARTED = time.time()


def elapsed_s() -> float:
    """Seconds since this module was imported (the benchmark's wall time)."""
    return time.time() - _STARTED


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
    """The command as typed, with the interpreter: paste it (from the repository root,
    see ``machine_info()["cwd"]``) to reproduce the run. A module run with ``-m`` is
    written as ``python -m <module> ...``, not as the path Python resolved it to."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    if name.endswith(".__main__"):
        name = name[: -len(".__main__")]
    head = ["-m", name] if name else sys.argv[:1]
    return shlex.join([sys.executable, *head, *sys.argv[1:]])


_THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


def _optional_versions(info: Dict[str, Any]) -> None:
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


def machine_info() -> Dict[str, Any]:
    """The machine, the software, the git commit and the exact command of this run."""
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
        "cwd": os.getcwd(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    _optional_versions(info)
    return info


# --------------------------------------------------------------------------- results


def header_lines(machine: Dict[str, Any], extra: Sequence[str] = ()) -> List[str]:
    """The bullet list every results .md starts with: command, commit, date, machine,
    software, then ``extra`` bullets (without the leading ``- ``)."""
    m = machine
    lines = [
        f"- command: `{m.get('command')}`",
        f"- commit: `{m.get('git_commit')}`",
        f"- date: {m.get('date')}",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('mem_total_gib')} "
        f"GiB, GPU: {m.get('gpu') or 'none'}, load average at start "
        f"{m.get('load_avg_at_start')}",
        f"- software: Python {m.get('python')}, torch {m.get('torch')} "
        f"({m.get('torch_threads')} threads), numpy {m.get('numpy')}, "
        f"faiss {m.get('faiss')}, scikit-learn {m.get('sklearn')}",
    ]
    return lines + [f"- {e}" for e in extra]


def settings_work_dir(benchmark: str, args: Any, ignore: Sequence[str] = ()) -> str:
    """``WORK_DIR/<benchmark>/<hash>``: one work dir per training setting, the hash of
    ``vars(args)`` without ``name``, ``out`` and ``ignore`` (options that change no
    trained stage), so a rerun reuses only the stages of its own settings."""
    skip = {"name", "out", *ignore}
    key = {k: v for k, v in vars(args).items() if k not in skip}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(WORK_DIR, benchmark, digest)


def results_path(name: str, ext: str, out_dir: Optional[str] = None) -> str:
    """``<out_dir>/<name>.<ext>``; ``out_dir`` defaults to :data:`RESULTS_DIR` read at
    call time (tests point it elsewhere)."""
    out_dir = out_dir or RESULTS_DIR
    os.makedirs(out_dir, exist_ok=True)
    return os.path.join(out_dir, f"{name}.{ext}")


def write_json(path: str, payload: Dict[str, Any]) -> str:
    """``payload`` as indented JSON (numpy scalars and arrays as plain values), written
    to a temporary file and renamed: a killed benchmark leaves the old file or the new
    one, never half of one (resumable benchmarks read their own files back). Not
    vissl_clusterfit's ``atomic_write``: this module imports only the standard library.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_text(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def write_results(
    name: str,
    machine: Dict[str, Any],
    tables: List[Dict[str, Any]],
    data: Dict[str, Any],
    notes: Sequence[str] = (),
    title: str = "",
    out_dir: Optional[str] = None,
) -> Dict[str, str]:
    """Write ``results/<name>.json`` (everything) and ``results/<name>.md`` (readable)
    (in ``out_dir`` instead of ``results/`` when given, e.g. a device run's output).

    ``tables``: ``{"title": str, "columns": [...], "rows": [dict, ...]}`` each.
    Returns the two paths.
    """
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
    json_path = write_json(results_path(name, "json", out_dir), payload)
    md = [f"# {title or name}", ""]
    md += header_lines(machine, [f"wall time of the benchmark: {wall} s"]) + [""]
    for table in tables:
        body = format_table(table["rows"], table["columns"], markdown=True)
        md += [f"## {table['title']}", "", body, ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md_path = write_text(results_path(name, "md", out_dir), "\n".join(md))
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
