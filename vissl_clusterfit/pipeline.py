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
import glob
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import yaml

from vissl_clusterfit.data.cluster_labels import clusterfit_output_dir, read_meta


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Preset:
    """The configs and default sizes of one family of stages ({p}: pretext, {scale})."""

    npre_config: str
    ncf_config: str
    linear_config: str  # {target}: fmnist | digits for the Fashion-MNIST preset
    defaults: Dict[str, Any]
    # +vissl_clusterfit_defaults options added to every stage, per pipeline.scale: the
    # plugin's keys on VISSL's own configs (so config.VCF.* arguments pass to every
    # stage), and the CPU switch for configs made for 8 GPUs
    group_options: Dict[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)


PRESETS: Dict[str, Preset] = {
    "fmnist": Preset(
        npre_config="vissl_clusterfit/pretrain/{p}_fmnist_{scale}",
        ncf_config="vissl_clusterfit/clusterfit/ncf_{p}_fmnist_{scale}",
        linear_config="vissl_clusterfit/benchmark/linear_{target}_{scale}",
        defaults=dict(
            scale="cpu",
            num_clusters=50,
            data_limit=8000,
            epochs=8,
            eval_train_limit=8000,
            eval_test_limit=-1,
            eval_epochs=4,
        ),
    ),
    # ClusterFit Table 6: ResNet-50 N_pre (VISSL's RotNet / Jigsaw configs, 105 epochs),
    # K=16,000, N_cf for as many epochs, VISSL's linear benchmark (28 epochs)
    "resnet50_in1k": Preset(
        npre_config="pretrain/{p}/{p}_8gpu_resnet",
        ncf_config="vissl_clusterfit/clusterfit/ncf_{p}_resnet50_in1k_gpu",
        linear_config=(
            "benchmark/linear_image_classification/imagenet1k/"
            "eval_resnet_8gpu_transfer_in1k_linear"
        ),
        defaults=dict(
            scale="gpu",
            num_clusters=16000,
            data_limit=-1,
            epochs=105,
            eval_train_limit=-1,
            eval_test_limit=-1,
            eval_epochs=28,
        ),
        group_options={"gpu": ("plugin",), "cpu": ("plugin", "cpu")},
    ),
}
FOLDER_PREFIX = "folder:"


@dataclasses.dataclass
class PipelineSettings:
    """``pipeline.<key>`` settings; those left at None take the preset's default."""

    output_dir: str = "./runs/clusterfit_demo"
    pretexts: str = "rotnet"  # comma list of rotnet, jigsaw
    preset: str = "fmnist"  # fmnist | resnet50_in1k (see PRESETS)
    data: str = ""  # resnet50_in1k: folder:<root> with <root>/train and <root>/val
    dataset_name: str = (
        ""  # resnet50_in1k: a VISSL dataset catalog name for both splits
    )
    scale: Optional[str] = None  # cpu | gpu: which config variants / machine settings
    npre_checkpoint: str = ""  # skip N_pre training (one pretext only)
    num_clusters: Optional[int] = None  # K (fmnist: 50, resnet50_in1k: 16,000)
    data_limit: Optional[int] = None  # D_cf / pre-training images (-1 = all)
    epochs: Optional[int] = None  # N_pre and N_cf epochs (the paper keeps them equal)
    with_2x: bool = False  # also train and evaluate N_pre 2x (2 * epochs)
    with_random: bool = False  # also evaluate a randomly initialised network
    eval_train_limit: Optional[int] = None  # linear-probe training images (-1 = all)
    eval_test_limit: Optional[int] = None  # linear-probe test images (-1 = all)
    eval_epochs: Optional[int] = None
    eval_digits: bool = False  # fmnist: also probe on scikit-learn digits (transfer)
    num_proc: int = 1  # processes per node for every stage
    seed: int = 0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(
                f"pipeline.preset={self.preset}: use one of {', '.join(PRESETS)}"
            )
        for name, value in PRESETS[self.preset].defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.scale not in ("cpu", "gpu"):
            raise ValueError(f"pipeline.scale={self.scale}: use cpu or gpu")
        if self.preset == "fmnist" and (self.data or self.dataset_name):
            raise ValueError(
                "pipeline.data / pipeline.dataset_name select your own images, which "
                "the Fashion-MNIST configs cannot read: add pipeline.preset=resnet50_in1k"
            )
        if self.data and self.dataset_name:
            raise ValueError("set pipeline.data or pipeline.dataset_name, not both")
        if self.data and not self.data.startswith(FOLDER_PREFIX):
            raise ValueError(
                f"pipeline.data={self.data}: write pipeline.data=folder:<root>, <root> "
                "holding train/<class>/* and val/<class>/*"
            )
        if self.eval_digits and self.preset != "fmnist":
            raise ValueError("pipeline.eval_digits needs pipeline.preset=fmnist")

    @classmethod
    def from_args(cls, args: List[str]) -> "PipelineSettings":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: Dict[str, Any] = {}
        for arg in args:
            key, _, value = arg.partition("=")
            name = key[len("pipeline.") :]
            if name not in fields:
                raise ValueError(
                    f"unknown pipeline setting '{key}': valid are "
                    + ", ".join(f"pipeline.{n}" for n in fields)
                )
            default = fields[name].default
            if isinstance(default, bool):
                values[name] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, int) or name in _INT_SETTINGS:
                values[name] = int(value)
            else:
                values[name] = value
        return cls(**values)


