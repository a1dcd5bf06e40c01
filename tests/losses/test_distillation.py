import math

import numpy as np
import pytest
import torch

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.losses.distillation_criterion import DistillationCriterion


def reference(student, teacher, t):
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / t) for v in t_row]
        p = [v / sum(p) for v in p]
        q = [math.exp(v / t) for v in s_row]
        q = [v / sum(q) for v in q]
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    return total / len(student) * t * t


def test_criterion_matches_hand_computation():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    for temp in (1.0, 2.0, 4.0):
        got = DistillationCriterion(temp)(s, t).item()
        assert got == pytest.approx(reference(s, t, temp), rel=1e-5), (temp, got)
    assert DistillationCriterion(2.0)(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_bad_temperature_and_shapes():
    with pytest.raises(ValueError, match="temperature"):
        DistillationCriterion(0)
    with pytest.raises(ValueError, match="head's last dim"):
        DistillationCriterion(1.0)(torch.zeros(2, 3), torch.zeros(2, 4))


def test_registered_loss_looks_up_teacher_by_sample_index(tmp_path):
    from classy_vision.losses import build_loss

    teacher = np.random.RandomState(0).randn(10, 4).astype(np.float32)
    path = tmp_path / "t_teacher_logits.npy"
    loss = build_loss(
        {
            "name": "vcf_distillation_loss",
            "teacher_logits_file": str(path),
            "temperature": 2.0,
        }
    )
    student = torch.randn(3, 4)
    idx = torch.tensor([7, 0, 3])
    with pytest.raises(FileNotFoundError, match="DISTILL=true"):
        loss([student], [idx])
    np.save(path, teacher)
    got = loss([student], [idx]).item()
    assert got == pytest.approx(
        reference(student, torch.from_numpy(teacher[[7, 0, 3]]), 2.0), rel=1e-5
    )
    with pytest.raises(ValueError, match="sample index 12"):
        loss(student, torch.tensor([12]))
