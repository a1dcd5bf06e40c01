"""Which N_pre may teach the distillation baseline.

ClusterFit (Yan et al., CVPR 2020) compares with distillation only for N_pre trained on
semantic labels (Sec. 3.2 and Sec. 4.1: soft targets of N_pre plus the pre-training
labels, Sec. 4 "Baselines"); for self-supervised N_pre (RotNet, Jigsaw) "distillation
is not a valid baseline" (Sec. 4.2, with Sec. 2 and Noroozi et al. 2018). The checks
here are pure (plain dicts, no VISSL), for the cluster step to call before it computes
teacher logits.
"""

from typing import Any, Iterable, List, Mapping


#: VISSL / classy-vision losses that train a classifier on one class label per image.
SUPERVISED_LOSSES = frozenset(
    {
        "cross_entropy_multiple_output_single_target",
        "CrossEntropyLoss",
        "label_smoothing_cross_entropy",
        "soft_target_cross_entropy",
    }
)
#: Label sources of pseudo-labels (pretext / clusters), not semantic classes.
PSEUDO_LABEL_SOURCES = frozenset({"synthetic", "vcf_cluster_labels"})
#: Collators that build pretext inputs or targets.
PRETEXT_COLLATORS = frozenset(
    {
        "siamese_collator",
        "simclr_collator",
        "moco_collator",
        "multicrop_collator",
        "multicrop_mixup_collator",
        "patch_and_image_collator",
        "vcf_rotation_cluster_collator",
    }
)
#: Transforms that replace the label with a pretext target or cut pretext inputs.
PRETEXT_TRANSFORMS = frozenset(
    {
        "ImgRotatePil",
        "ImgPatchesFromTensor",
        "ImgPilToPatchesAndImage",
        "ImgPilToMultiCrop",
        "ImgPilMultiCropRandomApply",
        "ShuffleImgPatches",
        "VcfShuffleImgPatches",
    }
)
_PAPER = (
    "distillation is not a valid baseline for a self-supervised N_pre (ClusterFit, Yan "
    "et al. CVPR 2020, Sec. 4.2; Sec. 4 'Baselines' defines it with N_pre's soft targets "
    "plus the pre-training labels)"
)


def _get(tree: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(tree, Mapping) or key not in tree:
            return default
        tree = tree[key]
    return tree


def _plain(value: Any) -> Any:
    # YAML lists, AttrDict/ListConfig sequences and tuples compare as lists
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value]


def _names(items: Iterable[Any]) -> List[str]:
    return [
        t.get("name", "") if isinstance(t, Mapping) else str(t) for t in items or []
    ]


def teacher_problems(npre_train_config: Mapping[str, Any]) -> List[str]:
    """Why N_pre's training config is not a supervised classification (empty if it is)."""
    cfg = npre_train_config
    if "config" in cfg and "LOSS" not in cfg:  # a hydra tree with the `config:` root
        cfg = cfg["config"]
    problems = []
    loss = _get(cfg, "LOSS", "name", default="")
    if loss not in SUPERVISED_LOSSES:
        problems.append(
            f"its LOSS.name is {loss!r}, not a cross-entropy over class labels "
            f"({sorted(SUPERVISED_LOSSES)})"
        )
    train = _get(cfg, "DATA", "TRAIN", default={}) or {}
    sources = list(_get(train, "LABEL_SOURCES", default=[]) or [])
    if not sources:
        problems.append(
            "its DATA.TRAIN.LABEL_SOURCES is empty (labels were sample indices or "
            "pretext targets)"
        )
    pseudo = [s for s in sources if str(s).split(":")[-1] in PSEUDO_LABEL_SOURCES]
    if pseudo:
        problems.append(f"its DATA.TRAIN.LABEL_SOURCES {pseudo} are pseudo-labels")
    collator = _get(train, "COLLATE_FUNCTION", default="default_collate")
    if collator in PRETEXT_COLLATORS:
        problems.append(f"its collator {collator!r} builds pretext targets")
    pretext = sorted(
        set(_names(_get(train, "TRANSFORMS", default=[]))) & PRETEXT_TRANSFORMS
    )
    if pretext:
        problems.append(f"its DATA.TRAIN.TRANSFORMS {pretext} make pretext targets")
    for method in ("CLUSTERFIT", "DEEPCLUSTER"):
        if _get(cfg, "VCF", method, "ENABLED", default=False):
            problems.append(f"it was trained on cluster ids (VCF.{method}.ENABLED)")
    return problems


def check_distillation_teacher(npre_train_config: Mapping[str, Any]) -> None:
    """Raise ValueError unless N_pre was trained as a supervised classifier: a
    cross-entropy loss over class labels from non-empty, non-pseudo LABEL_SOURCES,
    without pretext collators or transforms, and not as a ClusterFit / DeepCluster run.

    Args:
        npre_train_config: N_pre's training config as a mapping, e.g. the
            ``train_config.yaml`` VISSL writes next to its checkpoints
            (``yaml.safe_load``; a tree under a ``config:`` root is accepted too).
    """
    problems = teacher_problems(npre_train_config)
    if problems:
        raise ValueError(
            f"{_PAPER}: N_pre's training config is not a supervised classification: "
            + "; ".join(problems)
            + ". Train N_pre with labels (e.g. config=vissl_clusterfit/pretrain/"
            "supervised_fmnist_cpu) or run ClusterFit without VCF.CLUSTERFIT.DISTILL"
        )


def label_noise_problems(
    npre_train_config: Mapping[str, Any], student_config: Mapping[str, Any]
) -> List[str]:
    """Differences between the labels N_pre was trained on and the labels the student's
    label term uses (label source, noise settings, subset): the paper's student learns
    from the same (noisy) pre-training labels as its teacher."""
    out = []
    trees = []
    for cfg in (npre_train_config, student_config):
        if "config" in cfg and "DATA" not in cfg:
            cfg = cfg["config"]
        trees.append(_get(cfg, "DATA", "TRAIN", default={}) or {})
    npre, student = trees
    for key in ("DATA_SOURCES", "LABEL_SOURCES", "DATA_LIMIT"):
        a, b = _plain(_get(npre, key)), _plain(_get(student, key))
        if a != b:
            out.append(f"DATA.TRAIN.{key}: N_pre {a!r}, student {b!r}")
    for section, keys in (
        ("DATA_LIMIT_SAMPLING", ("SEED", "SKIP_NUM_SAMPLES", "IS_BALANCED")),
        ("VCF_LABEL_NOISE", ("RATE", "SEED", "NUM_CLASSES")),
    ):
        for key in keys:
            a, b = _get(npre, section, key), _get(student, section, key)
            if a != b:
                out.append(f"DATA.TRAIN.{section}.{key}: N_pre {a!r}, student {b!r}")
    return out


def check_distillation_labels(
    npre_train_config: Mapping[str, Any], student_config: Mapping[str, Any]
) -> None:
    """Raise ValueError when the student's DATA.TRAIN would serve other labels than the
    ones N_pre was trained on (see ``label_noise_problems``)."""
    problems = label_noise_problems(npre_train_config, student_config)
    if problems:
        raise ValueError(
            "the distillation student must learn from N_pre's own (noisy) pre-training "
            "labels (ClusterFit Sec. 4 'Baselines', Sec. 3.2), but: "
            + "; ".join(problems)
        )
