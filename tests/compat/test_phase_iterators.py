"""compat/phase_iterators.py: VISSL's phase start without its gc.collect(), with
persistent workers on request, timed; the orders and labels a training sees unchanged."""

import gc
import logging
import multiprocessing
import types

import numpy as np
import pytest
import torch
from vissl.config import AttrDict

import vissl_clusterfit  # noqa: F401  applies the patches
from tests.conftest import data_overrides
from tests.test_imagenet_folder import deepcluster_folder_config
from vissl_clusterfit.cluster_step.training import install_labels
from vissl_clusterfit.compat.phase_iterators import (
    PhaseLoaderSettings,
    build_dataloader,
    recreate_data_iterator,
    workers_persist,
)
from vissl_clusterfit.config import compose_config


def test_patch_is_applied():
    import vissl.data as vd
    from vissl.trainer import train_task

    assert vd.build_dataloader is build_dataloader
    assert train_task.build_dataloader is build_dataloader
    task_class = train_task.SelfSupervisionTask
    assert task_class.recreate_data_iterator is recreate_data_iterator


def _config(persistent: bool = False, gc_each_phase: bool = False) -> AttrDict:
    return AttrDict(
        {
            "VCF": {
                "DATA": {
                    "PERSISTENT_WORKERS": persistent,
                    "GC_EACH_PHASE": gc_each_phase,
                }
            }
        }
    )


class _Task:
    """What recreate_data_iterator uses of VISSL's task: one train loader of 2 forked
    workers over 0..63, batches of 4."""

    def __init__(self, cfg: AttrDict) -> None:
        self.config = cfg
        self.datasets = {"train": types.SimpleNamespace(rebuild_dataloader=lambda: 0)}
        self.dataloaders = {
            "train": torch.utils.data.DataLoader(
                list(range(64)),
                batch_size=4,
                num_workers=2,
                multiprocessing_context="fork",
            )
        }
        self.data_iterator = None
        self.epochs = []

    def set_epoch(self, phase_type, epoch, start_iter, train_phase_idx) -> None:
        self.epochs.append(epoch)


def _workers() -> set:
    return {p.pid for p in multiprocessing.active_children()}


@pytest.mark.parametrize("gc_each_phase", [False, True])
def test_phase_start_stops_the_old_workers_without_a_collection(
    monkeypatch, gc_each_phase
):
    task = _Task(_config(gc_each_phase=gc_each_phase))
    before = _workers()
    recreate_data_iterator(task, "train", 0, False, 0)
    assert next(task.data_iterator).tolist() == [0, 1, 2, 3]  # epoch half read
    first = _workers() - before
    assert len(first) == 2, first
    collections = []
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    try:
        recreate_data_iterator(task, "train", 1, False, 1)
    finally:
        monkeypatch.setattr(gc, "collect", real_collect)
    # VISSL collects at every phase start; the patch only when asked to, and the old
    # workers are gone either way (no reference cycle keeps their iterator alive)
    assert len(collections) == (1 if gc_each_phase else 0)
    alive = _workers()
    assert not first & alive, f"old workers {first & alive} still alive"
    assert len(alive - before) == 2
    assert task.epochs == [0, 1]
    t = task.vcf_iterator_times
    assert t.start <= t.released <= t.collected <= t.end and t.workers == "started"
    parts = t.parts(t.start - 0.5, t.end + 0.25)
    assert parts["before"] == pytest.approx(0.5) and parts["after"] == pytest.approx(
        0.25
    )
    summed = sum(parts[k] for k in ("before", "release", "gc", "create", "after"))
    assert summed == pytest.approx(parts["advance"]), parts
    task.data_iterator = None


def test_settings_default_to_no_collection_and_new_workers():
    assert PhaseLoaderSettings.from_config(AttrDict({})) == PhaseLoaderSettings()
    assert PhaseLoaderSettings.from_config(_config(True, True)) == PhaseLoaderSettings(
        persistent_workers=True, gc_each_phase=True
    )


def _epoch_orders(cfg, dataset, epochs: int = 3):
    """The sample order of ``epochs`` epochs (DistributedSampler.set_epoch between
    them, as VISSL's phase start does), through our build_dataloader."""
    loader = build_dataloader(
        dataset, cfg.DATA.TRAIN, 2, False, "fork", torch.device("cpu")
    )
    orders = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        orders.append([i for b in loader for i in torch.cat(b["data_idx"]).tolist()])
    return loader, orders


