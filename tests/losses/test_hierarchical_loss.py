"""DeeperCluster's hierarchical loss (ICCV 2019, Sec. 4.2, Eq. 5) against a loop-by-loop
reference, plus the VISSL-registered wrapper and the flat target encoding."""

import math
from typing import List

import pytest
import torch
from classy_vision.losses import build_loss
from vissl.config import AttrDict

import vissl_clusterfit  # noqa: F401  (registers vcf_hierarchical_loss)
from vissl_clusterfit.losses.hierarchical_criterion import (
    HierarchicalCriterion,
    deepercluster_super_class,
    encode_targets,
    join_output,
    split_output,
    split_targets,
)


def _neg_log_softmax(row: List[float], j: int) -> float:
    m = max(row)
    return -(row[j] - m - math.log(sum(math.exp(v - m) for v in row)))


def reference_loss(super_logits, sub_logits, super_t, sub_t) -> float:
    """Eq. 5 written out per sample; each term averaged over its non-ignored samples."""
    sup_terms, sub_terms = [], []
    for i in range(super_logits.shape[0]):
        s, z = int(super_t[i]), int(sub_t[i])
        if s == -1:
            continue
        sup_terms.append(_neg_log_softmax(super_logits[i].tolist(), s))
        if z != -1:
            # sum_s' y_is' l(W_s' f(x_i), z_i^s') keeps only s' = s
            sub_terms.append(_neg_log_softmax(sub_logits[i, s].tolist(), z))
    out = sum(sup_terms) / len(sup_terms)
    return out + (sum(sub_terms) / len(sub_terms) if sub_terms else 0.0)


def _random_batch(b=13, s=8, k=5, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    sup = torch.randn(b, s, generator=g, dtype=torch.float64) * 3
    sub = torch.randn(b, s, k, generator=g, dtype=torch.float64) * 3
    st = torch.randint(0, s, (b,), generator=g)
    zt = torch.randint(0, k, (b,), generator=g)
    if ignore:
        st[1] = -1  # whole sample ignored
        zt[4] = -1  # only its sub-class term ignored
    return sup, sub, st, zt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_criterion_matches_loop_reference(seed):
    sup, sub, st, zt = _random_batch(seed=seed)
    got = HierarchicalCriterion(8, 5)(sup, sub, st, zt).item()
    want = reference_loss(sup, sub, st, zt)
    assert got == pytest.approx(want, rel=1e-10), (got, want)


def test_no_ignore_is_eq5_mean_over_batch():
    sup, sub, st, zt = _random_batch(ignore=False)
    per_sample = [
        _neg_log_softmax(sup[i].tolist(), int(st[i]))
        + _neg_log_softmax(sub[i, int(st[i])].tolist(), int(zt[i]))
        for i in range(len(st))
    ]
    got = HierarchicalCriterion()(sup, sub, st, zt).item()
    assert got == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-10), (
        got,
        per_sample,
    )


def test_list_of_sub_heads_equals_stacked():
    sup, sub, st, zt = _random_batch()
    heads = [sub[:, s] for s in range(sub.shape[1])]
    crit = HierarchicalCriterion()
    assert crit(sup, heads, st, zt).item() == pytest.approx(
        crit(sup, sub, st, zt).item(), rel=1e-12
    )


def test_gradient_only_reaches_own_sub_head():
    sup, sub, st, zt = _random_batch()
    sub.requires_grad_(True)
    sup.requires_grad_(True)
    HierarchicalCriterion()(sup, sub, st, zt).backward()
    for i in range(len(st)):
        for s in range(sub.shape[1]):
            g = sub.grad[i, s].abs().max().item()
            own = s == int(st[i]) and int(zt[i]) != -1
            assert (
                g > 0
            ) == own, f"sample {i} head {s}: |grad|={g}, super_t={int(st[i])}, sub_t={int(zt[i])}"
    assert sup.grad[1].abs().max().item() == 0.0, sup.grad[1]  # fully ignored sample
    assert sup.grad[4].abs().max().item() > 0.0  # sub ignored, super still learns


def test_all_ignored_is_zero_and_still_differentiable():
    sup, sub, _, _ = _random_batch(b=6)
    sup.requires_grad_(True)
    loss = HierarchicalCriterion()(sup, sub, torch.full((6,), -1), torch.full((6,), -1))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert sup.grad.abs().max().item() == 0.0


