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

import torch
import yaml

from vissl_clusterfit.checkpoints import save_untrained_trunk
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.control_probe import cached_probe, fmnist_splits
from vissl_clusterfit.control_report import npre_train_accuracy, write_report
from vissl_clusterfit.data.cluster_labels import read_meta
from vissl_clusterfit.data.fashion_mnist import DEFAULT_PATH
from vissl_clusterfit.pipeline import Pipeline, PipelineSettings


@dataclasses.dataclass(frozen=True)
class Variant:
    """A supervised N_pre: its config (under pretrain/, + _cpu | _gpu), clean label
    source (``vcf_noisy:<it>`` adds the noise) and number of classes."""

    npre_config: str
    label_source: str
    num_classes: int

    def targets(self) -> Dict[str, str]:
        """Report target -> probe target (``control_probe.TARGET_NAMES``): aligned =
        N_pre's label space; finer = the 10 classes, when N_pre has fewer."""
        finer = {"finer": "fmnist10"} if self.num_classes < 10 else {}
        aligned = f"fmnist{self.num_classes}"
        return dict(aligned=aligned, **finer, tops="tops4", digits="digits10")


VARIANTS = {
    "coarse": Variant("supervised_coarse_fmnist", "vcf_fashion_mnist_coarse", 5),
    "fine": Variant("supervised_fmnist", "vcf_fashion_mnist", 10),
}
METHODS = ("ncf", "distill", "prototype")  # N_pre and random init always run
MODEL_NAMES = {"npre": "N_pre", "distill": "distillation", "prototype": "prototype"}
CF = "config.VCF.CLUSTERFIT"

# fmt: off
PRESETS: Dict[str, Dict[str, Any]] = {
    # the test's preset: every stage and report path, CPU configs; numbers mean nothing
    "tiny": dict(variants="coarse", rates="0,50", seeds="0", ks="4,8", data_limit=160,
                 epochs=1, probe_train=160, probe_val=100, probe_test=200, scale="cpu"),
    # pre-registered in benchmarks/README.md ("Control experiment")
    "small": dict(variants="coarse", rates="0,50,75", seeds="0,1,2", ks="10,50",
                  data_limit=640, epochs=25, probe_train=2000, probe_val=1000,
                  probe_test=2000),
    # background run: D_pre = 55k images (5k held out for validation), N_pre and N_cf
    # for the configs' epochs; seeds 0 on CPU, 0,1,2 with GPUs
    "full": dict(variants="coarse", rates="0,50", ks="100,1000", methods="ncf",
                 data_limit=55000, probe_train=10000, probe_val=5000, probe_test=-1),
}
# fmt: on


@dataclasses.dataclass
class ControlSettings:
    """``control.<key>`` settings; None takes the preset's value."""

    output_dir: str = "./runs/control"
    preset: str = "small"  # tiny | small | full (PRESETS)
    variants: Optional[str] = None  # comma list of VARIANTS
    rates: Optional[str] = None  # label-noise rates p, comma list, in percent
    seeds: Optional[str] = None  # comma list (default: 0 on CPU, 0,1,2 with GPUs)
    ks: Optional[str] = None  # K sweep of N_cf; K chosen per target on validation
    methods: Optional[str] = None  # beside N_pre and random init (default: METHODS)
    data_limit: Optional[int] = None  # D_pre = D_cf images
    epochs: Optional[int] = None  # of every trained model (None: the configs')
    scale: Optional[str] = None  # cpu | gpu configs (default: gpu with GPUs)
    probe_train: Optional[int] = None  # labelled train images of the probes
    probe_val: Optional[int] = None  # validation images (outside D_pre, probe_train)
    probe_test: Optional[int] = None  # test images (-1 = all 10k)
    data_path: str = DEFAULT_PATH  # Fashion-MNIST's IDX files

    def __post_init__(self) -> None:
        self.data_path = os.path.abspath(self.data_path)
        if self.preset not in PRESETS:
            raise ValueError(f"control.preset={self.preset}: use {', '.join(PRESETS)}")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        auto = dict(seeds="0,1,2" if gpus else "0", scale="gpu" if gpus else "cpu")
        auto.update({"methods": ",".join(METHODS), **PRESETS[self.preset]})
        for key, value in auto.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.num_proc = max(gpus, 1) if self.scale == "gpu" else 1
        for key, valid in (("variants", VARIANTS), ("methods", METHODS)):
            wrong = [x for x in names(getattr(self, key)) if x not in valid]
            if wrong:
                raise ValueError(f"control.{key}: {wrong} not in {', '.join(valid)}")
        if any(not 0 <= p <= 100 for p in ints(self.rates)):
            raise ValueError(f"control.rates={self.rates}: percentages in [0, 100]")
        fmnist_splits(self.data_limit, self.probe_train, self.probe_val)

    @classmethod
    def from_args(cls, args: List[str]) -> "ControlSettings":
        fields = [f.name for f in dataclasses.fields(cls)]
        values: Dict[str, Any] = {}
        for key, _, value in (arg.partition("=") for arg in args):
            if key[len("control.") :] not in fields:
                valid = ", ".join(f"control.{n}" for n in fields)
                raise ValueError(f"unknown setting '{key}': valid are {valid}")
            values[key[len("control.") :]] = yaml.safe_load(value)
        return cls(**values)

    def probe_settings(self) -> Dict[str, Any]:
        """What the probes depend on (``control_probe.probe_checkpoint``)."""
        keys = ("data_limit", "probe_train", "probe_val", "probe_test", "data_path")
        return {k: getattr(self, k) for k in keys}


