"""vcf_hierarchical_head: DeeperCluster's V and W_1..W_S classifiers (ICCV 2019, Sec. 4.2)
as one concatenated output that vcf_hierarchical_loss splits back."""

import pytest
import torch
from classy_vision.losses import build_loss
from vissl.config import AttrDict
from vissl.models.heads import get_model_head

import vissl_clusterfit  # noqa: F401  (registers the head and the loss)
from vissl_clusterfit.losses.hierarchical_criterion import (
    HierarchicalCriterion,
    encode_targets,
    split_targets,
)
from vissl_clusterfit.models.heads.vcf_hierarchical_head import VcfHierarchicalHead


S, K, D = 8, 5, 16
MODEL_CFG = AttrDict({"HEAD": {"PARAMS_MULTIPLIER": 1.0}})


def _head(**kw) -> VcfHierarchicalHead:
    params = {"in_dim": D, "num_super_classes": S, "num_sub_classes": K, **kw}
    return get_model_head("vcf_hierarchical_head")(MODEL_CFG, **params)


def test_built_from_registry_with_output_shape():
    head = _head()
    assert isinstance(head, VcfHierarchicalHead)
    out = head(torch.randn(3, D))
    assert out.shape == (3, S + S * K) == (3, head.output_dim), out.shape
    # VISSL trunks may hand over N x C x 1 x 1 features or a one-element list
    x = torch.randn(3, D)
    torch.testing.assert_close(head(x.view(3, D, 1, 1)), head(x))
    torch.testing.assert_close(head([x]), head(x))
    with pytest.raises(ValueError, match="pool the trunk output"):
        head(torch.randn(3, D, 2, 2))


def test_split_contract_super_then_per_super_class_blocks():
    head = _head()
    x = torch.randn(4, D)
    sup, sub = head.split(head(x))
    assert sup.shape == (4, S) and sub.shape == (4, S, K)
    torch.testing.assert_close(sup, x @ head.super_head.weight.T + head.super_head.bias)
    for s in range(S):
        w_s = head.sub_heads.weight[s * K : (s + 1) * K]  # W_s is row block s
        b_s = head.sub_heads.bias[s * K : (s + 1) * K]
        torch.testing.assert_close(sub[:, s], x @ w_s.T + b_s, msg=f"sub-head {s}")
    torch.testing.assert_close(head.join(sup, sub), head(x))


def test_reset_parameters_redraws_weights_reproducibly():
    head = _head()
    before = [p.detach().clone() for p in head.parameters()]
    head.reset_parameters()
    assert all(not torch.equal(b, p) for b, p in zip(before, head.parameters()))
    bound = 1 / D**0.5
    assert all(p.abs().max().item() <= bound for p in head.parameters())
    # a shared seeded generator gives identical heads (same replicas on every DDP rank)
    other = _head()
    head.reset_parameters(torch.Generator().manual_seed(7))
    other.reset_parameters(torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(head.parameters(), other.parameters()))


def test_params_multiplier_and_bad_params():
    head = get_model_head("vcf_hierarchical_head")(
        AttrDict({"HEAD": {"PARAMS_MULTIPLIER": 0.01}}),
        in_dim=D,
        num_super_classes=S,
        num_sub_classes=K,
    )
    assert head.sub_heads.weight.abs().max().item() <= 0.01 / D**0.5
    with pytest.raises(ValueError, match="num_sub_classes=0"):
        _head(num_sub_classes=0)


def test_head_and_loss_through_vissl_config_model_and_backward(tmp_path):
    """Compose a shipped config with the head/loss set on the command line, build the real
    model, and train one step's worth of gradient through the registered loss."""
    from vissl.models import build_model

    from vissl_clusterfit.config import compose_config

    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/clusterfit/ncf_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            "config.MODEL.HEAD.PARAMS=[[vcf_hierarchical_head,"
            f"{{in_dim:128,num_super_classes:{S},num_sub_classes:{K}}}]]",
            "config.LOSS.name=vcf_hierarchical_loss",
            f"+config.LOSS.vcf_hierarchical_loss={{num_super_classes:{S},num_sub_classes:{K}}}",
        ],
        dump_config=False,
    )
    model = build_model(cfg.MODEL, cfg.OPTIMIZER)
    loss_config = cfg.LOSS[cfg.LOSS["name"]]
    loss_config["name"] = cfg.LOSS["name"]
    loss = build_loss(loss_config)
    output = model(torch.randn(4, 3, 28, 28))
    assert len(output) == 1 and output[0].shape == (4, S + S * K)
    target = encode_targets(torch.tensor([0, 3, 7, -1]), torch.tensor([4, 0, 2, 1]), K)
    value = loss(output, target)
    head = model.heads[0]
    sup, sub = head.split(output[0])
    st, zt = split_targets(target, K)
    torch.testing.assert_close(value, HierarchicalCriterion()(sup, sub, st, zt))
    value.backward()
    # W_1 and W_2 own no sample of this batch: their rows get no gradient
    g = head.sub_heads.weight.grad.view(S, K, 128).abs().amax(dim=(1, 2))
    assert [bool(v > 0) for v in g] == [s in (0, 3, 7) for s in range(S)], g
