"""One VISSL stage of an experiment: ``python -m vissl_clusterfit.launch`` in a
subprocess (a VISSL run owns its process group and global state), logged to
``<out>/<stage>/stdout.log``, with the settings every stage shares (seed, processes,
the preset's config names, the data the user chose)."""

import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from vissl_clusterfit.experiments.pipeline.settings import (
    PRESETS,
    PipelineData,
    PipelineSettings,
)


class StageRunner:
    """Runs the stages of one output folder and keeps their wall times (``timings``)."""

    def __init__(self, settings: PipelineSettings, passthrough: List[str]) -> None:
        self.settings = settings
        self.preset = PRESETS[settings.preset]
        self.passthrough = passthrough
        self.out = os.path.abspath(settings.output_dir)
        self.timings: Dict[str, float] = {}
        self.data = PipelineData.from_settings(settings)
        self.folder = self.data.folder
        os.makedirs(self.out, exist_ok=True)

    @property
    def data_label(self) -> str:
        return self.data.label

    @property
    def probe_target(self) -> str:
        return self.data.probe_target

    def data_overrides(self, cluster_labels: bool = False) -> List[str]:
        return self.data.overrides(cluster_labels)

    def config_name(self, kind: str, pretext: str = "rotnet", target: str = "") -> str:
        template = getattr(self.preset, f"{kind}_config")
        return template.format(p=pretext, scale=self.settings.scale, target=target)

    def _common(self, seed: Optional[int] = None) -> List[str]:
        s = self.settings
        options = self.preset.group_options.get(s.scale, ())
        group = [f"+vissl_clusterfit_defaults=[{','.join(options)}]"] if options else []
        return [
            *group,
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={s.num_proc}",
            f"config.SEED_VALUE={s.seed if seed is None else seed}",
        ]

    def run_stage(
        self,
        name: str,
        overrides: List[str],
        engine: str = "train",
        seed: Optional[int] = None,
    ) -> str:
        """One VISSL run (``seed``: its SEED_VALUE, default the pipeline's seed)."""
        folder = os.path.join(self.out, name)
        os.makedirs(folder, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "vissl_clusterfit.launch",
            f"engine_name={engine}",
            *overrides,
            *self._common(seed),
            f"config.CHECKPOINT.DIR={folder}",
            *self.passthrough,
        ]
        log = os.path.join(folder, "stdout.log")
        print(f"[pipeline] {name}: running (log: {log})", flush=True)
        t0 = time.time()
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        env.setdefault(
            "OMP_NUM_THREADS",
            str(max(1, (os.cpu_count() or 1) // self.settings.num_proc)),
        )
        with open(log, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        self.timings[name] = round(time.time() - t0, 1)
        if rc != 0:
            tail = open(log).read().splitlines()[-15:]
            raise RuntimeError(
                f"stage {name} failed (exit {rc}); last lines of {log}:\n"
                + "\n".join(tail)
            )
        print(f"[pipeline] {name}: done in {self.timings[name]:.0f}s", flush=True)
        return folder
