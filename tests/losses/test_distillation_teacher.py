"""Distillation needs a supervised N_pre (ClusterFit Sec. 4.2): the refusal, on the
training configs of our shipped N_pre and on train_config.yaml-like dicts."""

import pytest

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.losses.distillation_teacher import (
    check_distillation_labels,
    check_distillation_teacher,
)


def train_config(name, tmp_path, *overrides):
    """What VISSL writes as train_config.yaml: the config tree as plain dicts."""
    _, cfg = compose_config(
        [
            f"config=vissl_clusterfit/{name}",
            f"config.CHECKPOINT.DIR={tmp_path}",
            *overrides,
        ],
        dump_config=False,
    )
    return dict(cfg)


def test_supervised_npre_is_a_valid_teacher(tmp_path):
    for name in (
        "pretrain/supervised_fmnist_cpu",
        "pretrain/supervised_coarse_fmnist_cpu",
    ):
        cfg = train_config(name, tmp_path, "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.5")
        check_distillation_teacher(cfg)
        check_distillation_teacher({"config": cfg})  # a tree under the hydra root


@pytest.mark.parametrize(
    "name, why",
    [
        ("pretrain/rotnet_fmnist_cpu", "LABEL_SOURCES is empty"),
        ("pretrain/jigsaw_fmnist_cpu", "siamese_collator"),
        ("clusterfit/ncf_fmnist_cpu", "pseudo-labels"),
        ("deepcluster/deepcluster_fmnist_cpu", "DEEPCLUSTER"),
    ],
)
def test_self_supervised_npre_is_refused_citing_the_paper(name, why, tmp_path):
    with pytest.raises(ValueError, match="Sec. 4.2") as e:
        check_distillation_teacher(train_config(name, tmp_path))
    assert why in str(e.value), str(e.value)


def test_refusal_reasons_one_at_a_time():
    supervised = {
        "LOSS": {"name": "cross_entropy_multiple_output_single_target"},
        "DATA": {"TRAIN": {"LABEL_SOURCES": ["disk_filelist"], "TRANSFORMS": []}},
    }
    check_distillation_teacher(supervised)
    cases = [
        (
            {"LOSS": {"name": "simclr_info_nce_loss"}},
            "LOSS.name is 'simclr_info_nce_loss'",
        ),
        ({"DATA": {"TRAIN": {"LABEL_SOURCES": []}}}, "LABEL_SOURCES is empty"),
        ({"DATA": {"TRAIN": {"LABEL_SOURCES": ["synthetic"]}}}, "pseudo-labels"),
        (
            {
                "DATA": {
                    "TRAIN": {
                        "LABEL_SOURCES": ["x"],
                        "TRANSFORMS": [{"name": "ImgRotatePil"}],
                    }
                }
            },
            "ImgRotatePil",
        ),
        (
            {
                "DATA": {
                    "TRAIN": {
                        "LABEL_SOURCES": ["x"],
                        "COLLATE_FUNCTION": "moco_collator",
                    }
                }
            },
            "moco_collator",
        ),
    ]
    for change, why in cases:
        cfg = {**supervised, **change}
        with pytest.raises(ValueError, match="not a supervised classification") as e:
            check_distillation_teacher(cfg)
        assert why in str(e.value), (change, str(e.value))
    with pytest.raises(ValueError, match="LOSS.name is ''"):
        check_distillation_teacher({})


def test_student_must_use_npre_labels(tmp_path):
    p50 = ["config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.5"]
    npre = train_config("pretrain/supervised_fmnist_cpu", tmp_path, *p50)
    student = train_config("clusterfit/distill_supervised_fmnist_cpu", tmp_path, *p50)
    check_distillation_labels(npre, student)
    other = train_config(
        "clusterfit/distill_supervised_fmnist_cpu",
        tmp_path,
        "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.2",
    )
    with pytest.raises(
        ValueError, match="VCF_LABEL_NOISE.RATE: N_pre 0.5, student 0.2"
    ):
        check_distillation_labels(npre, other)
