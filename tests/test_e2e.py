"""End to end through VISSL's real trainer (CPU, gloo), run as a user would: our
tools/ scripts in subprocesses, on a small real-image IDX dataset (see conftest)."""

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


def final_ckpt(folder):
    found = glob.glob(os.path.join(folder, "model_final_checkpoint_phase*.torch"))
    assert found, f"no final checkpoint in {folder}: {os.listdir(folder)}"
    return found[0]


def linear_eval(idx_dir, ckpt, out):
    run_tool(
        [
            "config=vissl_clusterfit/benchmark/linear_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={ckpt}",
            "config.DATA.TRAIN.DATA_LIMIT=96",
            "config.DATA.TEST.DATA_LIMIT=64",
            "config.OPTIMIZER.num_epochs=1",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=32",
            *data_overrides(idx_dir),
        ]
    )
    tests = [
        json.loads(l)
        for l in open(os.path.join(out, "metrics.json"))
        if "test_accuracy" in l
    ]
    top1 = tests[-1]["test_accuracy_list_meter"]["top_1"]
    assert sorted(top1) == ["conv1", "res2", "res3", "res4", "res5"], top1
    assert all(0.0 <= v <= 100.0 for v in top1.values()), top1
    return top1


@pytest.fixture(scope="module")
def rotnet_ckpt(idx_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rotnet"))
    run_tool(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            *TINY,
            *data_overrides(idx_dir),
        ]
    )
    return final_ckpt(out)


def test_rotnet_pretraining_then_linear_eval(idx_dir, rotnet_ckpt, tmp_path):
    linear_eval(idx_dir, rotnet_ckpt, str(tmp_path / "linear"))


def test_jigsaw_pretraining_then_linear_eval(idx_dir, tmp_path):
    out = str(tmp_path / "jigsaw")
    run_tool(
        [
            "config=vissl_clusterfit/pretrain/jigsaw_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            *TINY,
            *data_overrides(idx_dir),
        ]
    )
    linear_eval(idx_dir, final_ckpt(out), str(tmp_path / "linear"))


def test_rotnet_two_processes_gloo(idx_dir, tmp_path):
    out = str(tmp_path / "rotnet2")
    run_tool(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            "config.DISTRIBUTED.NUM_PROC_PER_NODE=2",
            *TINY,
            *data_overrides(idx_dir),
        ]
    )
    final_ckpt(out)
    log = open(os.path.join(out, "log.txt")).read()
    assert "world_size: 2, rank: 0" in log, log[-2000:]


def ncf_args(idx_dir, npre, out, *extra):
    return [
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu",
        f"config.CHECKPOINT.DIR={out}",
        f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=8",
        "config.VCF.CLUSTERFIT.BATCHSIZE=20",
        *TINY,
        *data_overrides(idx_dir, train_labels=False),
        *extra,
    ]


def labels_of(out):
    return np.load(os.path.join(out, "clusterfit", "clusterfit_rotnet_labels.npy"))