def test_bad_inputs_raise_value_error():
    sup, sub, st, zt = _random_batch(ignore=False)
    crit = HierarchicalCriterion(8, 5)
    with pytest.raises(ValueError, match="num_super_classes"):
        crit(sup, sub, st.clone().fill_(8), zt)
    with pytest.raises(ValueError, match="num_sub_classes"):
        crit(sup, sub, st, zt.clone().fill_(5))
    with pytest.raises(ValueError, match="num_sub_classes=6"):
        HierarchicalCriterion(8, 6)(sup, sub, st, zt)
    with pytest.raises(ValueError, match=r"\(B, S, k_sub\)"):
        crit(sup, sub[:, :7], st, zt)


def test_encode_split_round_trip_and_deepercluster_layout():
    m, k = 3, 7
    group = torch.tensor([0, 2, 1, 2, 0, -1])
    rot = torch.tensor([3, 0, 2, 1, 0, 0])
    sub = torch.tensor([6, 0, 3, -1, 5, 2])
    sup = torch.where(
        group >= 0, deepercluster_super_class(group.clamp(min=0), rot), torch.tensor(-1)
    )
    flat = encode_targets(sup, sub, k)
    # t = (group * 4 + rotation) * k_sub + sub_cluster, -1 wherever a level is ignored
    assert flat.tolist() == [
        (0 * 4 + 3) * 7 + 6,
        (2 * 4 + 0) * 7 + 0,
        (1 * 4 + 2) * 7 + 3,
        -1,
        5,
        -1,
    ]
    assert flat.max().item() < 4 * m * k
    s2, z2 = split_targets(flat, k)
    keep = flat != -1
    assert torch.equal(s2[keep], sup[keep]) and torch.equal(z2[keep], sub[keep])
    assert s2[~keep].tolist() == [-1, -1] and z2[~keep].tolist() == [-1, -1]
    every = torch.arange(4 * m * k)
    assert torch.equal(encode_targets(*split_targets(every, k), k), every)
    with pytest.raises(ValueError, match="rotation"):
        deepercluster_super_class(torch.tensor([0]), torch.tensor([4]))
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        encode_targets(torch.tensor([0]), torch.tensor([7]), k)


def test_flat_target_indexes_the_flattened_sub_logits():
    sup, sub, st, zt = _random_batch(ignore=False)
    out = join_output(sup, sub)
    s_logits, z_logits = split_output(out, 8, 5)
    assert torch.equal(s_logits, sup) and torch.equal(z_logits, sub)
    flat = encode_targets(st, zt, 5)
    for i in range(len(st)):
        assert out[i, 8 + flat[i]].item() == sub[i, st[i], zt[i]].item()


def _vissl_loss(s: int, k: int):
    """Build the loss the way VISSL's SelfSupervisionTask._build_loss does."""
    config = AttrDict(
        {
            "LOSS": {
                "name": "vcf_hierarchical_loss",
                "vcf_hierarchical_loss": {"num_super_classes": s, "num_sub_classes": k},
            }
        }
    )
    loss_config = config.LOSS[config.LOSS["name"]]
    loss_config["name"] = config.LOSS["name"]
    return build_loss(loss_config)


def test_registered_loss_equals_criterion_on_head_contract():
    sup, sub, st, zt = _random_batch()
    loss = _vissl_loss(8, 5)
    assert type(loss).__name__ == "VcfHierarchicalLoss"
    flat = encode_targets(st, zt, 5)
    # a flat -1 cannot keep the super-class, so sample 4 (sub ignored) is ignored entirely
    st_flat = torch.where(zt == -1, torch.tensor(-1), st)
    want = HierarchicalCriterion()(sup, sub, st_flat, zt).item()
    assert want == pytest.approx(reference_loss(sup, sub, st_flat, zt), rel=1e-10)
    out = join_output(sup, sub)
    for o, t in [(out, flat), ([out], [flat]), ([[out]], flat.view(-1, 1))]:
        got = loss(o, t).item()
        assert got == pytest.approx(want, rel=1e-12), (got, want)


def test_registered_loss_config_and_shape_errors():
    with pytest.raises(
        ValueError, match="config.LOSS.vcf_hierarchical_loss.num_sub_classes"
    ):
        build_loss(AttrDict({"name": "vcf_hierarchical_loss", "num_super_classes": 8}))
    loss = _vissl_loss(8, 5)
    sup, sub, st, zt = _random_batch(ignore=False)
    with pytest.raises(ValueError, match=r"\(B, 48\)"):
        loss(join_output(sup, sub)[:, :-1], encode_targets(st, zt, 5))
    with pytest.raises(ValueError, match="list of 2"):
        loss([join_output(sup, sub)] * 2, encode_targets(st, zt, 5))
