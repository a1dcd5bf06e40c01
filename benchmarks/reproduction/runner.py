"""The runs of one seed: one pipeline per K (N_pre, N_pre 2x and random init shared
through the seed's output folder), then ``benchmarks.probe_checkpoint`` on every checkpoint.
Finished stages and probes are reused when the same settings run again."""

import json
import os
import time
from typing import Any, Dict, List, Tuple

from benchmarks import plugin, probe_checkpoint
from benchmarks.reproduction.settings import Preset, ints, names


def _new_seed_output(times_path: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "checkpoints": {},
        "linear": {},
        "clusters": {},
        "stage_time_s": {},
        "probes": {},
        "probe_time_s": {},
        "stages_run_now": [],
    }
    # stage times survive a resume (the pipeline only times the stages it runs)
    if os.path.isfile(times_path):
        with open(times_path) as f:
            out["stage_time_s"] = json.load(f)
    return out


def _settings(p: Preset, k: int, first: bool, seed: int, out_dir: str) -> Any:
    return plugin.PipelineSettings(
        output_dir=out_dir,
        pretexts=p.pretexts,
        scale=p.scale,
        num_clusters=k,
        data_limit=p.data_limit,
        epochs=p.epochs,
        # N_pre 2x and random init do not depend on K: the first pipeline makes them
        with_2x=p.with_2x and first,
        with_random=p.with_random and first,
        eval_train_limit=p.eval_train_limit,
        eval_test_limit=p.eval_test_limit,
        eval_epochs=p.eval_epochs,
        eval_digits=p.eval_digits,
        num_proc=p.num_proc,
        seed=seed,
    )


def _merge_report(seed_out: Dict[str, Any], report: Dict[str, Any], k: int) -> None:
    seed_out["checkpoints"].update(report["checkpoints"])
    for target, models in report["linear_top1"].items():
        seed_out["linear"].setdefault(target, {}).update(models)
    for pretext, info in report["clusters"].items():
        seed_out["clusters"].setdefault(pretext, {})[str(k)] = {
            "metrics": info["metrics"],
            "time_s": info["time_s"],
        }
    seed_out["stage_time_s"].update(report["stage_time_s"])
    seed_out["stages_run_now"] += list(report["stage_time_s"])


def run_seed(
    p: Preset, seed: int, out_dir: str, passthrough: List[str]
) -> Dict[str, Any]:
    """Every pipeline of one seed, then the probes on every checkpoint."""
    times_path = os.path.join(out_dir, "stage_time_s.json")
    seed_out = _new_seed_output(times_path)
    for i, k in enumerate(ints(p.ks)):
        settings = _settings(p, k, i == 0, seed, out_dir)
        print(f"\n[repro] seed {seed}, K={k}: pipeline in {out_dir}", flush=True)
        report = plugin.Pipeline(settings, passthrough).run()
        _merge_report(seed_out, report, k)
        with open(times_path, "w") as f:
            json.dump(seed_out["stage_time_s"], f, indent=2)
    if p.probes:
        seed_out["probes_run_now"] = []
        for label, ckpt in seed_out["checkpoints"].items():
            result, elapsed, fresh = probe_model(p, label, ckpt, seed, out_dir)
            seed_out["probes"][label], seed_out["probe_time_s"][label] = result, elapsed
            if fresh:
                seed_out["probes_run_now"].append(label)
    return seed_out


def probe_model(
    p: Preset, label: str, ckpt: str, seed: int, out_dir: str
) -> Tuple[Dict[str, Any], float, bool]:
    """Probe results of one checkpoint (result, seconds, computed now?), reused from
    ``<out_dir>/probes/`` when the checkpoint and probe settings are unchanged."""
    config_name = (
        f"vissl_clusterfit/pretrain/rotnet_fmnist_{p.scale}"
        if label == "random init"
        else None
    )
    kwargs = dict(
        targets=names(p.probe_targets),
        n_train=p.probe_n_train,
        n_test=p.probe_n_test,
        seed=seed,
        shots=ints(p.probe_shots),
        draws=p.probe_draws,
        full_label=names(p.probe_full),
    )
    key = {
        "checkpoint": ckpt,
        "mtime": os.path.getmtime(ckpt),
        "config_name": config_name,
        **kwargs,
    }
    slug = label.replace(" ", "_").replace("=", "")
    path = os.path.join(out_dir, "probes", f"{slug}.json")
    if os.path.isfile(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            print(f"[repro] probes {label}: reusing {path}", flush=True)
            return cached["result"], cached["time_s"], False
    print(f"[repro] probes {label}: {ckpt}", flush=True)
    t0 = time.time()
    result = probe_checkpoint.probe_checkpoint(ckpt, config_name, **kwargs)
    elapsed = round(time.time() - t0, 1)
    print(f"[repro] probes {label}: done in {elapsed:.0f}s", flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"key": key, "result": result, "time_s": elapsed}, f, indent=2)
    return result, elapsed, True
