"""The label set records its ordered sample list; a changed folder is refused (or
re-clustered on request) by the cluster step and by the N_cf dataset reading the labels."""

import os
import re

import numpy as np
import pytest
from PIL import Image

import vissl_clusterfit  # noqa: F401
from tests.cluster_step.test_step import (
    cluster_dataset,
    ncf_cfg,
    output_dir,
    save_untrained_npre,
)
from vissl_clusterfit.data.cluster_labels import label_paths, read_meta
from vissl_clusterfit.data.dataset_identity import (
    DatasetChangedError,
    lines_sha256,
    sample_lines,
)


# an untrained N_pre in VISSL's layout, shared by this module's tests
npre_fixture = pytest.fixture(scope="module", name="npre")(
    lambda tmp_path_factory: save_untrained_npre(str(tmp_path_factory.mktemp("npre")))
)


def _png(path: str, value: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).convert("RGB").save(path)


def image_folder(root: str, n: int = 12) -> str:
    for i in range(n):
        _png(os.path.join(root, f"class{i % 2}", f"{i:02d}.png"), i)
    return root


def folder_cfg(idx_dir, out, npre, folder, *extra):
    """The N_cf config on an image folder (disk_folder, all images, K=3)."""
    return ncf_cfg(
        idx_dir,
        out,
        npre,
        "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
        f"config.DATA.TRAIN.DATA_PATHS=[{folder}]",
        "config.DATA.TRAIN.DATASET_NAMES=[my_folder]",
        "config.DATA.TRAIN.DATA_LIMIT=-1",
        "config.VCF.CLUSTERFIT.TRANSFORMS=[{name: Resize, size: 28}, {name: ToTensor}]",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=3",
        "config.DATA.TRAIN.LABEL_SOURCES=[vcf_cluster_labels]",
        "config.DATA.TRAIN.LABEL_PATHS=[auto]",
        *extra,
    )


def _swap_one_image(folder: str) -> None:
    """One image out, one in: same count, every later position shifts."""
    os.unlink(os.path.join(folder, "class0", "00.png"))
    _png(os.path.join(folder, "class1", "99.png"), 99)


def test_changed_folder_is_refused_then_reclustered(idx_dir, npre, tmp_path):
    from vissl.data import build_dataset

    folder = image_folder(str(tmp_path / "images"))
    cfg = folder_cfg(idx_dir, tmp_path / "out", npre, folder)
    meta = cluster_dataset(cfg)
    paths = label_paths(output_dir(cfg), "clusterfit")
    with open(paths["images"]) as f:
        recorded = [line.rstrip("\n").split("\t") for line in f]
    first = os.path.join(folder, "class0", "00.png")
    assert recorded[0] == [first, str(os.path.getsize(first))], recorded[:2]
    assert len(recorded) == 12 == meta["dataset_identity"]["num_samples"]
    ds = build_dataset(cfg, "TRAIN")
    assert meta["dataset_identity"]["sha256"] == lines_sha256(sample_lines(ds))[0]
    ds.load_labels()  # the N_cf dataset checks the list: unchanged, accepted

    _swap_one_image(folder)
    with pytest.raises(DatasetChangedError) as e:
        cluster_dataset(cfg)
    msg = str(e.value)
    assert f"first difference at index 0: recorded '{first}\\t" in msg, msg
    assert os.path.join(folder, "class0", "02.png") in msg, msg
    assert "ON_DATASET_CHANGE=recluster" in msg, msg
    # the N_cf dataset reading those labels (hook off, or another run) refuses too
    with pytest.raises(DatasetChangedError, match="cluster label file .*index 0"):
        build_dataset(cfg, "TRAIN").load_labels()

    again = folder_cfg(
        idx_dir,
        tmp_path / "out",
        npre,
        folder,
        "config.VCF.CLUSTERFIT.ON_DATASET_CHANGE=recluster",
    )
    new_meta = cluster_dataset(again)
    assert new_meta["dataset_identity"] != meta["dataset_identity"]
    with open(paths["images"]) as f:
        now = [line.split("\t")[0] for line in f]
    assert now[-1] == os.path.join(folder, "class1", "99.png") and first not in now
    assert len(np.load(paths["labels"])) == len(now) == 12
    build_dataset(again, "TRAIN").load_labels()  # the new labels line up