# settings whose default is None (the preset's) but whose values are integers
_INT_SETTINGS = (
    "num_clusters",
    "data_limit",
    "epochs",
    "eval_train_limit",
    "eval_test_limit",
    "eval_epochs",
)


def final_checkpoint(folder: str) -> Optional[str]:
    found = sorted(
        glob.glob(os.path.join(folder, "model_final_checkpoint_phase*.torch")),
        key=lambda p: int(p.rsplit("phase", 1)[1].split(".")[0]),
    )
    return found[-1] if found else None


class Pipeline:
    def __init__(self, settings: PipelineSettings, passthrough: List[str]) -> None:
        self.s = settings
        self.preset = PRESETS[settings.preset]
        self.passthrough = passthrough
        self.out = os.path.abspath(settings.output_dir)
        self.timings: Dict[str, float] = {}
        self.folder = self._check_folder()
        os.makedirs(self.out, exist_ok=True)

    def _check_folder(self) -> str:
        """The root of pipeline.data=folder:<root> (absolute), "" without one."""
        if not self.s.data:
            return ""
        root = os.path.abspath(os.path.expanduser(self.s.data[len(FOLDER_PREFIX) :]))
        missing = [d for d in ("train", "val") if not os.path.isdir(f"{root}/{d}")]
        if missing:
            raise FileNotFoundError(
                f"pipeline.data={self.s.data}: {root} has no {' and no '.join(missing)} "
                "folder; it needs train/<class>/<images> and val/<class>/<images>"
            )
        return root

    @property
    def data_label(self) -> str:
        """What the probes and D_cf are, for the report."""
        if self.s.preset == "fmnist":
            return "Fashion-MNIST"
        if self.folder:
            return f"folder {self.folder}"
        return self.s.dataset_name or "imagenet1k_folder"

    @property
    def probe_target(self) -> str:
        """The name of the linear probes' data in the report (resnet50_in1k)."""
        if self.folder:
            return os.path.basename(self.folder.rstrip("/")) or "folder"
        return self.s.dataset_name or "imagenet1k_folder"

    def data_overrides(self, cluster_labels: bool = False) -> List[str]:
        """Point a stage at the user's images: explicit paths for a folder (then VISSL
        needs no catalog entry: LABEL_PATHS set too), or catalog names for both splits.
        ``cluster_labels``: N_cf, whose DATA.TRAIN.LABEL_PATHS stay [auto]."""
        if self.folder:
            train, val = f"{self.folder}/train", f"{self.folder}/val"
            out = [f"config.DATA.TRAIN.DATA_PATHS=[{train}]"]
            if not cluster_labels:
                out.append(f"config.DATA.TRAIN.LABEL_PATHS=[{train}]")
            return out + [
                f"config.DATA.TEST.DATA_PATHS=[{val}]",
                f"config.DATA.TEST.LABEL_PATHS=[{val}]",
            ]
        if self.s.dataset_name:
            return [
                f"config.DATA.{split}.DATASET_NAMES=[{self.s.dataset_name}]"
                for split in ("TRAIN", "TEST")
            ]
        return []

    def config_name(self, kind: str, pretext: str = "rotnet", target: str = "") -> str:
        template = getattr(self.preset, f"{kind}_config")
        return template.format(p=pretext, scale=self.s.scale, target=target)

    # -- running one VISSL stage ------------------------------------------------------
    def _common(self) -> List[str]:
        options = self.preset.group_options.get(self.s.scale, ())
        group = [f"+vissl_clusterfit_defaults=[{','.join(options)}]"] if options else []
        return [
            *group,
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={self.s.num_proc}",
            f"config.SEED_VALUE={self.s.seed}",
        ]

    def run_stage(self, name: str, overrides: List[str], engine: str = "train") -> str:
        folder = os.path.join(self.out, name)
        os.makedirs(folder, exist_ok=True)
        cmd = [
            sys.executable,
            os.path.join(ROOT, "tools", "run_distributed_engines.py"),
            f"engine_name={engine}",
            *overrides,
            *self._common(),
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

    def train(self, name: str, config: str, overrides: List[str]) -> str:
        folder = os.path.join(self.out, name)
        ckpt = final_checkpoint(folder)
        if ckpt:
            print(f"[pipeline] {name}: reusing {ckpt}", flush=True)
            return ckpt
        self.run_stage(name, [f"config={config}", *overrides])
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
        """A 0-epoch 'training' is not possible in VISSL; save an untrained trunk in the
        layout VISSL's weight loading expects instead, with a train_config.yaml beside it
        (as VISSL writes one) so that tools reading the model config from there build the
        same architecture. ``extra_overrides`` change the architecture (e.g. a Sobel stem)
        to match the models it is compared with; give each variant its own ``name``."""
        path = os.path.join(self.out, name, "random_init.torch")
        if os.path.isfile(path):
            return path
        import torch
        from vissl.models.trunks import get_model_trunk

        from vissl_clusterfit.launcher import compose_config

        _, cfg = compose_config(
            [
                f"config={self.config_name('npre', 'rotnet')}",
                "config.CHECKPOINT.DIR=/tmp",
                *(extra_overrides or []),
            ],
            dump_config=False,
        )
        torch.manual_seed(self.s.seed)
        trunk = get_model_trunk(cfg.MODEL.TRUNK.NAME)(cfg.MODEL, cfg.MODEL.TRUNK.NAME)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        state = {
            "classy_state_dict": {
                "base_model": {"model": {"trunk": trunk.state_dict(), "heads": {}}}
            }
        }
        torch.save(state, path)
        model = cfg.MODEL.to_dict()
        model.get("FSDP_CONFIG", {}).pop(
            "compute_dtype", None
        )  # a torch.dtype, not YAML
        with open(os.path.join(os.path.dirname(path), "train_config.yaml"), "w") as f:
            yaml.safe_dump({"MODEL": model}, f)
        return path


def read_final_test_accuracy(metrics_path: str) -> Dict[str, float]:
    """Top-1 per layer of the last test evaluation in VISSL's metrics.json."""
    last = None
    with open(metrics_path) as f:
        for line in f:
            entry = json.loads(line)
            if "test_accuracy_list_meter" in entry:
                last = entry["test_accuracy_list_meter"]["top_1"]
    if last is None:
        raise RuntimeError(f"{metrics_path} has no test accuracy")
    return {k: round(float(v), 2) for k, v in last.items()}


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
