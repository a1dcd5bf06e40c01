"""The adapter over VISSL's DATA_LIMIT subset (compat/vissl_subset.py), pinned against
VISSL's own sub-sampling and what GenericSSLDataset serves."""

import numpy as np
import pytest
import torchvision.transforms.functional as TF
from vissl.data.data_helper import balanced_sub_sampling, unbalanced_sub_sampling

from tests.cluster_step.test_step import ncf_cfg
from tests.data.test_dataset_identity import folder_cfg, image_folder
from vissl_clusterfit.cluster_step.extraction import extraction_dataset
from vissl_clusterfit.compat.vissl_subset import (
    source_indexed,
    subset_source_indices,
    vissl_subsets,
)


TRANSFORMS = [{"name": "ToTensor"}]


def _folder_dataset(idx_dir, tmp_path, *extra):
    folder = image_folder(str(tmp_path / "images"))  # 12 images
    cfg = folder_cfg(idx_dir, tmp_path / "out", "", folder, *extra)
    return extraction_dataset(cfg, TRANSFORMS)


def test_vissl_subset_positions_are_the_ones_vissl_serves(idx_dir, tmp_path):
    dataset = _folder_dataset(idx_dir, tmp_path, "config.DATA.TRAIN.DATA_LIMIT=5")
    assert vissl_subsets(dataset) and len(dataset) == 5
    subset = subset_source_indices(dataset)
    np.testing.assert_array_equal(subset, unbalanced_sub_sampling(12, 5, seed=0))
    for i in (0, 4):
        image, _ = dataset.data_objs[0][int(subset[i])]
        served = dataset[i]["data"][0]
        assert (served == TF.to_tensor(image)).all(), f"position {i}"
    full = source_indexed(dataset, np.arange(5) + 10)
    assert full.shape == (12,) and (full[subset] == np.arange(5) + 10).all()
    assert (np.delete(full, subset) == -1).all(), full


def test_balanced_subset_reads_the_labels_it_is_given(idx_dir, tmp_path):
    dataset = _folder_dataset(
        idx_dir,
        tmp_path,
        "config.DATA.TRAIN.DATA_LIMIT=4",
        "config.DATA.TRAIN.DATA_LIMIT_SAMPLING.IS_BALANCED=true",
    )
    labels = np.arange(12) % 3
    loaded = dataset.label_objs
    got = subset_source_indices(dataset, labels)
    np.testing.assert_array_equal(got, balanced_sub_sampling(labels, 4, seed=0))
    assert dataset.label_objs is loaded  # put back


@pytest.mark.parametrize("limit", [-1, 10])
def test_no_vissl_subset(idx_dir, tmp_path, limit):
    """All images, or a source that subsets itself (Fashion-MNIST format): position i
    is source index i."""
    if limit < 0:
        dataset = _folder_dataset(idx_dir, tmp_path)
    else:
        cfg = ncf_cfg(idx_dir, tmp_path, "", f"config.DATA.TRAIN.DATA_LIMIT={limit}")
        dataset = extraction_dataset(cfg, TRANSFORMS)
        assert not vissl_subsets(dataset) and len(dataset) == limit
    assert subset_source_indices(dataset) is None
    labels = np.arange(len(dataset))
    assert source_indexed(dataset, labels) is labels
