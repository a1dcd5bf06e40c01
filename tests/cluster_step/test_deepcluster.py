import json
import os

import numpy as np
import pytest
import torch

import vissl_clusterfit  # noqa: F401
from tests.conftest import data_overrides
from vissl_clusterfit.cluster_step import DeepClusterParams, deepcluster as dc
from vissl_clusterfit.cluster_step.training import reset_head
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.hooks.deepcluster_hook import DeepClusterHook


def dc_cfg(tmp_path, idx_dir, *extra):
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            "config.DATA.TRAIN.DATA_LIMIT=90",
            "config.VCF.DEEPCLUSTER.NUM_CLUSTERS=6",
            *data_overrides(idx_dir, train_labels=False),
            *extra,
        ],
        dump_config=False,
    )
    return cfg


class _Task:
    """The parts of VISSL's task the head reset touches."""

    def __init__(self, cfg):
        from vissl.models import build_model

        self.base_model = build_model(cfg.MODEL, cfg.OPTIMIZER)
        self.optimizer = torch.optim.SGD(
            self.base_model.parameters(), lr=0.1, momentum=0.9
        )
        loss = sum(o.sum() for o in self.base_model(torch.randn(2, 3, 28, 28)))
        loss.backward()
        self.optimizer.step()  # creates momentum buffers for every parameter


def test_reset_head_reinitialises_and_clears_its_optimizer_state(tmp_path, idx_dir):
    cfg = dc_cfg(tmp_path, idx_dir)
    task = _Task(cfg)
    head = task.base_model.heads[-1]
    before = [p.detach().clone() for p in head.parameters()]
    trunk_param = next(task.base_model.trunk.parameters())
    reset_head(task, seed=1000)
    assert all(not torch.equal(a, b) for a, b in zip(before, head.parameters()))
    assert all(p not in task.optimizer.state for p in head.parameters())
    assert trunk_param in task.optimizer.state  # the trunk keeps its momentum
    # identical on every rank: the reset is seeded by the round
    task2 = _Task(cfg)
    reset_head(task2, seed=1000)
    for a, b in zip(head.parameters(), task2.base_model.heads[-1].parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("algorithm", ["kmeans", "pic"])
def test_cluster_round_records_metrics(tmp_path, idx_dir, algorithm):
    cfg = dc_cfg(tmp_path, idx_dir, f"config.VCF.DEEPCLUSTER.ALGORITHM={algorithm}")
    params = DeepClusterParams.from_config(cfg)
    truth = np.repeat(np.arange(3), 30)
    rng = np.random.RandomState(0)
    feats = np.concatenate([rng.randn(30, 16) + 8 * i for i in range(3)]).astype(
        np.float32
    )

    def round_(epoch, previous):
        record = dc.cluster_features(params, feats.copy(), epoch)
        record.update(round=epoch, epoch=epoch, extract_s=0.0)
        return dc.log_round(params, record, truth, previous)

    labels = round_(0, None)
    assert labels.shape == (90,) and labels.min() >= 0
    round_(1, labels)
    rounds = [
        json.loads(l) for l in open(os.path.join(tmp_path, "deepcluster_rounds.jsonl"))
    ]
    assert len(rounds) == 2 and "nmi" in rounds[0] and "nmi_previous" in rounds[1]
    assert rounds[0]["algorithm"] == algorithm


def test_bad_algorithm(tmp_path, idx_dir):
    with pytest.raises(ValueError, match="ALGORITHM=spectral"):
        DeepClusterHook(
            dc_cfg(tmp_path, idx_dir, "config.VCF.DEEPCLUSTER.ALGORITHM=spectral")
        )


def test_distributed_backend_round_and_its_limits(tmp_path, idx_dir):
    cfg = dc_cfg(tmp_path, idx_dir, "config.VCF.DEEPCLUSTER.KMEANS_BACKEND=distributed")
    params = DeepClusterParams.from_config(cfg)
    rng = np.random.RandomState(0)
    feats = np.concatenate([rng.randn(30, 16) + 8 * i for i in range(3)]).astype(
        np.float32
    )
    record = dc.cluster_features_sharded(params, feats, epoch=0)
    record.update(round=0, epoch=0, extract_s=0.0)
    labels = dc.log_round(params, record, None, None)
    assert labels.shape == (90,) and len(np.unique(labels)) == 6
    rounds = [
        json.loads(l) for l in open(os.path.join(tmp_path, "deepcluster_rounds.jsonl"))
    ]
    assert rounds[0]["algorithm"] == "distributed kmeans"
    with pytest.raises(ValueError, match="set KMEANS_BACKEND=faiss for ALGORITHM=pic"):
        DeepClusterHook(
            dc_cfg(
                tmp_path,
                idx_dir,
                "config.VCF.DEEPCLUSTER.KMEANS_BACKEND=distributed",
                "config.VCF.DEEPCLUSTER.ALGORITHM=pic",
            )
        )


def deeper_cfg(tmp_path, idx_dir, *extra):
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/deepcluster/deepercluster_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            *data_overrides(idx_dir, train_labels=False),
            *extra,
        ],
        dump_config=False,
    )
    return cfg


