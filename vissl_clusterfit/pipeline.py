"""The whole ClusterFit method in one command (Yan et al. 2020, Sec. 3.1 and 4.2):

    N_pre pre-training (or a given checkpoint) -> clustering + N_cf training (one VISSL
    run with the vcf hook) -> layer-wise linear evaluation of N_pre, N_cf (and N_pre 2x)
    -> report.json, report.md and plots in the output folder.

Each stage is one run of tools/run_distributed_engines.py in a subprocess (a VISSL run
owns its process group and global state), logged to ``<stage>/stdout.log``, and skipped
when its outputs already exist, so a killed pipeline resumes where it stopped.

Settings are ``pipeline.<key>=<value>`` arguments (see ``PipelineSettings``); any
``config.X=Y`` argument is passed to every VISSL stage.

Presets (``pipeline.preset``): ``fmnist`` (default) runs the plugin's Fashion-MNIST
configs; ``resnet50_in1k`` runs the paper's ImageNet setting (Table 6) on VISSL's own
ResNet-50 configs: N_pre from ``pretrain/{rotnet,jigsaw}/*_8gpu_resnet``, N_cf from
``vissl_clusterfit/clusterfit/ncf_*_resnet50_in1k_gpu``, linear probes from
``benchmark/linear_image_classification/imagenet1k/eval_resnet_8gpu_transfer_in1k_linear``,
on the user's images: ``pipeline.data=folder:<root>`` (``<root>/train/<class>/*`` and
``<root>/val/<class>/*``) or ``pipeline.dataset_name=<VISSL dataset catalog name>``
(default: ``imagenet1k_folder`` from the catalog VISSL_DATASET_CATALOG_PATH points at).
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from vissl_clusterfit.checkpoints import (  # noqa: F401  (final_checkpoint re-exported)
    final_checkpoint,
    read_final_test_accuracy,
    save_untrained_trunk,
)
from vissl_clusterfit.data.cluster_labels import clusterfit_output_dir, read_meta
from vissl_clusterfit.pipeline_settings import (  # noqa: F401  (re-exported)
    FOLDER_PREFIX,
    PRESETS,
    PipelineData,
    PipelineSettings,
    Preset,
    ncf_seed,
)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Pipeline:
    def __init__(self, settings: PipelineSettings, passthrough: List[str]) -> None:
        self.s = settings
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
        return template.format(p=pretext, scale=self.s.scale, target=target)

    # -- running one VISSL stage ------------------------------------------------------
    def _common(self, seed: Optional[int] = None) -> List[str]:
        options = self.preset.group_options.get(self.s.scale, ())
        group = [f"+vissl_clusterfit_defaults=[{','.join(options)}]"] if options else []
        return [
            *group,
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={self.s.num_proc}",
            f"config.SEED_VALUE={self.s.seed if seed is None else seed}",
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
            os.path.join(ROOT, "tools", "run_distributed_engines.py"),
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
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.s.num_proc))
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

    def train(
        self,
        name: str,
        config: str,
        overrides: List[str],
        from_npre_labels: bool = False,
    ) -> str:
        """Train one stage (reused when its final checkpoint exists). A model trained
        on labels derived from N_pre (``from_npre_labels``) gets its own initial
        weights: SEED_VALUE ``ncf_seed(seed)``."""
        folder = os.path.join(self.out, name)
        ckpt = final_checkpoint(folder)
        if ckpt:
            print(f"[pipeline] {name}: reusing {ckpt}", flush=True)
            return ckpt
        seed = ncf_seed(self.s.seed) if from_npre_labels else None
        self.run_stage(name, [f"config={config}", *overrides], seed=seed)
        ckpt = final_checkpoint(folder)
        if not ckpt:
            raise RuntimeError(
                f"stage {name} finished without a final checkpoint in {folder}"
            )
        return ckpt

    def linear_eval(
        self,
        name: str,
        checkpoint: str,
        target: str = "fmnist",
        extra: Optional[List[str]] = None,
    ) -> Dict[str, float]:
        """VISSL's layer-wise linear probes of ``checkpoint``; ``extra`` overrides make the
        probed trunk match the checkpoint's (e.g. a Sobel stem)."""
        folder = os.path.join(self.out, name)
        done = os.path.join(folder, "linear_eval.json")
        if os.path.isfile(done):
            with open(done) as f:
                result = json.load(f)
            if result.get("checkpoint") == checkpoint:
                print(f"[pipeline] {name}: reusing {done}", flush=True)
                return result["top1"]
        overrides = [
            f"config={self.config_name('linear', target=target)}",
            f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={checkpoint}",
            f"config.OPTIMIZER.num_epochs={self.s.eval_epochs}",
            # the report reads the final test pass; VISSL also always tests after epoch 0
            f"config.TEST_EVERY_NUM_EPOCH={self.s.eval_epochs}",
        ]
        if target == "fmnist" or self.s.preset != "fmnist":
            overrides += [
                f"config.DATA.TRAIN.DATA_LIMIT={self.s.eval_train_limit}",
                f"config.DATA.TEST.DATA_LIMIT={self.s.eval_test_limit}",
                *self.data_overrides(),
            ]
        self.run_stage(name, overrides + list(extra or []))
        top1 = read_final_test_accuracy(os.path.join(folder, "metrics.json"))
        with open(done, "w") as f:
            json.dump({"checkpoint": checkpoint, "top1": top1}, f, indent=2)
        return top1

    # -- the method -------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        s = self.s
        t_start = time.time()
        sizes = [
            f"config.DATA.TRAIN.DATA_LIMIT={s.data_limit}",
            f"config.OPTIMIZER.num_epochs={s.epochs}",
        ]
        pretexts = [p.strip() for p in s.pretexts.split(",") if p.strip()]
        for p in pretexts:
            if p not in ("rotnet", "jigsaw"):
                raise ValueError(
                    f"pipeline.pretexts: '{p}' is not one of rotnet, jigsaw"
                )
        if s.npre_checkpoint and len(pretexts) != 1:
            raise ValueError(
                "pipeline.npre_checkpoint needs exactly one pipeline.pretexts entry"
            )
        models: Dict[str, str] = {}
        clusters: Dict[str, Any] = {}
        data = self.data_overrides()
        for p in pretexts:
            npre_config = self.config_name("npre", p)
            npre = s.npre_checkpoint or self.train(
                f"npre_{p}", npre_config, sizes + data
            )
            models[f"N_pre {p}"] = npre
            if s.with_2x:
                models[f"N_pre 2x {p}"] = self.train(
                    f"npre2x_{p}",
                    npre_config,
                    [sizes[0], f"config.OPTIMIZER.num_epochs={2 * s.epochs}", *data],
                )
            ncf_name = f"ncf_{p}_k{s.num_clusters}"
            models[f"N_cf {p} K={s.num_clusters}"] = self.train(
                ncf_name,
                self.config_name("ncf", p),
                sizes
                + [
                    f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
                    f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={s.num_clusters}",
                    f"config.VCF.CLUSTERFIT.SEED={s.seed}",
                    *self.data_overrides(cluster_labels=True),
                ],
                from_npre_labels=True,
            )
            clusters[p] = read_meta(
                clusterfit_output_dir("", os.path.join(self.out, ncf_name)),
                f"clusterfit_{p}",
            )
        if s.with_random:
            models["random init"] = self.random_init_checkpoint()
        target = "fmnist" if s.preset == "fmnist" else self.probe_target
        results: Dict[str, Dict[str, Dict[str, float]]] = {target: {}}
        for label, ckpt in models.items():
            slug = label.replace(" ", "_").replace("=", "")
            results[target][label] = self.linear_eval(f"linear_{slug}", ckpt)
            if s.eval_digits:
                results.setdefault("digits", {})[label] = self.linear_eval(
                    f"linear_digits_{slug}", ckpt, target="digits"
                )
        report = {
            "settings": dataclasses.asdict(s),
            "data": self.data_label,
            "passthrough": self.passthrough,
            "checkpoints": models,
            "linear_top1": results,
            "clusters": {
                p: {"metrics": m["metrics"], "files": m["files"], "time_s": m["time_s"]}
                for p, m in clusters.items()
            },
            "stage_time_s": self.timings,
            "total_time_s": round(time.time() - t_start, 1),
        }
        from vissl_clusterfit.report import write_report

        write_report(self.out, report)
        return report

    def random_init_checkpoint(
        self, extra_overrides: Optional[List[str]] = None, name: str = "random_init"
    ) -> str:
        """An untrained trunk of N_pre's architecture, saved as a checkpoint with its
        train_config.yaml (checkpoints.save_untrained_trunk). ``extra_overrides``
        change the architecture (e.g. a Sobel stem) to match the models it is compared
        with; give each variant its own ``name``."""
        path = os.path.join(self.out, name, "random_init.torch")
        if os.path.isfile(path):
            return path
        from vissl_clusterfit.config import compose_config

        _, cfg = compose_config(
            [
                f"config={self.config_name('npre', 'rotnet')}",
                "config.CHECKPOINT.DIR=/tmp",
                *(extra_overrides or []),
            ],
            dump_config=False,
        )
        return save_untrained_trunk(path, cfg.MODEL, self.s.seed)


def main(argv: List[str]) -> Dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    ours = [a for a in argv if a.startswith("pipeline.")]
    rest = [a for a in argv if not a.startswith("pipeline.")]
    bad = [a for a in rest if not a.startswith(("config.", "+config."))]
    if bad:
        raise ValueError(
            f"arguments {bad}: use pipeline.<key>=<value> or config.<KEY>=<value>"
        )
    return Pipeline(PipelineSettings.from_args(ours), rest).run()
