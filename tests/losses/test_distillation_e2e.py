"""The distillation baseline end to end through VISSL's trainer (CPU, gloo): a tiny
supervised N_pre on noisy labels, then a student distilled from it on the same noisy
labels (ClusterFit Sec. 3.2 and Sec. 4 "Baselines")."""

import glob
import json
import os

import numpy as np
import pytest

from tests.conftest import data_overrides, run_tool


TINY = [
    "config.DATA.TRAIN.DATA_LIMIT=96",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
    "config.OPTIMIZER.num_epochs=1",
    "config.LOG_FREQUENCY=1000",
]
NOISE = [
    "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.5",
    "config.DATA.TRAIN.VCF_LABEL_NOISE.SEED=3",
]


def final_ckpt(folder):
    found = glob.glob(os.path.join(folder, "model_final_checkpoint_phase*.torch"))
    assert found, f"no final checkpoint in {folder}: {os.listdir(folder)}"
    return found[0]


@pytest.mark.slow
def test_supervised_npre_then_distilled_student(idx_dir, tmp_path):
    npre_dir, student_dir = str(tmp_path / "npre"), str(tmp_path / "student")
    run_tool(
        [
            "config=vissl_clusterfit/pretrain/supervised_fmnist_cpu",
            f"config.CHECKPOINT.DIR={npre_dir}",
            *TINY,
            *NOISE,
            *data_overrides(idx_dir),
        ]
    )
    run_tool(
        [
            "config=vissl_clusterfit/clusterfit/distill_supervised_fmnist_cpu",
            f"config.CHECKPOINT.DIR={student_dir}",
            f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={final_ckpt(npre_dir)}",
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=8",
            *TINY,
            *NOISE,
            *data_overrides(idx_dir),
        ]
    )
    final_ckpt(student_dir)
    teacher = np.load(
        os.path.join(student_dir, "clusterfit", "distill_supervised_teacher_logits.npy")
    )
    assert teacher.shape == (96, 10), teacher.shape
    # the student's label term saw exactly N_pre's flips: 48 of the 96 labels
    records = [
        json.load(open(os.path.join(d, "vcf_label_noise_train.json")))
        for d in (npre_dir, student_dir)
    ]
    assert records[0]["num_flipped"] == 48
    for key in ("positions", "source_indices", "noisy_labels", "noisy_labels_sha256"):
        assert records[0][key] == records[1][key], key
    losses = [
        json.loads(line) for line in open(os.path.join(student_dir, "stdout.json"))
    ]
    assert losses and all(np.isfinite(e["loss"]) for e in losses), losses[:3]
