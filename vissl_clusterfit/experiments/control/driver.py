"""ClusterFit's control experiment in one command (Yan et al. 2020, Sec. 3.2, Fig. 3;
baselines of Sec. 4): per label-noise rate p and seed, a supervised N_pre on noisy
labels, N_cf over a K sweep, distillation and prototype, each with N_pre's recipe
(images, transforms, schedule, batch, epochs) and, where labels are used, N_pre's noisy
labels; res5 linear probes on four targets (``control_probe``); the report
(``control_report``). Stages are VISSL runs of ``pipeline.Pipeline``, skipped when
finished; probes are cached beside each checkpoint: a killed run resumes.
"""

import dataclasses
import json
import os
import resource
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from vissl_clusterfit.config import compose_config
from vissl_clusterfit.data.cluster_labels import read_meta
from vissl_clusterfit.experiments.checkpoints import save_untrained_trunk
from vissl_clusterfit.experiments.cli import console_argv, split_argv
from vissl_clusterfit.experiments.control.probe import cached_probe
from vissl_clusterfit.experiments.control.report import (
    npre_train_accuracy,
    write_report,
)
from vissl_clusterfit.experiments.control.settings import (
    MODEL_NAMES,
    VARIANTS,
    ControlSettings,
    ints,
    names,
    stage_overrides,
)
from vissl_clusterfit.experiments.pipeline.driver import Pipeline
from vissl_clusterfit.experiments.pipeline.settings import PipelineSettings
from vissl_clusterfit.io import atomic_write, read_json


def _cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (the VISSL stages)."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, who))


