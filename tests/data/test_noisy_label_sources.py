"""Label sources through VISSL's GenericSSLDataset: ``vcf_noisy:<inner>`` (ClusterFit
Sec. 3.2), the coarse Fashion-MNIST view and the tops-only data source."""

import json
import os

import numpy as np
import pytest

import vissl_clusterfit  # noqa: F401
from tests.conftest import data_overrides
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.data.fashion_mnist import load_fashion_mnist


def dataset(tmp_path, idx_dir, *overrides, config="pretrain/supervised_fmnist_cpu"):
    from vissl.data import build_dataset

    _, cfg = compose_config(
        [
            f"config=vissl_clusterfit/{config}",
            f"config.CHECKPOINT.DIR={tmp_path}",
            *data_overrides(idx_dir),
            *overrides,
        ],
        dump_config=False,
    )
    ds = build_dataset(cfg, "TRAIN")
    ds.load_labels()
    return ds


def served_labels(ds):
    labels = np.asarray(ds.label_objs[0])
    if ds.image_and_label_subset is not None:
        labels = labels[ds.image_and_label_subset]
    return labels


def test_noisy_fashion_mnist_flips_exactly_and_records(idx_dir, tmp_path):
    noisy = dataset(
        tmp_path,
        idx_dir,
        "config.DATA.TRAIN.DATA_LIMIT=200",
        "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.3",
        "config.DATA.TRAIN.VCF_LABEL_NOISE.SEED=4",
    )
    clean = np.asarray(noisy.data_objs[0].get_labels())
    got = served_labels(noisy)
    changed = np.flatnonzero(got != clean)
    assert len(changed) == 60, len(changed)  # floor(0.3 * 200 + 0.5)
    record = json.load(open(tmp_path / "vcf_label_noise_train.json"))
    assert record["positions"] == changed.tolist()
    assert record["num_flipped"] == 60 and record["num_samples"] == 200
    assert record["num_classes"] == 10 and record["seed"] == 4
    assert record["clean_labels"] == clean[changed].tolist()
    assert record["noisy_labels"] == got[changed].tolist()
    _, raw = load_fashion_mnist(idx_dir, "train")
    src = np.asarray(record["source_indices"])
    np.testing.assert_array_equal(raw[src], clean[changed])
    # the sample VISSL serves at a flipped position carries the noisy label
    item = noisy[int(changed[0])]
    assert int(item["label"][0]) == got[changed[0]] != clean[changed[0]]


def test_same_seed_same_flips_other_seed_other_flips(idx_dir, tmp_path):
    args = [
        "config.DATA.TRAIN.DATA_LIMIT=200",
        "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.5",
    ]
    a = served_labels(dataset(tmp_path / "a", idx_dir, *args))
    b = served_labels(dataset(tmp_path / "b", idx_dir, *args))
    c = served_labels(
        dataset(
            tmp_path / "c", idx_dir, *args, "config.DATA.TRAIN.VCF_LABEL_NOISE.SEED=1"
        )
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a rerun in the same folder with another seed would train on other labels: refused
    with pytest.raises(ValueError, match="holds other flips"):
        dataset(
            tmp_path / "a", idx_dir, *args, "config.DATA.TRAIN.VCF_LABEL_NOISE.SEED=1"
        )


def test_rate_zero_is_the_clean_labels(idx_dir, tmp_path):
    ds = dataset(tmp_path, idx_dir, "config.DATA.TRAIN.DATA_LIMIT=100")
    np.testing.assert_array_equal(served_labels(ds), ds.data_objs[0].get_labels())
    assert json.load(open(tmp_path / "vcf_label_noise_train.json"))["positions"] == []


def test_vissl_subsetting_flips_only_served_positions(tmp_path):
    # VISSL's own DATA_LIMIT subsetting (disk_filelist images and labels): the flips
    # are drawn over the 300 served positions, the other labels stay clean
    from PIL import Image
    from vissl.data import build_dataset

    n = 1000
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "img.png")
    np.save(tmp_path / "images.npy", np.array([str(tmp_path / "img.png")] * n))
    clean = np.random.RandomState(0).randint(0, 7, size=n).astype(np.int64)
    np.save(tmp_path / "labels.npy", clean)
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/pretrain/supervised_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            "config.DATA.TRAIN.DATA_SOURCES=[disk_filelist]",
            f"config.DATA.TRAIN.DATA_PATHS=[{tmp_path / 'images.npy'}]",
            "config.DATA.TRAIN.LABEL_SOURCES=[vcf_noisy:disk_filelist]",
            f"config.DATA.TRAIN.LABEL_PATHS=[{tmp_path / 'labels.npy'}]",
            "config.DATA.TRAIN.DATA_LIMIT=300",
            "config.DATA.TRAIN.DATA_LIMIT_SAMPLING.SEED=3",
            "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.2",
            "config.DATA.TRAIN.VCF_LABEL_NOISE.NUM_CLASSES=8",
        ],
        dump_config=False,
    )
    ds = build_dataset(cfg, "TRAIN")
    ds.load_labels()
    subset = np.asarray(ds.image_and_label_subset)
    full = np.asarray(ds.label_objs[0])
    changed = np.flatnonzero(full != clean)
    assert len(changed) == 60 and set(changed) <= set(subset), len(changed)
    record = json.load(open(tmp_path / "vcf_label_noise_train.json"))
    assert record["num_classes"] == 8 and record["num_positions"] == 300
    assert sorted(record["source_indices"]) == changed.tolist()
    np.testing.assert_array_equal(subset[record["positions"]], record["source_indices"])
    assert int(ds[record["positions"][0]]["label"][0]) == record["noisy_labels"][0]


