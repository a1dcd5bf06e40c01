"""benchmarks/train_loop.py: its CPU dry run (every mode, the loaders, the results file)
and the step clock, the VISSL timer parsing and the time guard on their own."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import train_loop
from benchmarks.loop.config import MODES
from benchmarks.loop.probe import Plan, StepClock, parse_perf_stats, run_plain
from benchmarks.synthetic_folder import make_image_folder
from tests.conftest import ROOT


def _count_steps(plan: Plan, deadline: float, step_s: float = 0.0):
    calls = []

    def step() -> None:
        calls.append(1)
        torch.ones(4).sum()  # something for the profiler to see
        time.sleep(step_s)

    clock = StepClock(torch.device("cpu"), plan, deadline)
    return run_plain(step, clock, batch_size=8), len(calls)


def test_clock_runs_warmup_timed_and_profiled_steps() -> None:
    out, calls = _count_steps(Plan(warmup=2, steps=4, profile_steps=1), 1e18)
    assert calls == 2 + 4 + 1, out
    assert (out["timed_steps"], out["cut_by_deadline"]) == (4, False)
    assert out["img_s"] > 0 and out["ms_per_step"] > 0, out
    assert out["profile"]["steps"] == 1, out["profile"]
    assert out["profile"]["top_by_cpu"][0]["op"].startswith("aten::"), out["profile"]


def test_clock_cuts_the_timed_window_at_the_deadline() -> None:
    deadline = time.perf_counter() + 0.3
    out, calls = _count_steps(
        Plan(warmup=1, steps=1000, profile_steps=2), deadline, 0.02
    )
    # at least 3 timed steps are kept, the profile is skipped, far fewer than planned
    assert out["cut_by_deadline"] and 3 <= out["timed_steps"] < 100, out
    assert calls == 1 + out["timed_steps"] and "profile" not in out, out
    assert out["img_s"] > 0, out


def test_vissl_perf_stats_report_is_parsed() -> None:
    from vissl.utils.perf_stats import PerfStats, PerfTimer

    stats = PerfStats(use_cuda_events=False)
    for _ in range(2):
        with PerfTimer("forward", stats):
            time.sleep(0.01)
        with PerfTimer("optimizer_step", stats):
            pass
    timers = parse_perf_stats(stats.report_str(), cuda=False)
    assert set(timers) == {"forward", "optimizer_step"}, timers
    assert 9.0 <= timers["forward"]["host_ms"] < 200, timers
    assert timers["forward"]["cuda_ms"] is None


def test_an_exhausted_budget_skips_every_mode_and_still_writes(tmp_path) -> None:
    threads = torch.get_num_threads()  # --dry sets 1
    try:
        out = train_loop.main(
            ["--dry", "--max-s", "0", "--modes", "plain,vissl_cached"]
            + ["--out", str(tmp_path)]
        )
    finally:
        torch.set_num_threads(threads)
    assert {m["status"] for m in out["modes"].values()} == {"skipped"}, out["modes"]
    with open(tmp_path / "train_loop_bf16_cl_dry.json") as f:
        rows = json.load(f)["tables"][0]["rows"]
    assert [r["mode"] for r in rows] == ["plain", "vissl_cached"], rows


@pytest.mark.slow  # ~1 min on 2 loaded cores: VISSL's trainer 8 times, tiny model
def test_dry_run_measures_every_mode_and_the_loaders(tmp_path) -> None:
    folder = make_image_folder(str(tmp_path / "images"), 2, 16, 1, 64)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.train_loop",
            "--dry",
            "--out",
            str(tmp_path / "out"),
            "--phase-folder",
            os.path.join(folder, "train"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    base = tmp_path / "out" / "train_loop_bf16_cl_dry"
    assert os.path.isfile(f"{base}.md")
    with open(f"{base}.json") as f:
        result = json.load(f)
    assert result["benchmark"] == "train_loop_bf16_cl_dry"
    modes = result["data"]["modes"]
    assert list(modes) == list(MODES), list(modes)
    for name, m in modes.items():
        assert m["status"] == "ok", (name, m.get("status"), m.get("traceback"))
        assert m["img_s"] > 0 and m["timed_steps"] == 3, (name, m)
        assert m["profile"]["top_by_cpu"], (name, m["profile"])
    # VISSL's own timers where PERF_STATS is on, the loader's time among them
    for name in ("vissl_cached_perfstats", "vissl_synthetic_perfstats"):
        timers = modes[name]["vissl_timers"]
        assert {"read_sample", "forward", "backward", "optimizer_step"} <= set(timers)
    assert "vissl_timers" not in modes["vissl_cached"]
    # hooks: the plugin's (its phase timer last), none in the nohooks modes
    assert modes["vissl_cached"]["hook_names"][-1] == "PhaseTimerHook"
    assert modes["vissl_cached_nohooks"]["hook_names"] == []
    assert modes["plain"]["input"]["channels_last"] is True
    titles = [t["title"] for t in result["tables"]]
    assert titles[0].startswith("Steady img/s by mode"), titles
    assert any(t.startswith("VISSL's PERF_STATS") for t in titles), titles
    loaders = result["data"]["folder"]
    assert [r["loader"] for r in loaders] == [
        "VISSL, ncf train transforms",
        "VISSL, npre train transforms",
        "ImageFolder (extraction transforms)",
    ]
    assert all(r["steady_img_s"] > 0 for r in loaders), loaders