class ControlExperiment:
    """Every stage and probe of the settings (run, or reused when finished), their
    records, and the report."""

    def __init__(self, settings: ControlSettings, passthrough: List[str]) -> None:
        self.settings, self.passthrough = settings, passthrough
        self.out = os.path.abspath(settings.output_dir)
        self.times_path = os.path.join(self.out, "stage_times.json")
        self._check_reusable()
        self.times: Dict[str, Dict[str, float]] = read_json(self.times_path, {})
        self.run_now: List[str] = []
        self.records: List[Dict[str, Any]] = []
        self.npre_fit: List[Dict[str, Any]] = []
        self.clusters: List[Dict[str, Any]] = []

    def _check_reusable(self) -> None:
        """Stages are reused by folder name: refuse a folder of models trained with
        other settings (more seeds, rates, K or methods only add stages)."""
        keys = ("data_limit", "epochs", "scale", "num_proc", "data_path")
        now = dict(
            {k: getattr(self.settings, k) for k in keys}, passthrough=self.passthrough
        )
        path = os.path.join(self.out, "training_settings.json")
        old = read_json(path, now)
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in now.items() if old.get(k) != v]  # fmt: skip
        if diff:
            raise ValueError(
                f"{self.out} holds models trained with other settings "
                f"({'; '.join(diff)}): use another control.output_dir"
            )
        if old is not now:
            return  # the same settings: not rewritten, so no reader sees a partial file
        # atomically: the control experiments of other rates may start beside this one
        text = json.dumps(now, indent=1).encode()
        atomic_write(path, lambda f: f.write(text))

    def _timed(self, name: str, fn: Callable[[], Tuple[Any, bool]]) -> Any:
        """``fn() -> (result, ran now?)``; keeps the wall and CPU seconds of a run."""
        t0, cpu0 = time.time(), _cpu_s()
        result, ran = fn()
        if ran:
            wall, cpu = round(time.time() - t0, 1), round(_cpu_s() - cpu0, 1)
            self.run_now.append(name)
            # merged into the file's current content: control experiments of other
            # rates or seeds may share the folder and write their stages meanwhile
            self.times = {
                **read_json(self.times_path, {}),
                name: {"wall_s": wall, "cpu_s": cpu},
            }
            text = json.dumps(self.times, indent=1, sort_keys=True).encode()
            atomic_write(self.times_path, lambda f: f.write(text))
        return result

    def npre_cfg(self, variant: str) -> Any:
        name = f"vissl_clusterfit/pretrain/{VARIANTS[variant].npre_config}"
        return compose_config([f"config={name}_{self.settings.scale}"], False)[1]

    def _pipeline(self, folder: str, seed: int) -> Pipeline:
        ps = PipelineSettings(output_dir=folder, scale=self.settings.scale, seed=seed)
        ps.num_proc = self.settings.num_proc
        return Pipeline(ps, self.passthrough)

    def _train(self, cell: Pipeline, name: str, config: str, over: List[str]) -> str:
        def run() -> Tuple[str, bool]:
            ncf = name != "npre"  # N_cf, distillation, prototype: their own init
            ckpt = cell.train(name, f"vissl_clusterfit/{config}", over, ncf)
            return ckpt, cell.timings.pop(name, None) is not None

        return self._timed(os.path.relpath(f"{cell.out}/{name}", self.out), run)

    def _record(self, key: Dict, model: str, k: Optional[int], ckpt: str) -> None:
        """Probe ``ckpt`` (or reuse its cached probe); one record per target."""
        targets = VARIANTS[key["variant"]].targets()
        folder = os.path.dirname(ckpt)
        cache, probed_on = f"{folder}/probe_res5.json", self.settings.probe_settings()
        probed = self._timed(
            "probe:" + os.path.relpath(folder, self.out),
            lambda: cached_probe(ckpt, list(targets.values()), probed_on, cache),
        )
        for target, name in targets.items():
            res = dict(val=probed[name]["val"], test=probed[name]["test"])
            self.records.append(dict(key, model=model, k=k, target=target, **res))

    def run_cell(self, variant: str, pct: int, seed: int) -> None:
        key = {"variant": variant, "p": pct, "seed": seed}
        cell = self._pipeline(f"{self.out}/{variant}/p{pct}/s{seed}", seed)
        npre_cfg = self.npre_cfg(variant)
        first = stage_overrides(self.settings, variant, pct, seed, "", npre_cfg)["npre"]
        npre = self._train(cell, "npre", *first)
        fit = npre_train_accuracy(os.path.dirname(npre))
        self.npre_fit.append(dict(key, train_top1=fit))
        self._record(key, "N_pre", None, npre)
        stages = stage_overrides(self.settings, variant, pct, seed, npre, npre_cfg)
        for name, (config, over) in list(stages.items())[1:]:
            ckpt = self._train(cell, name, config, over)
            k = int(name[len("ncf_k") :]) if name.startswith("ncf_k") else None
            self._record(key, MODEL_NAMES.get(name, f"N_cf K={k}"), k, ckpt)
            if k is not None:
                meta = read_meta(f"{os.path.dirname(ckpt)}/clusterfit", "clusterfit")
                self.clusters.append(dict(key, k=k, **(meta or {}).get("metrics", {})))

    def run_random(self, seed: int) -> None:
        """The random-init reference: an untrained trunk of N_pre's architecture."""
        ckpt = f"{self.out}/random/s{seed}/random_init.torch"
        if not os.path.isfile(ckpt):
            save_untrained_trunk(
                ckpt, self.npre_cfg(names(self.settings.variants)[0]).MODEL, seed
            )
        for variant in names(self.settings.variants):
            for p in ints(self.settings.rates):
                key = {"variant": variant, "p": p, "seed": seed}
                self._record(key, "random init", None, ckpt)

    def run(self) -> Dict[str, Any]:
        t0 = time.time()
        for seed in ints(self.settings.seeds):
            for variant in names(self.settings.variants):
                for p in ints(self.settings.rates):
                    print(f"[control] {variant} N_pre, p={p}%, seed {seed}", flush=True)
                    self.run_cell(variant, p, seed)
            self.run_random(seed)
        report = {
            "settings": dataclasses.asdict(self.settings),
            "num_proc": self.settings.num_proc,
            "passthrough": self.passthrough,
            "records": self.records,
            "npre_fit": self.npre_fit,
            "clusters": self.clusters,
            "stage_time_s": self.times,
            "stages_run_now": self.run_now,
            "total_time_s": round(time.time() - t0, 1),
        }
        return write_report(self.out, report)


def main(argv: List[str]) -> Dict[str, Any]:
    """``control.<key>=<value>`` settings; ``config.<KEY>=<value>`` go to every stage."""
    ours, rest = split_argv(argv, "control")
    return ControlExperiment(ControlSettings.from_args(ours), rest).run()


USAGE = """usage: vissl-clusterfit-control [control.<key>=<value> ...] [config.<KEY>=<value> ...]
       (also: python tools/control_experiment.py ...)

ClusterFit's control experiment (Sec. 3.2, Fig. 3): supervised N_pre on noisy labels
for each p and seed, N_cf over a K sweep, distillation and prototype, res5 linear
probes on four targets; report.md / report.json / fig3_control.png in
control.output_dir. control.preset=tiny|small|full sets the defaults. Settings:
"""


def invoke_main(argv: Optional[List[str]] = None) -> None:
    """The console script: ``main``, then where the report is."""
    report = main(console_argv(argv, USAGE, ControlSettings, "control"))
    out = report["settings"]["output_dir"]
    print(
        f"\nstages run now: {len(report['stages_run_now'])}; "
        f"wall time {report['total_time_s']:.0f} s"
    )
    print(f"Report: {out}/report.md (plot: {out}/fig3_control.png)")