def test_deeper_collator_head_and_loss_follow_deeper_keys(tmp_path, idx_dir):
    cfg = deeper_cfg(
        tmp_path,
        idx_dir,
        "config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS=3",
        "config.VCF.DEEPCLUSTER.DEEPER.NUM_SUB=5",
        "config.VCF.DEEPCLUSTER.DEEPER.RANDOM_INIT=true",
    )
    head = dict(cfg.MODEL.HEAD.PARAMS[0][1])
    assert (head["num_super_classes"], head["num_sub_classes"]) == (12, 5)
    loss = cfg.LOSS.vcf_hierarchical_loss
    assert (loss.num_super_classes, loss.num_sub_classes) == (12, 5)
    assert cfg.DATA.TRAIN.COLLATE_FUNCTION_PARAMS.num_sub_classes == 5
    assert DeepClusterParams.from_config(cfg).head_classes == 15
    assert cfg.MODEL.TRUNK.VCF_RESNET.SOBEL  # DeeperCluster Sec. 5: Sobel input


def test_deeper_mismatch_and_missing_init_are_refused(tmp_path, idx_dir):
    with pytest.raises(ValueError, match=r"num_sub_classes=7 \(needs 10\)"):
        DeepClusterParams.from_config(
            deeper_cfg(
                tmp_path,
                idx_dir,
                "config.DATA.TRAIN.COLLATE_FUNCTION_PARAMS.num_sub_classes=7",
                "config.VCF.DEEPCLUSTER.DEEPER.RANDOM_INIT=true",
            )
        )
    with pytest.raises(ValueError, match="starts from a RotNet"):
        DeepClusterParams.from_config(deeper_cfg(tmp_path, idx_dir))
    with pytest.raises(FileNotFoundError, match="PARAMS_FILE=/nope.torch"):
        DeepClusterParams.from_config(
            deeper_cfg(
                tmp_path, idx_dir, "config.MODEL.WEIGHTS_INIT.PARAMS_FILE=/nope.torch"
            )
        )


def test_preactivation_features_are_the_input_of_the_last_relu(tmp_path, idx_dir):
    from vissl.models import build_model

    from vissl_clusterfit.cluster_step import extraction

    cfg = dc_cfg(tmp_path, idx_dir, "config.DATA.TRAIN.DATA_LIMIT=20")
    trunk = build_model(cfg.MODEL, cfg.OPTIMIZER).trunk.eval()
    dataset = extraction.extraction_dataset(cfg, cfg.VCF.DEEPCLUSTER.TRANSFORMS)
    post = extraction.extract_features([(trunk, "res5", "avg")], dataset, 8, "cpu")
    pre = extraction.extract_features(
        [(trunk, "res5", "avg")], dataset, 8, "cpu", preactivation=True
    )
    # by hand: the last block's conv/bn path plus its identity, before the ReLU
    images = torch.stack([dataset[i]["data"][0] for i in range(20)])
    blocks = trunk._feature_blocks
    with torch.no_grad():
        x = images
        for name in list(blocks.keys())[:-3]:  # up to layer3
            x = blocks[name](x)
        for block in list(blocks["layer4"])[:-1]:
            x = block(x)
        last = blocks["layer4"][-1]
        identity = last.downsample(x) if last.downsample is not None else x
        out = last.bn2(last.conv2(last.relu(last.bn1(last.conv1(x))))) + identity
    np.testing.assert_allclose(pre, out.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post, out.clamp(min=0).mean((2, 3)).numpy(), atol=1e-5)
    assert (pre < 0).any() and not np.allclose(pre, post)


def test_pic_at_scale_keeps_targets_inside_the_head(tmp_path, idx_dir):
    """5,000 unstructured points: PIC finds hundreds of clusters; the round bounds them
    to the head's NUM_CLUSTERS outputs, so every target is a valid class."""
    cfg = dc_cfg(
        tmp_path,
        idx_dir,
        "config.VCF.DEEPCLUSTER.ALGORITHM=pic",
        "config.VCF.DEEPCLUSTER.NUM_CLUSTERS=100",
    )
    params = DeepClusterParams.from_config(cfg)
    feats = np.random.RandomState(0).randn(5000, 64).astype(np.float32)
    unbounded = dc.clustering.run_pic(
        dc.clustering.preprocess_features(feats.copy(), pca_dim=64)[0]
    )
    assert unbounded.max() + 1 > 100  # without the bound, targets would leave the head
    record = dc.cluster_features(params, feats, epoch=0)
    assert record["labels"].max() < 100 and record["k"] == 100
    assert len(np.unique(record["labels"])) == 100