def test_in_memory_source_is_identified_by_content(idx_dir, npre, tmp_path):
    cfg = ncf_cfg(idx_dir, tmp_path, npre)
    cluster_dataset(cfg)
    meta = read_meta(output_dir(cfg), "clusterfit")
    with open(label_paths(output_dir(cfg), "clusterfit")["images"]) as f:
        lines = f.read().splitlines()
    assert len(lines) == meta["num_samples"] == 120
    ident, digest = lines[0].split("\t")
    # the source's own index (DATA_LIMIT draws a seeded subset) and the pixels' hash
    assert re.fullmatch(r"fashion_mnist/train/\d+", ident), lines[0]
    assert len(digest) == 16, lines[0]
    assert len(set(line.split("\t")[1] for line in lines)) > 100  # content, not index


def test_deepcluster_resume_checks_the_images(idx_dir, npre, tmp_path):
    """The hook's record (state + deepcluster_images.txt) and its resume check."""
    from vissl.data import build_dataset

    from vissl_clusterfit.data.dataset_identity import (
        record_images,
        resumed_images_match,
    )

    folder = image_folder(str(tmp_path / "images"))
    cfg = folder_cfg(idx_dir, tmp_path / "out", npre, folder)
    listed = str(tmp_path / "deepcluster_images.txt")
    record = record_images(build_dataset(cfg, "TRAIN"), None, listed)
    assert os.path.isfile(listed) and record["num_samples"] == 12
    key = "config.VCF.DEEPCLUSTER.ON_DATASET_CHANGE"
    same = build_dataset(cfg, "TRAIN")
    assert resumed_images_match(same, record, listed, "error", key)
    assert resumed_images_match(same, None, listed, "error", key)  # older checkpoint
    _swap_one_image(folder)
    changed = build_dataset(cfg, "TRAIN")
    with pytest.raises(DatasetChangedError, match=f"{key}=recluster.*"):
        resumed_images_match(changed, record, listed, "error", key)
    assert not resumed_images_match(changed, record, listed, "recluster", key)


def test_assigned_test_split_is_checked(idx_dir, npre, tmp_path):
    """ASSIGN_TEST writes <NAME>_test_images.txt; the TEST dataset reading those labels
    refuses a changed val folder."""
    from vissl.data import build_dataset

    train = image_folder(str(tmp_path / "train"))
    val = image_folder(str(tmp_path / "val"), n=6)
    test_split = [
        "config.DATA.TEST.DATA_SOURCES=[disk_folder]",
        f"config.DATA.TEST.DATA_PATHS=[{val}]",
        "config.DATA.TEST.DATASET_NAMES=[my_val]",
        "config.DATA.TEST.DATA_LIMIT=-1",
        "config.DATA.TEST.LABEL_SOURCES=[vcf_cluster_labels]",
        "config.DATA.TEST.LABEL_PATHS=[auto]",
        "config.VCF.CLUSTERFIT.ASSIGN_TEST=true",
    ]
    cfg = folder_cfg(idx_dir, tmp_path / "out", npre, train, *test_split)
    cluster_dataset(cfg)
    listed = label_paths(output_dir(cfg), "clusterfit_test")["images"]
    with open(listed) as f:
        assert len(f.readlines()) == 6
    build_dataset(cfg, "TEST").load_labels()  # unchanged: accepted
    _swap_one_image(val)
    with pytest.raises(DatasetChangedError, match="DATA.TEST and cluster label file"):
        build_dataset(cfg, "TEST").load_labels()
