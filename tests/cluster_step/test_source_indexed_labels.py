"""DeepCluster's labels on a VISSL data source that VISSL itself subsets (DATA_LIMIT on
a disk_folder): position i of the served data must get labels[i]."""

import types

import numpy as np

import vissl_clusterfit  # noqa: F401
from tests.test_imagenet_folder import deepcluster_folder_config
from vissl_clusterfit.cluster_step.training import install_labels


def test_labels_follow_vissl_subset_positions(tmp_path):
    from vissl.data import build_dataset

    cfg = deepcluster_folder_config(
        tmp_path,
        "config.DATA.TRAIN.DATA_LIMIT=10",
        "config.DATA.TRAIN.DATA_LIMIT_SAMPLING.SEED=3",
    )
    dataset = build_dataset(cfg, "TRAIN")
    assert len(dataset) == 10 and len(dataset.data_objs[0]) == 24
    labels = np.arange(10, dtype=np.int64) % 4
    task = types.SimpleNamespace(
        datasets={"train": dataset}, dataloaders={"train": []}, device="cpu"
    )
    install_labels(task, cfg, labels, epoch=0, uniform_sampling=False)
    served = [int(dataset[i]["label"][0]) for i in range(10)]
    assert served == labels.tolist(), served
