"""Nothing lost, nothing silent, in-process: processes without an extraction batch,
tampered label files, and the checks that name the key to fix before any work."""

import os
import shutil

import numpy as np
import pytest
import torch

import vissl_clusterfit  # noqa: F401
from tests.cluster_step.test_step import (
    cluster_dataset,
    ncf_cfg,
    output_dir,
    save_untrained_npre,
)
from tests.clustering.gloo import run_on_ranks
from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import extraction as fx
from vissl_clusterfit.clustering.comm import gather_rows
from vissl_clusterfit.data.cluster_labels import label_paths, read_meta
from vissl_clusterfit.hooks.clusterfit_hook import ClusterFitHook
from vissl_clusterfit.hooks.deepcluster_hook import DeepClusterHook


@pytest.fixture(scope="module")
def npre(tmp_path_factory):
    return save_untrained_npre(str(tmp_path_factory.mktemp("npre")))


# ---- 1. a process without an extraction batch --------------------------------------


class _Trunk(torch.nn.Module):
    """A trunk with one feature, ``res5``: the same weights in every process."""

    feat_eval_mapping = {"res5": "res5"}

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(6, 3, 3, 3, generator=generator))

    def forward(self, x, out_feat_keys=None):
        return [torch.relu(torch.nn.functional.conv2d(x, self.weight))]