# The coarse groups, spelled out from the class names (Fashion-MNIST's label order).
FINE = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
GROUPS = {
    "tops": {"T-shirt/top", "Pullover", "Coat", "Shirt"},
    "trouser": {"Trouser"},
    "dress": {"Dress"},
    "footwear": {"Sandal", "Sneaker", "Ankle boot"},
    "bag": {"Bag"},
}


def test_coarse_labels_and_noisy_coarse(idx_dir, tmp_path):
    from vissl_clusterfit.data.fashion_mnist_coarse import COARSE_NAMES

    ds = dataset(
        tmp_path,
        idx_dir,
        "config.DATA.TRAIN.LABEL_SOURCES=[vcf_fashion_mnist_coarse]",
        "config.DATA.TRAIN.DATA_LIMIT=300",
    )
    fine = np.asarray(ds.data_objs[0].get_labels())
    coarse = served_labels(ds)
    for f, c in zip(fine, coarse):
        assert FINE[f] in GROUPS[COARSE_NAMES[c]], (f, c)
    assert set(coarse) == set(range(5))
    noisy = dataset(
        tmp_path / "n",
        idx_dir,
        "config.DATA.TRAIN.LABEL_SOURCES=[vcf_noisy:vcf_fashion_mnist_coarse]",
        "config.DATA.TRAIN.DATA_LIMIT=300",
        "config.DATA.TRAIN.VCF_LABEL_NOISE.RATE=0.5",
    )
    got = served_labels(noisy)
    assert (got != coarse).sum() == 150 and got.max() <= 4
    assert (
        json.load(open(tmp_path / "n" / "vcf_label_noise_train.json"))["num_classes"]
        == 5
    )


def test_tops_only_source(idx_dir, tmp_path):
    ds = dataset(
        tmp_path,
        idx_dir,
        "config.DATA.TRAIN.DATA_LIMIT=-1",
        config="benchmark/linear_fmnist_tops_cpu",
    )
    images, fine = load_fashion_mnist(idx_dir, "train")
    tops = [FINE.index(n) for n in ("T-shirt/top", "Pullover", "Coat", "Shirt")]
    keep = np.flatnonzero(np.isin(fine, tops))
    labels = served_labels(ds)
    assert len(ds) == len(keep) == len(labels), (len(ds), len(keep))
    np.testing.assert_array_equal(labels, [tops.index(f) for f in fine[keep]])
    img, _ = ds.data_objs[0][5]
    np.testing.assert_array_equal(np.asarray(img)[..., 0], images[keep[5]])


def test_coarse_needs_fashion_mnist(tmp_path):
    from vissl.data import build_dataset

    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/pretrain/supervised_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            "config.DATA.TRAIN.DATA_SOURCES=[vcf_digits]",
            "config.DATA.TRAIN.DATA_PATHS=[sklearn]",
            "config.DATA.TRAIN.LABEL_SOURCES=[vcf_fashion_mnist_coarse]",
            "config.DATA.TRAIN.DATA_LIMIT=-1",
        ],
        dump_config=False,
    )
    with pytest.raises(ValueError, match="needs DATA_SOURCES"):
        build_dataset(cfg, "TRAIN").load_labels()
    assert not os.path.exists(tmp_path / "vcf_label_noise_train.json")


@pytest.mark.parametrize(
    "name, classes",
    [
        ("pretrain/supervised_fmnist_cpu", 10),
        ("pretrain/supervised_fmnist_gpu", 10),
        ("pretrain/supervised_coarse_fmnist_cpu", 5),
        ("pretrain/supervised_coarse_fmnist_gpu", 5),
        ("clusterfit/distill_supervised_fmnist_cpu", 10),
        ("clusterfit/distill_supervised_fmnist_gpu", 10),
        ("benchmark/linear_fmnist_tops_cpu", 4),
    ],
)
def test_config_heads_match_their_label_space(name, classes, tmp_path):
    _, cfg = compose_config(
        [f"config=vissl_clusterfit/{name}", f"config.CHECKPOINT.DIR={tmp_path}"],
        dump_config=False,
    )
    dims = [params["dims"][-1] for _, params in cfg.MODEL.HEAD.PARAMS]
    assert dims and all(d == classes for d in dims), (name, dims)
