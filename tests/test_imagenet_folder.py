"""The user's path on an ImageNet-style folder (docs/imagenet.md), end to end on CPU.

A tiny folder is made here (scikit-learn digits as 64 px RGB PNGs, 3 classes,
train/<class>/*.png and val/<class>/*.png). Every bash block of docs/imagenet.md marked
``<!-- tested: NAME -->`` runs verbatim, with only its ``P=``, ``DATA=`` and ``RUNS=``
lines replaced: ``P`` becomes a wrapper that appends tiny-size overrides to each command
(the CPU switch, 12 train / 8 val images, batch 4, one epoch, K=5). No learning-rate
override: VISSL's step schedules (30/60/90/100 of 105 epochs) are scaled to the one
epoch when the config is composed (vissl_clusterfit/optim/schedule_length.py). So the documented commands
(VISSL's RotNet and supervised ResNet-50 configs, our N_cf / DeepCluster / DeeperCluster
configs, VISSL's linear and k-NN benchmark configs, the pipeline) are the tested ones.
"""

import json
import os
import re
import stat
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT


DOC = os.path.join(ROOT, "docs", "imagenet.md")
CLASSES = (0, 1, 2)
PER_CLASS = {"train": 8, "val": 4}
K = 5

# appended by the P wrapper; {extra} per tool / config below
TINY_ENGINE = [
    "config.DATA.TRAIN.DATA_LIMIT=12",
    "config.DATA.TEST.DATA_LIMIT=8",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=4",
    "config.DATA.TEST.BATCHSIZE_PER_REPLICA=4",
    "config.OPTIMIZER.num_epochs=1",
]
TINY_BY_CONFIG = {
    "clusterfit/ncf_": [f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={K}"],
    "+vissl_clusterfit_defaults=ncf": [f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={K}"],
    "deepcluster/deepcluster_": [f"config.VCF.DEEPCLUSTER.NUM_CLUSTERS={K}"],
    "deepcluster/deepercluster_": [
        "config.VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS=2",
        "config.VCF.DEEPCLUSTER.DEEPER.NUM_SUB=2",
    ],
    "nearest_neighbor": ["config.NEAREST_NEIGHBOR.TOPK=5"],
}
TINY_PIPELINE = [
    "pipeline.scale=cpu",
    "pipeline.data_limit=12",
    "pipeline.epochs=1",
    f"pipeline.num_clusters={K}",
    "pipeline.eval_train_limit=12",
    "pipeline.eval_test_limit=8",
    "pipeline.eval_epochs=1",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=4",
    "config.DATA.TEST.BATCHSIZE_PER_REPLICA=4",
]

WRAPPER = """
import os, sys
TINY_ENGINE, TINY_BY_CONFIG, TINY_PIPELINE = {tiny!r}
tool, args = sys.argv[1], sys.argv[2:]
if tool.endswith("clusterfit_pipeline.py"):
    args = args + TINY_PIPELINE
else:
    group = [a for a in args if a.startswith("+vissl_clusterfit_defaults=")]
    extra = [x for key, xs in TINY_BY_CONFIG.items() if any(key in a for a in args) for x in xs]
    if group:
        args = [a for a in args if a not in group]
        args.append("+vissl_clusterfit_defaults=[" + group[0].split("=", 1)[1] + ",cpu]")
    else:
        args.append("+vissl_clusterfit_defaults=cpu")
    args = args + TINY_ENGINE + extra
with open(os.environ["VCF_TEST_COMMANDS"], "a") as f:
    f.write(" ".join([tool, *args]) + "\\n")
os.execv(sys.executable, [sys.executable, tool, *args])
"""


def make_image_folder(root: str) -> str:
    """train/class_c/*.png (8 per class) and val/class_c/*.png (4 per class): scikit-learn
    digits upscaled to 64 px RGB."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in CLASSES:
        ids = np.flatnonzero(digits.target == c)
        for i, j in enumerate(ids[: PER_CLASS["train"] + PER_CLASS["val"]]):
            split = "train" if i < PER_CLASS["train"] else "val"
            folder = os.path.join(root, split, f"class_{c}")
            os.makedirs(folder, exist_ok=True)
            image = Image.fromarray(np.uint8(digits.images[j] * 255 / 16))
            image.resize((64, 64), Image.BILINEAR).convert("RGB").save(
                os.path.join(folder, f"{j}.png")
            )
    return root


def deepcluster_folder_config(tmp_path: str, *overrides: str) -> Any:
    """The ImageNet DeepCluster config on a ``make_image_folder`` train split (composed,
    not run)."""
    from vissl_clusterfit.config import compose_config

    root = make_image_folder(os.path.join(str(tmp_path), "images"))
    return compose_config(
        [
            "config=vissl_clusterfit/deepcluster/deepcluster_resnet50_in1k_gpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            f"config.DATA.TRAIN.DATA_PATHS=[{root}/train]",
            f"config.DATA.TRAIN.LABEL_PATHS=[{root}/train]",
            *overrides,
        ],
        dump_config=False,
    )[1]


def doc_block(name: str) -> str:
    """The bash block after ``<!-- tested: name`` in docs/imagenet.md."""
    text = open(DOC).read()
    match = re.search(
        rf"<!-- tested: {re.escape(name)}\b.*?-->\s*```bash\n(.*?)```", text, re.S
    )
    assert match, f"docs/imagenet.md has no block tested: {name}"
    return match.group(1)


def run_block(name: str, tmp: str, data: str, runs: str) -> List[str]:
    """Run a docs block with P/DATA/RUNS replaced; returns the commands P ran."""
    wrapper = os.path.join(tmp, "tiny_python")
    with open(wrapper + ".py", "w") as f:
        f.write(WRAPPER.format(tiny=(TINY_ENGINE, TINY_BY_CONFIG, TINY_PIPELINE)))
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {sys.executable} {wrapper}.py "$@"\n')
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IEXEC)
    script = doc_block(name)
    values = {"P": wrapper, "DATA": data, "RUNS": runs}
    for var, value in values.items():
        script, n = re.subn(rf"^{var}=.*$", f"{var}={value}", script, flags=re.M)
        assert n <= 1, (var, script)
    log = os.path.join(tmp, f"commands_{name}.txt")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        VCF_TEST_COMMANDS=log,
    )
    env.pop("VISSL_DATASET_CATALOG_PATH", None)
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"docs block {name} failed ({proc.returncode}):\n"
            + "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        )
    return open(log).read().splitlines()


def test_docs_blocks_exist():
    """The blocks exist (a renamed or removed block fails here, fast)."""
    for name in ("folder-stages", "folder-pipeline", "folder-vissl-config"):
        assert "$P tools/" in doc_block(name)
    assert "deepercluster" in doc_block("folder-deepcluster")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Dict[str, str]:
    tmp = str(tmp_path_factory.mktemp("in1k"))
    return {
        "tmp": tmp,
        "data": make_image_folder(os.path.join(tmp, "my_images")),
        "runs": os.path.join(tmp, "runs"),
    }


@pytest.fixture(scope="module")
def stages(folder) -> List[str]:
    return run_block("folder-stages", folder["tmp"], folder["data"], folder["runs"])


def _trunk(path: str) -> Dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["classy_state_dict"]["base_model"]["model"]["trunk"]


def _final_test_top1(metrics: str) -> Dict[str, float]:
    lines = [json.loads(line) for line in open(metrics) if "test_accuracy" in line]
    assert lines, f"no test pass in {metrics}"
    return lines[-1]["test_accuracy_list_meter"]["top_1"]


@pytest.mark.slow
def test_folder_stages(folder, stages):
    runs = folder["runs"]
    # the documented configs ran, VISSL's own ones included
    ran = "\n".join(stages)
    for config in (
        "config=pretrain/rotnet/rotnet_8gpu_resnet",
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        "eval_resnet_8gpu_transfer_in1k_linear",
        "config=benchmark/nearest_neighbor/eval_resnet_8gpu_in1k_kNN",
    ):
        assert config in ran, ran
    assert len(stages) == 6, stages
    # N_cf: 12 train labels in [0, K), the 8 val images assigned, ImageNet extraction
    out = os.path.join(runs, "ncf_rotnet", "clusterfit")
    labels = np.load(os.path.join(out, "clusterfit_rotnet_labels.npy"))
    test_labels = np.load(os.path.join(out, "clusterfit_rotnet_test_labels.npy"))
    assert labels.shape == (12,) and test_labels.shape == (8,), (labels, test_labels)
    assert 0 <= labels.min() and labels.max() < K and test_labels.max() < K
    meta = json.load(open(os.path.join(out, "clusterfit_rotnet_meta.json")))
    assert meta["num_clusters"] == K and meta["feature_dim"] == 2048, meta
    transforms = meta["settings"]["transforms"]
    assert transforms[0] == {"name": "Resize", "size": 256}, transforms
    assert transforms[-1]["mean"] == [0.485, 0.456, 0.406], transforms
    assert meta["settings"]["dataset"]["sources"] == ["disk_folder"], meta
    # N_cf is a fresh network, not N_pre continued
    npre = _trunk(os.path.join(runs, "npre_rotnet", "checkpoint.torch"))
    ncf = _trunk(os.path.join(runs, "ncf_rotnet", "checkpoint.torch"))
    key = "_feature_blocks.conv1.weight"
    assert ncf[key].shape == (64, 3, 7, 7) and not torch.equal(npre[key], ncf[key])
    # VISSL's linear probes on both checkpoints: every layer, a percentage
    for model in ("npre_rotnet", "ncf_rotnet"):
        top1 = _final_test_top1(os.path.join(runs, f"linear_{model}", "metrics.json"))
        assert sorted(top1) == ["conv1", "res2", "res3", "res4", "res5"], top1
        assert all(0.0 <= v <= 100.0 for v in top1.values()), top1
        knn = json.load(open(os.path.join(runs, f"knn_{model}", "knn.json")))
        assert set(knn["layers"]) == {"res5"} and knn["top_k"] == 5, knn
        assert 0.0 <= knn["layers"]["res5"]["top_1"] <= 100.0, knn


@pytest.mark.slow
def test_ncf_on_vissl_supervised_config(folder, stages):
    """VISSL's own supervised config + one option = N_cf (no +config.VCF.* keys)."""
    ran = run_block(
        "folder-vissl-config", folder["tmp"], folder["data"], folder["runs"]
    )
    assert "config=pretrain/supervised/supervised_8gpu_resnet" in ran[0], ran
    out = os.path.join(folder["runs"], "ncf_supervised_config")
    labels = np.load(os.path.join(out, "clusterfit", "clusterfit_labels.npy"))
    assert labels.shape == (12,) and labels.max() < K, labels
    assert os.path.isfile(os.path.join(out, "checkpoint.torch")), os.listdir(out)
    config = yaml.safe_load(open(os.path.join(out, "train_config.yaml")))
    assert config["DATA"]["TRAIN"]["LABEL_SOURCES"] == ["vcf_cluster_labels"], config
    assert config["MODEL"]["HEAD"]["PARAMS"] == [["mlp", {"dims": [2048, K]}]], config


@pytest.mark.slow
def test_deepcluster_and_deepercluster_on_folder(folder, stages):
    ran = run_block("folder-deepcluster", folder["tmp"], folder["data"], folder["runs"])
    assert len(ran) == 5, ran
    runs = folder["runs"]
    rounds = [
        json.loads(line)
        for line in open(os.path.join(runs, "deepcluster", "deepcluster_rounds.jsonl"))
    ]
    assert len(rounds) == 1 and rounds[0]["algorithm"] == "kmeans", rounds
    deeper = os.path.join(runs, "deepercluster", "deepcluster_rounds.jsonl")
    assert json.loads(open(deeper).readline())["algorithm"] == "two-level kmeans"
    # the Sobel trunk: 2-channel conv1 in every checkpoint of the block
    for model in ("deepcluster", "npre_rotnet_sobel", "deepercluster"):
        trunk = _trunk(os.path.join(runs, model, "checkpoint.torch"))
        assert trunk["_feature_blocks.conv1.weight"].shape[1] == 2, model
    for model in ("deepcluster", "deepercluster"):
        top1 = _final_test_top1(os.path.join(runs, f"linear_{model}", "metrics.json"))
        assert sorted(top1) == ["conv1", "res2", "res3", "res4", "res5"], top1


@pytest.mark.slow
def test_folder_pipeline(folder):
    runs = os.path.join(folder["tmp"], "pipeline_runs")
    ran = run_block("folder-pipeline", folder["tmp"], folder["data"], runs)
    assert len(ran) == 1 and "pipeline.preset=resnet50_in1k" in ran[0], ran
    out = os.path.join(runs, "pipeline")
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["data"] == f"folder {folder['data']}", report["data"]
    results = report["linear_top1"]["my_images"]
    assert set(results) == {"N_pre rotnet", f"N_cf rotnet K={K}"}, results
    for top1 in results.values():
        assert sorted(top1) == ["conv1", "res2", "res3", "res4", "res5"], top1
    # each stage ran VISSL's / our ResNet-50 config on the folder's own paths
    logs = {
        stage: open(os.path.join(out, stage, "stdout.log")).readline()
        for stage in ("npre_rotnet", f"ncf_rotnet_k{K}", "linear_N_cf_rotnet_K5")
    }
    assert "config=pretrain/rotnet/rotnet_8gpu_resnet" in logs["npre_rotnet"]
    assert "ncf_rotnet_resnet50_in1k_gpu" in logs[f"ncf_rotnet_k{K}"]
    assert "eval_resnet_8gpu_transfer_in1k_linear" in logs["linear_N_cf_rotnet_K5"]
    for line in logs.values():
        assert f"config.DATA.TEST.DATA_PATHS=[{folder['data']}/val]" in line, line
    meta = json.load(
        open(
            os.path.join(
                out, f"ncf_rotnet_k{K}", "clusterfit", "clusterfit_rotnet_meta.json"
            )
        )
    )
    assert meta["settings"]["dataset"]["paths"] == [f"{folder['data']}/train"], meta
    assert "my_images train images" in open(os.path.join(out, "report.md")).read()