def ints(s: Any) -> List[int]:
    return [int(x) for x in str(s).split(",") if x.strip()]


def names(s: Any) -> List[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def hydra_value(v: Any) -> str:
    """A value in Hydra's override grammar (lists, dicts, quoted strings)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"'{v}'" if isinstance(v, str) else repr(v)


def recipe_overrides(npre_cfg: Any, epochs: Optional[int]) -> List[str]:
    """N_pre's training recipe (from its composed config) for the other trained
    models; the epochs last."""
    opt, lr = npre_cfg.OPTIMIZER, npre_cfg.OPTIMIZER.param_schedulers.lr
    train = npre_cfg.DATA.TRAIN
    transforms = hydra_value([dict(t) for t in train.TRANSFORMS])
    return [
        f"config.DATA.TRAIN.TRANSFORMS={transforms}",
        f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={train.BATCHSIZE_PER_REPLICA}",
        f"config.OPTIMIZER.weight_decay={opt.weight_decay}",
        f"config.OPTIMIZER.momentum={opt.momentum}",
        f"config.OPTIMIZER.nesterov={hydra_value(bool(opt.nesterov))}",
        f"config.OPTIMIZER.param_schedulers.lr.start_value={lr.start_value}",
        f"config.OPTIMIZER.param_schedulers.lr.end_value={lr.end_value}",
        f"config.OPTIMIZER.num_epochs={epochs or opt.num_epochs}",
    ]


def stage_overrides(
    s: ControlSettings, variant: str, pct: int, seed: int, npre: str, npre_cfg: Any
) -> Dict[str, Tuple[str, List[str]]]:
    """Stage name -> (config, overrides) of one (variant, p, seed) cell: ``npre``, and
    from N_pre's checkpoint ``npre`` (composed config ``npre_cfg``) ``ncf_k<K>``,
    ``distill`` and ``prototype``."""
    v, path = VARIANTS[variant], s.data_path
    values = {"RATE": pct / 100, "SEED": seed, "NUM_CLASSES": v.num_classes}
    noise = [f"config.DATA.TRAIN.VCF_LABEL_NOISE.{k}={x}" for k, x in values.items()]
    data = [f"config.DATA.TRAIN.DATA_PATHS=[{path}]"]
    data += [f"config.DATA.TRAIN.DATA_LIMIT={s.data_limit}"]
    labels = [f"config.DATA.TRAIN.LABEL_PATHS=[{path}]"]
    recipe = recipe_overrides(npre_cfg, s.epochs)
    noisy = f"[vcf_noisy:{v.label_source}]"
    ncf = data + recipe + [f"{CF}.NPRE_CHECKPOINT={npre}", f"{CF}.SEED={seed}"]
    ncf_config = f"clusterfit/ncf_fmnist_{s.scale}"
    npre_config = f"pretrain/{v.npre_config}_{s.scale}"
    stages = {"npre": (npre_config, data + labels + noise + recipe[-1:])}
    methods = names(s.methods)
    for k in ints(s.ks) if "ncf" in methods else []:
        stages[f"ncf_k{k}"] = (ncf_config, ncf + [f"{CF}.NUM_CLUSTERS={k}"])
    if "distill" in methods:
        head = hydra_value(npre_cfg.MODEL.HEAD.PARAMS)  # N_pre's classifier
        distill = [f"config.DATA.TRAIN.LABEL_SOURCES={noisy}"]
        distill += [f"config.MODEL.HEAD.PARAMS={head}"]
        distill += [f"{CF}.NUM_CLUSTERS={min(ints(s.ks))}"]  # its k-means goes unused
        config = f"clusterfit/distill_supervised_fmnist_{s.scale}"
        stages["distill"] = (config, ncf + labels + noise + distill)
    if "prototype" in methods:
        proto = [f"{CF}.METHOD=prototype", f"{CF}.NUM_CLUSTERS={v.num_classes}"]
        proto += [f"{CF}.PRETRAIN_LABELS.LABEL_SOURCES={noisy}"]
        proto += [f"{CF}.PRETRAIN_LABELS.LABEL_PATHS=[{path}]"]
        stages["prototype"] = (ncf_config, ncf + ["++" + n for n in noise] + proto)
    return stages


def read_json(path: str, default: Any) -> Any:
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def _cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (the VISSL stages)."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, who))


class ControlExperiment:
    """Every stage and probe of the settings (run, or reused when finished), their
    records, and the report."""

    def __init__(self, settings: ControlSettings, passthrough: List[str]) -> None:
        self.s, self.passthrough = settings, passthrough
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
        now = dict({k: getattr(self.s, k) for k in keys}, passthrough=self.passthrough)
        path = os.path.join(self.out, "training_settings.json")
        old = read_json(path, now)
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in now.items() if old.get(k) != v]  # fmt: skip
        if diff:
            raise ValueError(
                f"{self.out} holds models trained with other settings "
                f"({'; '.join(diff)}): use another control.output_dir"
            )
        os.makedirs(self.out, exist_ok=True)
        with open(path, "w") as f:
            json.dump(now, f, indent=1)

    def _timed(self, name: str, fn: Callable[[], Tuple[Any, bool]]) -> Any:
        """``fn() -> (result, ran now?)``; keeps the wall and CPU seconds of a run."""
        t0, cpu0 = time.time(), _cpu_s()
        result, ran = fn()
        if ran:
            wall, cpu = round(time.time() - t0, 1), round(_cpu_s() - cpu0, 1)
            self.times[name] = {"wall_s": wall, "cpu_s": cpu}
            self.run_now.append(name)
            with open(self.times_path, "w") as f:
                json.dump(self.times, f, indent=1, sort_keys=True)
        return result

    def npre_cfg(self, variant: str) -> Any:
        name = f"vissl_clusterfit/pretrain/{VARIANTS[variant].npre_config}"
        return compose_config([f"config={name}_{self.s.scale}"], False)[1]

    def _pipeline(self, folder: str, seed: int) -> Pipeline:
        ps = PipelineSettings(output_dir=folder, scale=self.s.scale, seed=seed)
        ps.num_proc = self.s.num_proc
        return Pipeline(ps, self.passthrough)

    def _train(self, cell: Pipeline, name: str, config: str, over: List[str]) -> str:
        def run() -> Tuple[str, bool]:
            ckpt = cell.train(name, f"vissl_clusterfit/{config}", over)
            return ckpt, cell.timings.pop(name, None) is not None

        return self._timed(os.path.relpath(f"{cell.out}/{name}", self.out), run)

    def _record(self, key: Dict, model: str, k: Optional[int], ckpt: str) -> None:
        """Probe ``ckpt`` (or reuse its cached probe); one record per target."""
        targets = VARIANTS[key["variant"]].targets()
        folder = os.path.dirname(ckpt)
        cache, settings = f"{folder}/probe_res5.json", self.s.probe_settings()
        probed = self._timed(
            "probe:" + os.path.relpath(folder, self.out),
            lambda: cached_probe(ckpt, list(targets.values()), settings, cache),
        )
        for target, name in targets.items():
            res = dict(val=probed[name]["val"], test=probed[name]["test"])
            self.records.append(dict(key, model=model, k=k, target=target, **res))

    def run_cell(self, variant: str, pct: int, seed: int) -> None:
        key = {"variant": variant, "p": pct, "seed": seed}
        cell = self._pipeline(f"{self.out}/{variant}/p{pct}/s{seed}", seed)
        npre_cfg = self.npre_cfg(variant)
        first = stage_overrides(self.s, variant, pct, seed, "", npre_cfg)["npre"]
        npre = self._train(cell, "npre", *first)
        fit = npre_train_accuracy(os.path.dirname(npre))
        self.npre_fit.append(dict(key, train_top1=fit))
        self._record(key, "N_pre", None, npre)
        stages = stage_overrides(self.s, variant, pct, seed, npre, npre_cfg)
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
                ckpt, self.npre_cfg(names(self.s.variants)[0]).MODEL, seed
            )
        for variant in names(self.s.variants):
            for p in ints(self.s.rates):
                key = {"variant": variant, "p": p, "seed": seed}
                self._record(key, "random init", None, ckpt)

    def run(self) -> Dict[str, Any]:
        t0 = time.time()
        for seed in ints(self.s.seeds):
            for variant in names(self.s.variants):
                for p in ints(self.s.rates):
                    print(f"[control] {variant} N_pre, p={p}%, seed {seed}", flush=True)
                    self.run_cell(variant, p, seed)
            self.run_random(seed)
        report = {
            "settings": dataclasses.asdict(self.s),
            "num_proc": self.s.num_proc,
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
    ours = [a for a in argv if a.startswith("control.")]
    rest = [a for a in argv if not a.startswith("control.")]
    bad = [a for a in rest if not a.startswith(("config.", "+config."))]
    if bad:
        raise ValueError(f"{bad}: use control.<key>=<value> or config.<KEY>=<value>")
    return ControlExperiment(ControlSettings.from_args(ours), rest).run()