class _Images:
    """``dataset[i]["data"][0]``: a seeded random 3x8x8 image."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return {
            "data": [
                torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(int(i)))
            ]
        }


SIZES = (5, 8)  # images; with batches of 8, rank 1 of 2 gets no batch
BATCH = 8


def _extract_on_two_ranks(rank: int, out: str) -> None:
    trunks = [(_Trunk(), "res5", "avg")]
    cpu = torch.device("cpu")
    for n in SIZES:
        data = _Images(n)
        gathered = fx.extract_features(trunks, data, BATCH, cpu)
        shard = fx.extract_features(trunks, data, BATCH, cpu, gather=False)
        np.save(os.path.join(out, f"shard{n}_rank{rank}.npy"), shard)
        res = clustering.sharded_kmeans(shard.copy(), 2, pca_dim=0, niter=5, seed=0)
        labels = gather_rows(res.labels)
        if rank == 0:
            alone = fx.extract_features(trunks, data, BATCH, cpu, shard=False)
            np.save(os.path.join(out, f"gathered{n}.npy"), gathered)
            np.save(os.path.join(out, f"alone{n}.npy"), alone)
            np.save(os.path.join(out, f"labels{n}.npy"), labels)


def test_a_rank_without_extraction_batch_gets_the_one_process_result(tmp_path):
    run_on_ranks(_extract_on_two_ranks, str(tmp_path))
    for n in SIZES:
        alone = np.load(tmp_path / f"alone{n}.npy")
        assert alone.shape == (n, 6)
        # rank 0 gathers every image in dataset order, bit-identical to one process
        np.testing.assert_array_equal(np.load(tmp_path / f"gathered{n}.npy"), alone)
        # gather=False: the rank without a batch holds an empty (0, D) shard, and the
        # shards in rank order are the dataset
        shards = [np.load(tmp_path / f"shard{n}_rank{r}.npy") for r in (0, 1)]
        assert sorted(s.shape for s in shards) == [(0, 6), (n, 6)], shards
        np.testing.assert_array_equal(np.concatenate(shards), alone)
        # the sharded k-means takes the empty shard: labels of one process
        single = clustering.sharded_kmeans(alone.copy(), 2, pca_dim=0, niter=5, seed=0)
        np.testing.assert_array_equal(
            np.load(tmp_path / f"labels{n}.npy"), single.labels
        )


# ---- 2. a tampered or swapped label file is refused ---------------------------------


def test_reordered_or_swapped_labels_are_refused_on_reuse_and_by_the_dataset(
    idx_dir, npre, tmp_path
):
    from vissl.data import build_dataset

    cfg = ncf_cfg(idx_dir, tmp_path / "run", npre)
    meta = cluster_dataset(cfg)
    path = label_paths(output_dir(cfg), "clusterfit")["labels"]
    labels = np.load(path)
    assert meta["labels_sha256"]
    build_dataset(cfg, "TRAIN").load_labels()  # the untouched file is served
    # same length, same K, same values: only the order differs
    reordered = np.concatenate([labels[1:], labels[:1]])
    assert (reordered != labels).any()
    other = ncf_cfg(idx_dir, tmp_path / "other", npre, "config.VCF.CLUSTERFIT.SEED=1")
    cluster_dataset(other)
    swapped = label_paths(output_dir(other), "clusterfit")["labels"]
    for name, replace in [
        ("reordered", lambda: np.save(path, reordered)),
        ("swapped", lambda: shutil.copyfile(swapped, path)),
    ]:
        replace()
        with pytest.raises(ValueError, match="does not match the sha256") as err:
            cluster_dataset(cfg)  # the cluster step does not reuse it
        assert path in str(err.value) and "delete" in str(err.value), name
        with pytest.raises(ValueError, match="does not match the sha256"):
            build_dataset(cfg, "TRAIN").load_labels()  # nor does N_cf train on it
    # deleting the set as the message says re-clusters to the original labels
    for f in os.listdir(output_dir(cfg)):
        os.unlink(os.path.join(output_dir(cfg), f))
    cluster_dataset(cfg)
    np.testing.assert_array_equal(np.load(path), labels)


# ---- 4. messages that name the key, before any work ---------------------------------


def _fake_checkpoint(folder, k: int, name: str = "model_phase0.torch") -> None:
    os.makedirs(folder, exist_ok=True)
    heads = {"0.clf.0.weight": torch.zeros(k, 128), "0.clf.0.bias": torch.zeros(k)}
    state = {"base_model": {"model": {"trunk": {}, "heads": heads}}}
    torch.save(
        {"classy_state_dict": state, "phase_idx": 0, "iteration": 1},
        os.path.join(folder, name),
    )


def test_resume_with_another_k_is_refused_before_vissl_loads_the_checkpoint(
    idx_dir, npre, tmp_path
):
    _fake_checkpoint(tmp_path, k=8)
    with pytest.raises(ValueError) as err:
        ClusterFitHook(ncf_cfg(idx_dir, tmp_path, npre))  # K=6
    message = str(err.value)
    assert f"config.CHECKPOINT.DIR={tmp_path} holds a run with K=8" in message
    assert "model_phase0.torch" in message and "NUM_CLUSTERS=6" in message
    assert "another config.CHECKPOINT.DIR" in message
    # the same K resumes; without AUTO_RESUME nothing is resumed, nothing checked
    ClusterFitHook(
        ncf_cfg(idx_dir, tmp_path, npre, "config.VCF.CLUSTERFIT.NUM_CLUSTERS=8")
    )
    ClusterFitHook(
        ncf_cfg(idx_dir, tmp_path, npre, "config.CHECKPOINT.AUTO_RESUME=false")
    )
    # DeepCluster: the same check on its K
    from tests.cluster_step.test_deepcluster import dc_cfg

    with pytest.raises(ValueError, match="DEEPCLUSTER.NUM_CLUSTERS=6"):
        DeepClusterHook(dc_cfg(tmp_path, idx_dir))


def test_a_corrupt_checkpoint_is_left_to_the_resume_logic(idx_dir, npre, tmp_path):
    (tmp_path / "model_phase0.torch").write_bytes(b"truncated")
    ClusterFitHook(ncf_cfg(idx_dir, tmp_path, npre))  # no crash in the K check


DIGITS = [
    "config.DATA.TRAIN.DATA_SOURCES=[vcf_digits]",
    "config.DATA.TRAIN.DATA_PATHS=[sklearn]",
    "config.DATA.TRAIN.DATASET_NAMES=[digits]",
    "config.DATA.TRAIN.DATA_LIMIT=60",
]
FITTING = (
    "config.VCF.CLUSTERFIT.TRANSFORMS=[{name: Resize, size: 28}, {name: ToTensor}]"
)


def test_extraction_transforms_that_do_not_fit_the_images(idx_dir, npre, tmp_path):
    cfg = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        *DIGITS,
        "config.VCF.CLUSTERFIT.TRANSFORMS=[{name: RandomCrop, size: 28}, {name: ToTensor}]",
    )
    with pytest.raises(ValueError) as err:
        cluster_dataset(cfg)
    message = str(err.value)
    assert message.startswith(
        "config.VCF.CLUSTERFIT.TRANSFORMS do not fit the images of DATA.TRAIN "
        "(digits: 8x8 px)"
    ), message
    assert "Required crop size (28, 28)" in message and "Resize" in message
    assert read_meta(output_dir(cfg), "clusterfit") is None


class _Task:
    """The parts of VISSL's task the ClusterFit hook reads at on_start."""

    def __init__(self, cfg) -> None:
        from vissl.data import build_dataset
        from vissl.models import build_model

        self.device = torch.device("cpu")
        self.base_model = build_model(cfg.MODEL, cfg.OPTIMIZER)
        self.datasets = {"train": build_dataset(cfg, "TRAIN")}


