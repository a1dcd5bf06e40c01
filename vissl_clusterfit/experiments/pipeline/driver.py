"""The whole ClusterFit method in one command (Yan et al. 2020, Sec. 3.1 and 4.2):

    N_pre pre-training (or a given checkpoint) -> clustering + N_cf training (one VISSL
    run with the vcf hook) -> layer-wise linear evaluation of N_pre, N_cf (and N_pre 2x)
    -> report.json, report.md and plots in the output folder.

Each stage is one ``python -m vissl_clusterfit.launch`` run in a subprocess
(``stages.StageRunner``), logged to ``<stage>/stdout.log``, and skipped when its outputs
already exist, so a killed pipeline resumes where it stopped. Each stage kind reads alone:
``training``, ``linear_eval``, ``random_init``; this module is the method's order.

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
import logging
import os
import time
from typing import Any, Dict, List, Optional

from vissl_clusterfit.data.cluster_labels import clusterfit_output_dir, read_meta
from vissl_clusterfit.experiments.cli import console_argv, split_argv
from vissl_clusterfit.experiments.pipeline import linear_eval, random_init, training
from vissl_clusterfit.experiments.pipeline.report import accuracy_table, write_report
from vissl_clusterfit.experiments.pipeline.settings import PipelineSettings
from vissl_clusterfit.experiments.pipeline.stages import StageRunner


class Pipeline(StageRunner):
    """The stages of ClusterFit in the paper's order; each stage kind is a function of
    its own module, bound here so drivers and benchmarks call ``pipe.train(...)``."""

    def train(
        self,
        name: str,
        config: str,
        overrides: List[str],
        from_npre_labels: bool = False,
    ) -> str:
        return training.train(self, name, config, overrides, from_npre_labels)

    def linear_eval(
        self,
        name: str,
        checkpoint: str,
        target: str = "fmnist",
        extra: Optional[List[str]] = None,
    ) -> Dict[str, float]:
        return linear_eval.linear_eval(self, name, checkpoint, target, extra)

    def random_init_checkpoint(
        self, extra_overrides: Optional[List[str]] = None, name: str = "random_init"
    ) -> str:
        return random_init.random_init_checkpoint(self, extra_overrides, name)

    # -- the method -------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        s = self.settings
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
        write_report(self.out, report)
        return report


def main(argv: List[str]) -> Dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    ours, rest = split_argv(argv, "pipeline")
    return Pipeline(PipelineSettings.from_args(ours), rest).run()


USAGE = """usage: vissl-clusterfit-pipeline [pipeline.<key>=<value> ...] [config.<KEY>=<value> ...]
       (also: python tools/clusterfit_pipeline.py ...)

ClusterFit end to end: N_pre -> clustering + N_cf -> layer-wise linear probes; writes
report.json, report.md and plots into pipeline.output_dir and prints the per-layer
table. Each stage is skipped when its outputs exist. Settings (PipelineSettings):
"""


def invoke_main(argv: Optional[List[str]] = None) -> None:
    """The console script: ``main``, then the per-layer tables."""
    report = main(console_argv(argv, USAGE, PipelineSettings, "pipeline"))
    for target, results in report["linear_top1"].items():
        print(f"\nLinear probe top-1 (%) on {target}, per layer:\n")
        print(accuracy_table(results))
    print(f"\nReport: {report['settings']['output_dir']}/report.md")