def test_persistent_workers_keep_every_epochs_order(gloo_group, idx_dir, tmp_path):
    from vissl.data import build_dataset

    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/pretrain/supervised_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            "config.DATA.TRAIN.DATA_LIMIT=48",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=8",
            *data_overrides(idx_dir),
        ],
        dump_config=False,
    )
    dataset = build_dataset(cfg, "TRAIN")
    runs = {}
    for persistent in (False, True):
        cfg.VCF.DATA.PERSISTENT_WORKERS = persistent
        before = _workers()
        loader, orders = _epoch_orders(cfg, dataset)
        assert workers_persist(loader) == persistent
        # persistent: the same two workers stay after the epochs; otherwise none
        assert len(_workers() - before) == (2 if persistent else 0)
        runs[persistent] = orders
        del loader
    assert runs[True] == runs[False], runs
    for order in runs[True]:
        assert sorted(order) == list(range(48))
    assert len({tuple(o) for o in runs[True]}) == 3, "set_epoch must reshuffle"


def test_deepcluster_labels_reach_persistent_workers(tmp_path):
    from vissl.data import build_dataset

    cfg = deepcluster_folder_config(
        tmp_path,
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=6",
        "config.DATA.TRAIN.TRANSFORMS=[{name: ToTensor}]",
        "config.VCF.DATA.PERSISTENT_WORKERS=True",
    )
    dataset = build_dataset(cfg, "TRAIN")
    loader = build_dataloader(
        dataset, cfg.DATA.TRAIN, 2, False, "fork", torch.device("cpu")
    )
    assert workers_persist(loader)

    def served(data_loader):
        out = {}
        for batch in data_loader:
            for i, y in zip(
                torch.cat(batch["data_idx"]).tolist(), torch.cat(batch["label"])
            ):
                out[i] = int(y)
        return [out[i] for i in range(len(dataset))]

    labels = (np.arange(len(dataset), dtype=np.int64) * 7) % 5
    install_labels_task = types.SimpleNamespace(
        datasets={"train": dataset},
        dataloaders={"train": loader},
        device=torch.device("cpu"),
    )
    served(loader)  # the workers start (and keep) the dataset with folder labels
    install_labels(install_labels_task, cfg, labels, epoch=1, uniform_sampling=False)
    # the old workers would serve the folder's labels
    assert served(install_labels_task.data_iterator) == labels.tolist()
    assert install_labels_task.dataloaders["train"] is not loader


@pytest.mark.parametrize("persistent", [False, True])
def test_a_resume_with_persistent_workers_says_augmentations_differ(caplog, persistent):
    from vissl_clusterfit.hooks.rng_state_hook import RngStateHook

    loader = torch.utils.data.DataLoader(
        list(range(8)), num_workers=1, persistent_workers=persistent
    )
    task = types.SimpleNamespace(checkpoint={"phase_idx": 3}, dataloaders={})
    task.dataloaders["train"] = loader
    with caplog.at_level(logging.WARNING):
        RngStateHook().on_start(task)
    assert ("PERSISTENT_WORKERS=True" in caplog.text) == persistent, caplog.text


@pytest.mark.slow
def test_deepcluster_trains_with_persistent_workers(idx_dir, tmp_path):
    """VISSL's trainer, forked persistent workers and DeepCluster's per-epoch labels
    (installed after the phase's iterator exists, without the uniform sampler)."""
    import os

    from tests.conftest import run_tool
    from vissl_clusterfit.runtime.log_lines import PHASE_START_LINE, parse_lines

    out = str(tmp_path / "dc")
    run_tool(
        [
            "config=vissl_clusterfit/deepcluster/deepcluster_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            "config.VCF.DEEPCLUSTER.NUM_CLUSTERS=8",
            "config.VCF.DEEPCLUSTER.RECLUSTER_EVERY=2",
            "config.VCF.DEEPCLUSTER.UNIFORM_SAMPLING=False",
            "config.DATA.TRAIN.DATA_LIMIT=96",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
            "config.OPTIMIZER.num_epochs=3",
            "config.DATA.NUM_DATALOADER_WORKERS=2",
            "config.MULTI_PROCESSING_METHOD=fork",
            "config.VCF.DATA.PERSISTENT_WORKERS=True",
            *data_overrides(idx_dir, train_labels=False),
        ]
    )
    text = open(os.path.join(out, "log.txt")).read()
    starts = parse_lines(PHASE_START_LINE, text)
    # epoch 0 starts the workers; epoch 1 keeps those of the loader rebuilt with
    # epoch 0's labels; epoch 2 keeps them too (its re-clustering rebuilds afterwards)
    assert [s["workers"] for s in starts] == ["started", "kept", "kept"], starts
    assert all(s["gc"] == 0 for s in starts), starts
    assert text.count("head re-initialised") == 2
