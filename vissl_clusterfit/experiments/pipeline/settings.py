"""Settings of the one-command pipeline (``pipeline.<key>=<value>``) and its presets:
``fmnist`` (the plugin's Fashion-MNIST configs) and ``resnet50_in1k`` (the paper's
ImageNet setting on VISSL's own ResNet-50 configs). See ``vissl_clusterfit.experiments.pipeline.driver``."""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

from vissl_clusterfit.experiments.cli import parse_settings


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
    seed: int = 0  # N_pre's SEED_VALUE and the k-means seed; N_cf: ncf_seed(seed)

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
        return parse_settings(cls, "pipeline", args)


@dataclasses.dataclass(frozen=True)
class PipelineData:
    """Where the pipeline's images come from: the preset's own data, a folder
    (``pipeline.data=folder:<root>``) or a VISSL catalog name."""

    preset: str
    folder: str  # absolute root of pipeline.data=folder:<root>; "" without one
    dataset_name: str

    @classmethod
    def from_settings(cls, s: "PipelineSettings") -> "PipelineData":
        folder = ""
        if s.data:
            folder = os.path.abspath(os.path.expanduser(s.data[len(FOLDER_PREFIX) :]))
            missing = [
                d for d in ("train", "val") if not os.path.isdir(f"{folder}/{d}")
            ]
            if missing:
                raise FileNotFoundError(
                    f"pipeline.data={s.data}: {folder} has no "
                    f"{' and no '.join(missing)} folder; it needs "
                    "train/<class>/<images> and val/<class>/<images>"
                )
        return cls(s.preset, folder, s.dataset_name or "")

    @property
    def label(self) -> str:
        """What the probes and D_cf are, for the report."""
        if self.preset == "fmnist":
            return "Fashion-MNIST"
        if self.folder:
            return f"folder {self.folder}"
        return self.dataset_name or "imagenet1k_folder"

    @property
    def probe_target(self) -> str:
        """The name of the linear probes' data in the report (resnet50_in1k)."""
        if self.folder:
            return os.path.basename(self.folder.rstrip("/")) or "folder"
        return self.dataset_name or "imagenet1k_folder"

    def overrides(self, cluster_labels: bool = False) -> List[str]:
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
        if self.dataset_name:
            return [
                f"config.DATA.{split}.DATASET_NAMES=[{self.dataset_name}]"
                for split in ("TRAIN", "TEST")
            ]
        return []


# ClusterFit trains N_cf "from scratch" (Sec. 3.1): with the same SEED_VALUE as N_pre
# (and the same architecture) N_cf would start from N_pre's initial weights, which
# couples the two networks the comparison keeps apart. Every model trained on labels
# derived from N_pre (N_cf, distillation, prototype, per-label) gets this seed instead.
NCF_SEED_OFFSET = 1000


def ncf_seed(seed: int) -> int:
    """SEED_VALUE of a model trained on labels derived from N_pre (N_pre: ``seed``)."""
    return seed + NCF_SEED_OFFSET
