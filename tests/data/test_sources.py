import os

import numpy as np
import pytest
from vissl.config import AttrDict

import vissl_clusterfit  # noqa: F401
from tests.conftest import write_idx
from vissl_clusterfit.data.array_source import select_subset
from vissl_clusterfit.data.digits import DigitsSource, load_digits_split
from vissl_clusterfit.data.fashion_mnist import (
    DEFAULT_PATH,
    FashionMNISTSource,
    load_fashion_mnist,
    read_idx,
)


def _cfg(limit=-1, seed=0, skip=0):
    split = {
        "DATA_LIMIT": limit,
        "DATA_LIMIT_SAMPLING": {"SEED": seed, "SKIP_NUM_SAMPLES": skip},
    }
    return AttrDict({"DATA": {"TRAIN": split, "TEST": split}})


def test_fashion_mnist_source_shapes_labels_splits(idx_dir):
    train = FashionMNISTSource(_cfg(), "vcf_fashion_mnist", idx_dir, "TRAIN", "fm")
    test = FashionMNISTSource(_cfg(), "vcf_fashion_mnist", idx_dir, "TEST", "fm")
    assert (len(train), len(test)) == (600, 200)
    img, ok = train[3]
    assert ok and img.size == (28, 28) and img.mode == "RGB"
    labels = np.array(train.get_labels())
    assert labels.shape == (600,) and set(labels) == set(range(10))
    raw_images, raw_labels = load_fashion_mnist(idx_dir, "train")
    np.testing.assert_array_equal(np.asarray(img)[..., 0], raw_images[3])
    np.testing.assert_array_equal(labels, raw_labels)


def test_subset_first_n_and_seeded(idx_dir):
    first = FashionMNISTSource(_cfg(50, seed=-1), "s", idx_dir, "TRAIN", "fm")
    _, raw_labels = load_fashion_mnist(idx_dir, "train")
    np.testing.assert_array_equal(first.get_labels(), raw_labels[:50])
    a = FashionMNISTSource(_cfg(50, seed=1), "s", idx_dir, "TRAIN", "fm")
    b = FashionMNISTSource(_cfg(50, seed=1), "s", idx_dir, "TRAIN", "fm")
    c = FashionMNISTSource(_cfg(50, seed=2), "s", idx_dir, "TRAIN", "fm")
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert np.all(np.diff(a.indices) > 0) and len(set(a.indices)) == 50
    np.testing.assert_array_equal(a.get_labels(), raw_labels[a.indices])


def test_select_subset_errors_and_skip():
    np.testing.assert_array_equal(select_subset(10, 3, seed=-1, skip=2), [2, 3, 4])
    with pytest.raises(ValueError, match="DATA_LIMIT=11"):
        select_subset(10, 11)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="apt-get install dataset-fashion-mnist"
    ):
        load_fashion_mnist(str(tmp_path / "nope"), "train")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(str(tmp_path), "train")


def test_corrupt_files(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(str(bad))
    write_idx(str(tmp_path / "trunc"), np.zeros((4, 28, 28), np.uint8), compress=False)
    data = (tmp_path / "trunc").read_bytes()
    (tmp_path / "trunc").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(str(tmp_path / "trunc"))
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="unreadable"):
        read_idx(str(gz))


def test_image_label_count_mismatch(tmp_path):
    write_idx(
        str(tmp_path / "train-images-idx3-ubyte"), np.zeros((5, 28, 28), np.uint8)
    )
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros((4,), np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        load_fashion_mnist(str(tmp_path), "train")


def test_digits_split_is_stratified_and_disjoint():
    tr_x, tr_y = load_digits_split("train")
    te_x, te_y = load_digits_split("test")
    assert (len(tr_x), len(te_x)) == (1257, 540)
    assert tr_x.dtype == np.uint8 and tr_x.max() == 255
    assert np.bincount(tr_y).min() >= 120 and np.bincount(te_y).min() >= 50
    src = DigitsSource(_cfg(100, seed=-1), "vcf_digits", "sklearn", "TEST", "digits")
    assert len(src) == 100 and src[0][0].size == (8, 8)


@pytest.mark.skipif(
    not os.path.isdir(DEFAULT_PATH),
    reason=f"{DEFAULT_PATH} not installed (scripts/install.sh installs it)",
)
def test_real_fashion_mnist():
    images, labels = load_fashion_mnist(DEFAULT_PATH, "train")
    assert (
        images.shape == (60000, 28, 28) and np.bincount(labels).tolist() == [6000] * 10
    )
    images, labels = load_fashion_mnist(DEFAULT_PATH, "test")
    assert images.shape == (10000, 28, 28)


def test_generic_ssl_dataset_with_our_label_source(idx_dir):
    """Our sources and labels through VISSL's own GenericSSLDataset (build_dataset)."""
    from vissl.data import build_dataset

    from tests.conftest import data_overrides
    from vissl_clusterfit.config import compose_config

    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/benchmark/linear_fmnist_cpu",
            "config.DATA.TRAIN.DATA_LIMIT=64",
            "config.CHECKPOINT.DIR=/tmp/vcf_unused",
            *data_overrides(idx_dir),
        ],
        dump_config=False,
    )
    ds = build_dataset(cfg, "TRAIN")
    item = ds[5]
    _, raw_labels = load_fashion_mnist(idx_dir, "train")
    sub = select_subset(600, 64, seed=0)
    assert len(ds) == 64
    assert int(item["label"][0]) == raw_labels[sub[5]]
    assert tuple(item["data"][0].shape) == (3, 28, 28)
