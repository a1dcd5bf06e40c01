"""Settings of the control experiment (``control.<key>=<value>``), its presets and
N_pre variants, and the overrides that give every model N_pre's recipe (see
``control_experiment``)."""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from vissl_clusterfit.data.fashion_mnist import DEFAULT_PATH
from vissl_clusterfit.experiments.cli import parse_settings
from vissl_clusterfit.experiments.control.probe import fmnist_splits


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
        return parse_settings(cls, "control", args)

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
