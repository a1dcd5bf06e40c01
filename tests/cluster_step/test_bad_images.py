"""Images that do not decode: a truncated PNG and a zero-byte JPEG in a folder.

Default: the cluster step stops naming the file and its index, and writes nothing.
``ON_BAD_IMAGE=skip``: those images get label -1, the meta lists them, the label file
is accepted by the N_cf dataset, and N_cf's sampler never draws them."""

import io
import os

import numpy as np
import pytest
from PIL import Image

import vissl_clusterfit  # noqa: F401
from tests.cluster_step.test_step import cluster_dataset, ncf_cfg, output_dir
from tests.data.test_dataset_identity import (  # noqa: F401  (npre: a fixture)
    folder_cfg,
    npre_fixture,
)
from vissl_clusterfit.cluster_step.bad_images import BadImageError
from vissl_clusterfit.data.cluster_labels import (
    label_paths,
    load_cluster_labels,
    read_meta,
)
from vissl_clusterfit.data.labelled_sampler import LabelledSampler


def broken_folder(root: str) -> tuple:
    """10 good PNGs, a truncated PNG and a zero-byte JPEG; returns (folder, bad paths)."""
    for i in range(10):
        path = os.path.join(root, f"class{i % 2}", f"{i:02d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels).convert("RGB").save(path)
    blob = io.BytesIO()
    Image.fromarray(np.full((28, 28, 3), 7, np.uint8)).save(blob, format="PNG")
    truncated = os.path.join(root, "class0", "05_truncated.png")
    with open(truncated, "wb") as f:
        f.write(blob.getvalue()[: len(blob.getvalue()) // 2])
    empty = os.path.join(root, "class1", "05_empty.jpg")
    open(empty, "wb").close()
    return root, [truncated, empty]


def test_default_stops_naming_the_file_and_writes_nothing(idx_dir, npre, tmp_path):
    folder, bad = broken_folder(str(tmp_path / "images"))
    cfg = folder_cfg(idx_dir, tmp_path / "out", npre, folder)
    with pytest.raises(BadImageError) as e:
        cluster_dataset(cfg)
    msg = str(e.value)
    # ImageFolder sorts: class0/00, 02, 04, 05_truncated -> index 3
    assert f"image 3 of DATA.TRAIN does not decode: {bad[0]}" in msg, msg
    assert "ON_BAD_IMAGE=skip" in msg and "nothing was written" in msg, msg
    assert not os.path.exists(output_dir(cfg)) or not os.listdir(output_dir(cfg))


def test_skip_labels_them_minus_one(idx_dir, npre, tmp_path):
    from vissl.data import build_dataset

    folder, bad = broken_folder(str(tmp_path / "images"))
    cfg = folder_cfg(
        idx_dir,
        tmp_path / "out",
        npre,
        folder,
        "config.VCF.CLUSTERFIT.ON_BAD_IMAGE=skip",
    )
    meta = cluster_dataset(cfg)
    paths = label_paths(output_dir(cfg), "clusterfit")
    labels = load_cluster_labels(paths["labels"], expected_len=12)
    with open(paths["images"]) as f:
        listed = [line.split("\t")[0] for line in f]
    bad_index = [listed.index(p) for p in bad]
    assert bad_index == [3, 9], listed
    assert labels[bad_index].tolist() == [-1, -1], labels
    assert (np.delete(labels, bad_index) >= 0).all(), labels
    entry = meta["bad_images"]
    assert entry["count"] == 2, entry
    assert [x["index"] for x in entry["samples"]] == bad_index, entry
    assert [x["path"] for x in entry["samples"]] == bad, entry
    assert all(x["error"] for x in entry["samples"]), entry
    assert meta["num_samples"] == 12 and read_meta(output_dir(cfg), "clusterfit")
    # the N_cf dataset serves them as -1; the sampler of the hook never draws them
    ds = build_dataset(cfg, "TRAIN")
    ds.load_labels()
    sampler = LabelledSampler(labels, seed=0, num_replicas=2, rank=0)
    drawn = set(sampler) | set(LabelledSampler(labels, seed=0, num_replicas=2, rank=1))
    assert drawn == set(np.flatnonzero(labels >= 0).tolist()), drawn


def test_skip_with_feature_shards_is_refused_up_front(idx_dir, npre, tmp_path):
    folder, _ = broken_folder(str(tmp_path / "images"))
    cfg = folder_cfg(
        idx_dir,
        tmp_path / "out",
        npre,
        folder,
        "config.VCF.CLUSTERFIT.ON_BAD_IMAGE=skip",
        "config.VCF.CLUSTERFIT.FEATURE_SHARDS.ENABLED=true",
    )
    with pytest.raises(ValueError, match="FEATURE_SHARDS.ENABLED") as e:
        cluster_dataset(cfg)
    assert "ON_BAD_IMAGE=skip" in str(e.value), e.value
    assert not os.path.exists(output_dir(cfg)) or not os.listdir(output_dir(cfg))


def test_skip_is_checked_against_the_typed_shard_settings(idx_dir, npre, tmp_path):
    """FEATURE_SHARDS is read once (FeatureShardParams): a section set to null takes
    its defaults (shards off) for the ON_BAD_IMAGE=skip check too."""
    from vissl_clusterfit.cluster_step import ClusterFitParams

    cfg = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        "config.VCF.CLUSTERFIT.ON_BAD_IMAGE=skip",
        "config.VCF.CLUSTERFIT.FEATURE_SHARDS=null",
    )
    params = ClusterFitParams.from_config(cfg)
    assert params.on_bad_image == "skip" and not params.shards.enabled


@pytest.mark.slow
def test_ncf_trains_one_epoch_without_the_skipped_images(idx_dir, npre, tmp_path):
    """Through VISSL's launcher: the hook clusters with skip, N_cf trains one epoch.
    VISSL's disk_folder raises on a broken image inside its loader, so finishing the
    epoch shows the sampler never drew one."""
    from tests.conftest import data_overrides, run_tool
    from tests.test_e2e import final_ckpt

    folder, bad = broken_folder(str(tmp_path / "images"))
    out = str(tmp_path / "ncf")
    proc = run_tool(
        [
            "config=vissl_clusterfit/clusterfit/ncf_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
            *data_overrides(idx_dir, train_labels=False),
            "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
            f"config.DATA.TRAIN.DATA_PATHS=[{folder}]",
            "config.DATA.TRAIN.DATASET_NAMES=[my_folder]",
            "config.DATA.TRAIN.DATA_LIMIT=-1",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=4",
            "config.DATA.TEST.DATA_LIMIT=16",
            "config.VCF.CLUSTERFIT.TRANSFORMS=[{name: Resize, size: 28}, {name: ToTensor}]",
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=3",
            "config.VCF.CLUSTERFIT.ON_BAD_IMAGE=skip",
            "config.OPTIMIZER.num_epochs=1",
            "config.OPTIMIZER.param_schedulers.lr.name=constant",
        ]
    )
    final_ckpt(out)
    log = proc.stdout + proc.stderr
    assert "2 images do not decode and got label -1" in log, log[-3000:]
    labels = np.load(os.path.join(out, "clusterfit", "clusterfit_labels.npy"))
    assert (labels == -1).sum() == 2, labels


def test_an_image_failing_while_ncf_trains_is_named(idx_dir, npre, tmp_path):
    """What the hook installs on N_cf's train dataset: VISSL's disk_folder raises
    PIL's message alone; with it the error names the file."""
    from vissl.data import build_dataset

    from vissl_clusterfit.cluster_step.bad_images import name_failing_images

    folder, bad = broken_folder(str(tmp_path / "images"))
    cfg = folder_cfg(idx_dir, tmp_path / "out", npre, folder)
    cfg.DATA.TRAIN.LABEL_SOURCES = []
    ds = build_dataset(cfg, "TRAIN")
    with pytest.raises(OSError) as plain:
        ds[3]
    assert bad[0] not in str(plain.value)
    name_failing_images(ds)
    with pytest.raises(BadImageError, match=f"image {bad[0]} does not decode"):
        ds[3]
    assert ds[0]["data_valid"] == [1]