def test_training_transforms_that_do_not_fit_fail_before_the_cluster_step(
    idx_dir, npre, tmp_path
):
    # digits as D_cf with the Fashion-MNIST training crops (RandomCrop 28, padding 2)
    cfg = ncf_cfg(idx_dir, tmp_path, npre, *DIGITS, FITTING)
    hook, task = ClusterFitHook(cfg), _Task(cfg)
    rng_before = torch.get_rng_state()
    with pytest.raises(ValueError) as err:
        hook.on_start(task)
    message = str(err.value)
    assert message.startswith(
        "config.DATA.TRAIN.TRANSFORMS do not fit the images of DATA.TRAIN "
        "(digits: 8x8 px)"
    ), message
    assert "larger than input image size (12, 12)" in message
    assert not os.path.exists(output_dir(cfg))  # before any extraction
    assert torch.equal(torch.get_rng_state(), rng_before)
    # with a Resize in front the same run clusters
    resized = (
        "config.DATA.TRAIN.TRANSFORMS=[{name: Resize, size: 28}, "
        "{name: RandomCrop, size: 28, padding: 2}, {name: ToTensor}]"
    )
    ok = ncf_cfg(idx_dir, tmp_path / "ok", npre, *DIGITS, FITTING, resized)
    ClusterFitHook(ok).on_start(_Task(ok))
    assert read_meta(output_dir(ok), "clusterfit")["num_samples"] == 60


def _image_folder(root, n: int) -> str:
    from PIL import Image

    for i in range(n):
        folder = os.path.join(root, f"class{i % 2}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.full((28, 28), 10 * i, np.uint8)).convert("RGB").save(
            os.path.join(folder, f"{i}.png")
        )
    return str(root)


def test_data_limit_larger_than_the_data_set(idx_dir, npre, tmp_path):
    folder = _image_folder(tmp_path / "images", 12)
    source = [
        "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
        f"config.DATA.TRAIN.DATA_PATHS=[{folder}]",
        "config.DATA.TRAIN.DATASET_NAMES=[my_folder]",
        FITTING,
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=2",
    ]
    cfg = ncf_cfg(
        idx_dir, tmp_path / "out", npre, *source, "config.DATA.TRAIN.DATA_LIMIT=50"
    )
    with pytest.raises(ValueError) as err:
        cluster_dataset(cfg)
    message = str(err.value)
    assert message.startswith(
        "config.DATA.TRAIN.DATA_LIMIT=50 is larger than the data set: my_folder "
        f"(disk_folder, {folder}) has 12 images"
    ), message
    assert "at most 12" in message
    assert read_meta(output_dir(cfg), "clusterfit") is None
    # VISSL's SKIP_NUM_SAMPLES counts too
    skip = "config.DATA.TRAIN.DATA_LIMIT_SAMPLING.SKIP_NUM_SAMPLES=5"
    cfg = ncf_cfg(
        idx_dir,
        tmp_path / "skip",
        npre,
        *source,
        "config.DATA.TRAIN.DATA_LIMIT=10",
        skip,
    )
    with pytest.raises(ValueError, match="SKIP_NUM_SAMPLES=5 is larger .* at most 7"):
        cluster_dataset(cfg)
    cfg = ncf_cfg(
        idx_dir, tmp_path / "fits", npre, *source, "config.DATA.TRAIN.DATA_LIMIT=12"
    )
    assert cluster_dataset(cfg)["num_samples"] == 12