def test_ncf_hook_one_vs_two_processes_and_resume(idx_dir, rotnet_ckpt, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_tool(ncf_args(idx_dir, rotnet_ckpt, one, "config.OPTIMIZER.num_epochs=2"))
    run_tool(
        ncf_args(idx_dir, rotnet_ckpt, two, "config.DISTRIBUTED.NUM_PROC_PER_NODE=2")
    )
    a, b = labels_of(one), labels_of(two)
    assert a.shape == (96,) and a.max() < 8
    np.testing.assert_array_equal(a, b)  # identical labels with 1 and 2 processes
    log = open(os.path.join(one, "log.txt")).read()
    assert "[vcf] clustered" in log and "[vcf] wrote cluster label files" in log
    # resume: drop the final checkpoint, VISSL resumes from phase 0, labels are reused
    before = os.path.getmtime(
        os.path.join(one, "clusterfit", "clusterfit_rotnet_labels.npy")
    )
    os.remove(final_ckpt(one))
    for link in glob.glob(os.path.join(one, "checkpoint.torch")):
        os.remove(link)
    proc = run_tool(
        ncf_args(idx_dir, rotnet_ckpt, one, "config.OPTIMIZER.num_epochs=2")
    )
    final_ckpt(one)
    log = open(os.path.join(one, "log.txt")).read()
    assert "[vcf] reusing cluster labels" in log, (proc.stdout + proc.stderr)[-2000:]
    assert (
        os.path.getmtime(
            os.path.join(one, "clusterfit", "clusterfit_rotnet_labels.npy")
        )
        == before
    )
    # the standalone engine gives the same labels
    three = str(tmp_path / "three")
    run_tool(["engine_name=vcf_cluster", *ncf_args(idx_dir, rotnet_ckpt, three)])
    np.testing.assert_array_equal(labels_of(three), a)


def test_pipeline_end_to_end(idx_dir, tmp_path):
    out = str(tmp_path / "pipe")
    proc = run_tool(
        [
            f"pipeline.output_dir={out}",
            "pipeline.data_limit=96",
            "pipeline.epochs=1",
            "pipeline.num_clusters=6",
            "pipeline.eval_train_limit=96",
            "pipeline.eval_test_limit=64",
            "pipeline.eval_epochs=1",
            "pipeline.with_random=true",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
            *data_overrides(idx_dir, train_labels=False),
        ],
        tool="clusterfit_pipeline.py",
    )
    assert (
        "| N_cf rotnet K=6 |" in proc.stdout and "| N_pre rotnet |" in proc.stdout
    ), proc.stdout
    report = json.load(open(os.path.join(out, "report.json")))
    assert set(report["linear_top1"]["fmnist"]) == {
        "N_pre rotnet",
        "N_cf rotnet K=6",
        "random init",
    }
    for plot in report["plots"]:
        assert os.path.getsize(os.path.join(out, plot)) > 1000, plot
    assert {
        "accuracy_per_layer_fmnist.png",
        "cluster_sizes_rotnet.png",
        "cluster_samples_rotnet.png",
    } <= set(report["plots"])
    assert "## Clusters" in open(os.path.join(out, "report.md")).read()
    # a second run reuses every stage
    again = run_tool(
        [
            f"pipeline.output_dir={out}",
            "pipeline.data_limit=96",
            "pipeline.epochs=1",
            "pipeline.num_clusters=6",
            "pipeline.eval_train_limit=96",
            "pipeline.eval_test_limit=64",
            "pipeline.eval_epochs=1",
            "pipeline.with_random=true",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
            *data_overrides(idx_dir, train_labels=False),
        ],
        tool="clusterfit_pipeline.py",
    )
    assert (
        "running" not in again.stdout and again.stdout.count("reusing") >= 4
    ), again.stdout


def test_deepcluster_trains_reclusters_and_resumes_with_same_targets(idx_dir, tmp_path):
    out = str(tmp_path / "dc")
    args = [
        "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
        f"config.CHECKPOINT.DIR={out}",
        "config.VCF.DEEPCLUSTER.NUM_CLUSTERS=8",
        "config.VCF.DEEPCLUSTER.RECLUSTER_EVERY=2",
        *TINY,
        "config.OPTIMIZER.num_epochs=3",
        *data_overrides(idx_dir, train_labels=False),
    ]
    run_tool(args)
    rounds = [
        json.loads(l) for l in open(os.path.join(out, "deepcluster_rounds.jsonl"))
    ]
    assert [r["epoch"] for r in rounds] == [0, 2], rounds  # every T=2 epochs
    assert "nmi_previous" in rounds[1] and rounds[0]["num_empty"] == 0
    log = open(os.path.join(out, "log.txt")).read()
    assert log.count("head re-initialised") == 2
    # kill after epoch 1: resume from model_phase1 must reuse round 0's targets at epoch 1
    os.remove(final_ckpt(out))
    for f in ["checkpoint.torch", "model_phase1.torch"]:
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))
    run_tool(args)
    rounds = [
        json.loads(l) for l in open(os.path.join(out, "deepcluster_rounds.jsonl"))
    ]
    log = open(os.path.join(out, "log.txt")).read()
    assert "resuming with the targets of epoch 0" in log, log[-3000:]
    assert [r["epoch"] for r in rounds] == [0, 2, 2], rounds
    # the DeepCluster network (Sobel stem, read from its train_config.yaml) serves as N_pre
    labels_dir = str(tmp_path / "dc_as_npre")
    run_tool(
        ["engine_name=vcf_cluster", *ncf_args(idx_dir, final_ckpt(out), labels_dir)]
    )
    assert labels_of(labels_dir).shape == (96,)


