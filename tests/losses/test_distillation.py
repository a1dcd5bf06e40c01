"""ClusterFit's distillation baseline (Sec. 4 "Baselines"): soft-target cross-entropy
at temperature T plus the label cross-entropy, each term against hand computation."""

import math

import numpy as np
import pytest
import torch

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.losses.distillation_criterion import (
    DistillationCriterion,
    label_cross_entropy,
    soft_target_cross_entropy,
)


def softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def ref_soft(student, teacher, t):
    """T^2 * mean_b -sum_c p_c log q_c."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = softmax(t_row, t), softmax(s_row, t)
        total += -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    return total / len(student) * t * t


def ref_label(student, labels, ignore=-1):
    terms = [
        -math.log(softmax(row, 1.0)[y])
        for row, y in zip(student.tolist(), labels.tolist())
        if y != ignore
    ]
    return sum(terms) / len(terms)


def test_soft_term_by_hand_two_classes():
    # teacher logits (0, ln 3) at T = 1: p = (1/4, 3/4); student (0, 0): q = (1/2, 1/2)
    # H(p, q) = ln 2
    got = soft_target_cross_entropy(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]), 1.0
    )
    assert got.item() == pytest.approx(math.log(2.0), rel=1e-6), got
    # T = 2: p = softmax((0, ln 3) / 2) = (1, sqrt 3) / (1 + sqrt 3), q = (1/2, 1/2)
    # -> T^2 * ln 2 = 4 ln 2
    got = soft_target_cross_entropy(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]), 2.0
    )
    assert got.item() == pytest.approx(4 * math.log(2.0), rel=1e-6), got


def test_soft_term_matches_reference_and_kl_plus_entropy():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    for temp in (1.0, 2.0, 4.0):
        got = soft_target_cross_entropy(s, t, temp).item()
        assert got == pytest.approx(ref_soft(s, t, temp), rel=1e-5), (temp, got)
    # identical logits: the minimum, T^2 times the teacher's entropy (not 0)
    p = torch.softmax(t / 2.0, 1)
    entropy = -(p * p.log()).sum(1).mean().item()
    got = soft_target_cross_entropy(t, t, 2.0).item()
    assert got == pytest.approx(4.0 * entropy, rel=1e-5), (got, entropy)


def test_label_term_by_hand_and_ignore_index():
    # logits (ln 1, ln 3) -> softmax (1/4, 3/4); label 1: -ln(3/4); label 0: -ln(1/4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)], [5.0, 1.0]])
    got = label_cross_entropy(logits, torch.tensor([1, 0, -1])).item()
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert got == pytest.approx(expected, rel=1e-6), (got, expected)
    torch.manual_seed(1)
    s, y = torch.randn(6, 5), torch.tensor([0, 4, 2, -1, 3, 3])
    assert label_cross_entropy(s, y).item() == pytest.approx(ref_label(s, y), rel=1e-5)
    # all ignored: zero, still differentiable
    s.requires_grad_(True)
    zero = label_cross_entropy(s, torch.full((6,), -1))
    zero.backward()
    assert zero.item() == 0.0 and torch.count_nonzero(s.grad) == 0
    with pytest.raises(ValueError, match="outside the student's 5 classes"):
        label_cross_entropy(s, torch.tensor([0, 5, 0, 0, 0, 0]))


def test_weighted_sum_of_the_two_terms():
    torch.manual_seed(2)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([2, 0, 1, 1])
    for alpha in (0.0, 0.3, 1.0):
        got = DistillationCriterion(2.0, alpha)(s, t, y).item()
        expected = (1 - alpha) * ref_soft(s, t, 2.0) + alpha * ref_label(s, y)
        assert got == pytest.approx(expected, rel=1e-5), (alpha, got, expected)
    # no labels needed for soft targets alone
    assert DistillationCriterion(2.0, 0.0)(s, t).item() == pytest.approx(
        ref_soft(s, t, 2.0), rel=1e-5
    )


def test_bad_parameters_and_shapes():
    with pytest.raises(ValueError, match="temperature"):
        DistillationCriterion(0)
    with pytest.raises(ValueError, match="label_weight"):
        DistillationCriterion(2.0, 1.5)
    with pytest.raises(ValueError, match="head's last dim"):
        DistillationCriterion(1.0)(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="needs the pre-training labels"):
        DistillationCriterion(1.0, 0.5)(torch.zeros(2, 3), torch.zeros(2, 3))


def build(path, **params):
    from classy_vision.losses import build_loss

    return build_loss(
        {"name": "vcf_distillation_loss", "teacher_logits_file": str(path), **params}
    )


def test_registered_loss_looks_up_teacher_by_index_and_uses_labels(tmp_path):
    teacher = np.random.RandomState(0).randn(10, 4).astype(np.float32)
    path = tmp_path / "t_teacher_logits.npy"
    loss = build(path, temperature=2.0, label_weight=0.25)
    student = torch.randn(3, 4)
    target = torch.tensor([[7, 1], [0, 3], [3, -1]])  # [index, label], as the collator
    with pytest.raises(FileNotFoundError, match="DISTILL=true"):
        loss([student], [target])
    np.save(path, teacher)
    got = loss([student], [target]).item()
    t = torch.from_numpy(teacher[[7, 0, 3]])
    expected = 0.75 * ref_soft(student, t, 2.0) + 0.25 * ref_label(
        student, target[:, 1]
    )
    assert got == pytest.approx(expected, rel=1e-5), (got, expected)
    with pytest.raises(ValueError, match="sample index 12"):
        loss(student, torch.tensor([[12, 0]]))
    with pytest.raises(ValueError, match="vcf_index_label_collator"):
        loss(student, torch.tensor([7, 0, 3]))


def test_registered_loss_soft_only_takes_plain_indices(tmp_path):
    teacher = np.random.RandomState(1).randn(5, 3).astype(np.float32)
    np.save(tmp_path / "t.npy", teacher)
    loss = build(tmp_path / "t.npy", temperature=3.0, label_weight=0.0)
    student = torch.randn(2, 3)
    got = loss(student, torch.tensor([4, 1])).item()
    assert got == pytest.approx(
        ref_soft(student, torch.from_numpy(teacher[[4, 1]]), 3.0), rel=1e-5
    )


def test_index_label_collator_packs_index_and_label():
    from vissl.data.collators import get_collator

    collate = get_collator("vcf_index_label_collator", {})
    batch = [
        {
            "data": [torch.full((3, 2, 2), float(i))],
            "label": [np.int64(10 + i)],
            "data_valid": [1],
            "data_idx": [i * 3],
        }
        for i in range(4)
    ]
    out = collate(batch)
    assert out["label"][0].tolist() == [[0, 10], [3, 11], [6, 12], [9, 13]]
    assert out["data"][0].shape == (4, 3, 2, 2) and out["data"][0][2].max() == 2.0
    batch[0]["label"] = [1, 2]
    with pytest.raises(ValueError, match="one label source"):
        collate(batch)
