"""Real folders that go wrong, refused before any feature is extracted: an empty class
folder, fewer images than PCA_DIM or K, a file listed twice; other files are ignored."""

import os

import numpy as np
import pytest

import vissl_clusterfit  # noqa: F401
from tests.cluster_step.test_step import cluster_dataset, ncf_cfg
from tests.data.test_dataset_identity import (  # noqa: F401  (npre: a fixture)
    folder_cfg,
    image_folder,
    npre_fixture,
)
from vissl_clusterfit.cluster_step import npre as npre_loading
from vissl_clusterfit.cluster_step.folder_checks import explain_empty_classes


@pytest.fixture
def no_extraction(monkeypatch):
    """Every check here must fire before N_pre is even loaded."""
    monkeypatch.setattr(
        npre_loading, "build_npre_trunk", lambda *a, **k: pytest.fail("work started")
    )


def test_empty_class_folder_is_named(idx_dir, npre, tmp_path, no_extraction):
    folder = image_folder(str(tmp_path / "images"))
    empty = os.path.join(folder, "class2")
    os.makedirs(empty)
    open(os.path.join(empty, "notes.txt"), "w").close()  # not an image
    with pytest.raises(ValueError) as e:
        cluster_dataset(folder_cfg(idx_dir, tmp_path / "out", npre, folder))
    msg = str(e.value)
    assert f"class folder(s) ['{empty}'] hold no image" in msg, msg
    assert ".png" in msg and "Remove the empty folder" in msg, msg


def test_empty_classes_are_found_from_the_split_sources_and_paths(tmp_path):
    """Plain arguments (DATA_SOURCES, DATA_PATHS): only disk_folder roots are searched."""
    folder = image_folder(str(tmp_path / "images"))
    os.makedirs(os.path.join(folder, "class2"))
    refusal = FileNotFoundError("Found no valid file for the classes class2")
    sources, paths = ["disk_folder", "disk_filelist"], [folder, str(tmp_path)]
    err = explain_empty_classes(sources, paths, "TRAIN", refusal)
    assert str(err).startswith(
        f"config.DATA.TRAIN: the class folder(s) ['{folder}/class2'] hold no image"
    ), err
    other = FileNotFoundError("no such file")
    assert explain_empty_classes(sources, paths, "TRAIN", other) is None


@pytest.mark.parametrize(
    "override,match",
    [
        (
            "config.VCF.CLUSTERFIT.PCA_DIM=20",
            "PCA_DIM=20 needs at least 20 images, but",
        ),
        ("config.VCF.CLUSTERFIT.NUM_CLUSTERS=20", "NUM_CLUSTERS=20"),
    ],
)
def test_fewer_images_than_pca_dim_or_k(
    idx_dir, npre, tmp_path, no_extraction, override, match
):
    folder = image_folder(str(tmp_path / "images"))
    with pytest.raises(ValueError, match=match):
        cluster_dataset(folder_cfg(idx_dir, tmp_path / "out", npre, folder, override))


def test_a_file_listed_twice(idx_dir, npre, tmp_path, no_extraction):
    folder = image_folder(str(tmp_path / "images"))
    paths = sorted(
        os.path.join(r, f)
        for r, _, fs in os.walk(folder)
        for f in fs
        if f.endswith(".png")
    )
    listed = paths + [paths[3]]
    filelist = str(tmp_path / "images.npy")
    np.save(filelist, np.array(listed))
    cfg = ncf_cfg(
        idx_dir,
        tmp_path / "out",
        npre,
        "config.DATA.TRAIN.DATA_SOURCES=[disk_filelist]",
        f"config.DATA.TRAIN.DATA_PATHS=[{filelist}]",
        "config.DATA.TRAIN.DATASET_NAMES=[my_list]",
        "config.DATA.TRAIN.DATA_LIMIT=-1",
        "config.VCF.CLUSTERFIT.TRANSFORMS=[{name: Resize, size: 28}, {name: ToTensor}]",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=3",
    )
    with pytest.raises(
        ValueError, match=rf"{paths[3]} is listed 2 times \(indices \[3, 12\]\)"
    ):
        cluster_dataset(cfg)


def test_other_files_are_ignored(idx_dir, npre, tmp_path):
    folder = image_folder(str(tmp_path / "images"))
    open(os.path.join(folder, "class0", "notes.txt"), "w").close()
    open(os.path.join(folder, "class1", ".DS_Store"), "w").close()
    meta = cluster_dataset(folder_cfg(idx_dir, tmp_path / "out", npre, folder))
    assert meta["num_samples"] == 12
