"""Tables, notes and the results files of ``benchmarks.train_loop``."""

import argparse
from typing import Any, Dict, List

from benchmarks.common import write_results


RATE_COLUMNS = [
    "mode",
    "loop",
    "data",
    "hooks",
    "meters",
    "bench",
    "perf_stats",
    "input channels_last",
    "img_s",
    "x plain",
    "ms_per_step",
    "median_step_ms",
    "device busy",
    "timed_steps",
    "status",
]


VISSL_ONLY = ("hooks", "meters", "perf_stats")  # blank for the plain loops


def rate_rows(modes: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    base = (modes.get("plain") or {}).get("img_s")
    rows = []
    for name, m in modes.items():
        prof = m.get("profile") or {}
        frac = prof.get("device_busy_fraction")
        vissl_only = {k: m.get(k) if m["loop"] == "vissl" else None for k in VISSL_ONLY}
        rows.append(
            dict(
                m,
                mode=name,
                **vissl_only,
                **{
                    "input channels_last": (m.get("input") or {}).get("channels_last"),
                    "x plain": (
                        round(m["img_s"] / base, 2) if base and m.get("img_s") else None
                    ),
                    "device busy": f"{100 * frac:.0f}%" if frac else None,
                },
            )
        )
    return rows


def timer_rows(modes: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [
        {"mode": name, "timer": timer, **values}
        for name, m in modes.items()
        for timer, values in (m.get("vissl_timers") or {}).items()
    ]


def op_rows(modes: Dict[str, Dict[str, Any]], top: int = 5) -> List[Dict[str, Any]]:
    rows = []
    for name, m in modes.items():
        prof = m.get("profile") or {}
        for key in ("top_by_device", "top_by_cpu"):
            for r in prof.get(key, [])[:top]:
                rows.append({"mode": name, "by": key[7:], **r})
    return rows


def write(
    args: argparse.Namespace,
    machine: Dict[str, Any],
    modes: Dict[str, Dict[str, Any]],
    folder_rows: List[Dict[str, Any]],
) -> Dict[str, str]:
    tables = [
        {
            "title": f"Steady img/s by mode (batch {args.batch}, {args.precision})",
            "columns": RATE_COLUMNS,
            "rows": rate_rows(modes),
        }
    ]
    timers = timer_rows(modes)
    if timers:
        tables.append(
            {
                "title": "VISSL's PERF_STATS timers over the timed steps (ms per step)",
                "columns": ["mode", "timer", "host_ms", "cuda_ms"],
                "rows": timers,
            }
        )
    ops = op_rows(modes)
    if ops:
        tables.append(
            {
                "title": "Top operators in each mode's profiled steps (ms per step)",
                "columns": [
                    "mode",
                    "by",
                    "op",
                    "calls_per_step",
                    "self_cpu_ms",
                    "self_device_ms",
                ],
                "rows": ops,
            }
        )
    if folder_rows:
        tables.append(
            {
                "title": f"Loaders on {args.phase_folder}",
                "columns": [
                    "loader",
                    "workers",
                    "start_method",
                    "batch_size",
                    "iter_s",
                    "first_batch_s",
                    "steady_images",
                    "steady_img_s",
                    "status",
                ],
                "rows": folder_rows,
            }
        )
    notes = [
        "one process; each mode: "
        f"{args.warmup} untimed steps, {args.steps} timed (device synchronised at both "
        f"ends), {args.profile_steps} under torch.profiler (device busy = device-side "
        "event time / wall time of those steps; profiler overhead included)",
        "differences to read: plain vs plain_nobench = cuDNN autotuning; plain vs "
        "vissl_cached_bare = VISSL's step itself (sample construction, loss wrapper, "
        "classy optimizer); vissl_cached vs vissl_cached_{bench,nometers,nohooks} = "
        "each extra alone; vissl_cached vs vissl_synthetic = VISSL's loader (transforms, "
        "collation, workers, pinning, copies; no JPEG decoding: see the folder table)",
        f"model: the {args.stage} config of preset {args.preset} ({args.pretext}), "
        f"K = {args.num_clusters} (ncf), input {args.crop} px; VISSL modes label every "
        "image 0 (the synthetic label source): same cost as cluster ids; cached modes "
        "crop VISSL's one batch without the colour transforms",
        "VISSL's LogGpuStatsHook runs nvidia-smi at iteration 50: keep warmup + steps + "
        "profile steps under 50 so it stays out of the timed window",
    ]
    data = {"settings": vars(args), "modes": modes, "folder": folder_rows}
    return write_results(
        args.name,
        machine,
        tables,
        data,
        notes,
        title="Where VISSL's train step loses time",
        out_dir=args.out or None,
    )