def test_deepercluster_from_rotnet_init(idx_dir, tmp_path):
    # DeeperCluster's input is Sobel (Sec. 5), so its RotNet init is a Sobel RotNet
    rotnet = str(tmp_path / "rotnet_sobel")
    run_tool(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={rotnet}",
            "config.MODEL.TRUNK.VCF_RESNET.SOBEL=true",
            *TINY,
            *data_overrides(idx_dir),
        ]
    )
    rotnet_ckpt = final_ckpt(rotnet)
    out = str(tmp_path / "deeper")
    # collator, head and loss follow DEEPER.NUM_GROUPS / NUM_SUB
    run_tool(
        [
            "config=vissl_clusterfit/deepcluster/deepercluster_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={rotnet_ckpt}",
            "config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS=2",
            "config.VCF.DEEPCLUSTER.DEEPER.NUM_SUB=3",
            *TINY,
            *data_overrides(idx_dir, train_labels=False),
        ]
    )
    final_ckpt(out)
    rounds = [
        json.loads(l) for l in open(os.path.join(out, "deepcluster_rounds.jsonl"))
    ]
    assert (
        rounds[0]["algorithm"] == "two-level kmeans" and rounds[0]["num_clusters"] == 6
    )
    log = open(os.path.join(out, "log.txt")).read()
    assert f"Initializing model from: {rotnet_ckpt}" in log
    losses = [json.loads(l)["loss"] for l in open(os.path.join(out, "stdout.json"))]
    assert losses and all(np.isfinite(losses))


def test_ncf_distributed_kmeans_one_vs_two_processes(idx_dir, rotnet_ckpt, tmp_path):
    """DeeperCluster Sec. 4.2 k-means in VISSL's trainer: features stay on their rank,
    labels equal those of one process."""
    runs = {}
    for procs in (1, 2):
        out = str(tmp_path / f"p{procs}")
        run_tool(
            ncf_args(
                idx_dir,
                rotnet_ckpt,
                out,
                "config.VCF.CLUSTERFIT.KMEANS_BACKEND=distributed",
                "config.VCF.CLUSTERFIT.PCA_DIM=16",
                f"config.DISTRIBUTED.NUM_PROC_PER_NODE={procs}",
            )
        )
        runs[procs] = labels_of(out)
        log = open(os.path.join(out, "log.txt")).read()
        assert "distributed k-means" in log, log[-2000:]
    assert runs[1].shape == (96,) and len(np.unique(runs[1])) == 8
    np.testing.assert_array_equal(runs[1], runs[2])


def test_deepercluster_distributed_kmeans_one_vs_two_processes(idx_dir, tmp_path):
    """DeeperCluster Sec. 4.2 in VISSL's trainer: the two-level k-means runs on the
    ranks' shards (level 1 over all ranks, level 2 per group) and gives the labels of
    one process."""
    import torch

    labels = {}
    for procs in (1, 2):
        out = str(tmp_path / f"p{procs}")
        run_tool(
            [
                "config=vissl_clusterfit/deepcluster/deepercluster_fmnist_cpu",
                f"config.CHECKPOINT.DIR={out}",
                "config.VCF.DEEPCLUSTER.DEEPER.RANDOM_INIT=true",
                "config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS=2",
                "config.VCF.DEEPCLUSTER.DEEPER.NUM_SUB=3",
                "config.VCF.DEEPCLUSTER.KMEANS_BACKEND=distributed",
                "config.VCF.DEEPCLUSTER.PCA_DIM=16",
                "config.VCF.DEEPCLUSTER.BATCHSIZE=32",
                f"config.DISTRIBUTED.NUM_PROC_PER_NODE={procs}",
                *TINY,
                *data_overrides(idx_dir, train_labels=False),
            ]
        )
        rounds = [
            json.loads(l) for l in open(os.path.join(out, "deepcluster_rounds.jsonl"))
        ]
        assert rounds[0]["algorithm"] == "distributed two-level kmeans", rounds
        state = torch.load(final_ckpt(out), map_location="cpu", weights_only=False)
        hooks = state["classy_state_dict"]["hooks"]
        labels[procs] = np.asarray(hooks["DeepClusterHook"]["labels"])
    assert labels[1].shape == (96,) and labels[1].max() < 6
    np.testing.assert_array_equal(labels[1], labels[2])
