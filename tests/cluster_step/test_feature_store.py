"""Features on disk (cluster_step.feature_store, shard_extraction.extract_to_shards): shards
keyed by dataset index, atomic and resumed after a kill, identical with 1 and 2
processes, read back memory-mapped by the bounded k-means; precomputed features."""

import json
import os

import numpy as np
import pytest
import torch

from tests.clustering.gloo import (
    assert_rank0_error_on_every_rank,
    outcomes_on_ranks,
    run_on_ranks,
)
from vissl_clusterfit.cluster_step import feature_store as fs, shard_extraction
from vissl_clusterfit.cluster_step.extraction_trunks import SingleFeatureTrunk
from vissl_clusterfit.clustering import bounded_kmeans
from vissl_clusterfit.io import tmp_path_for


N, ROWS, BATCH, K = 150, 40, 16, 5


class _Linear(SingleFeatureTrunk):
    """A 'trunk' whose feature is a fixed linear map of the image; counts images."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(torch.nn.Linear(12, 8), "res5")
        self.seen = 0

    def compute(self, x):
        self.seen += len(x)
        return self.module(x.flatten(1))


def _images(n: int = N):
    g = torch.Generator().manual_seed(1)
    return [{"data": [torch.randn(3, 2, 2, generator=g)]} for _ in range(n)]


def _extract(folder: str, trunk=None, dtype: str = "float32") -> _Linear:
    trunk = trunk or _Linear()
    shard_extraction.extract_to_shards(
        [(trunk, "res5", "avg")], _images(), BATCH, "cpu", folder, ROWS, dtype
    )
    return trunk


def _labels(folder: str, rank: int = 0) -> np.ndarray:
    store = fs.FeatureStore.open(folder)
    path = os.path.join(folder, "labels.npy")
    if rank == 0:
        np.lib.format.open_memmap(path, "w+", np.int64, (store.num_rows,)).flush()
    torch.distributed.barrier() if torch.distributed.is_initialized() else None
    labels = np.lib.format.open_memmap(path, "r+")
    dist = np.zeros(store.num_rows, np.float32)  # each rank its own: unused here
    bounded_kmeans(store, K, labels, dist, niter=5, seed=0, rows_per_centroid=8)
    return np.array(labels)


def _shards(folder: str):
    return {
        f: np.load(os.path.join(folder, f))
        for f in sorted(os.listdir(folder))
        if f.startswith("shard_")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process extraction and its labels."""
    folder = str(tmp_path_factory.mktemp("ref"))
    trunk = _extract(folder)
    return folder, trunk.seen, _labels(folder)


def test_shards_and_manifest_hold_every_row_once_in_dataset_order(reference) -> None:
    folder, seen, _ = reference
    assert seen == N  # no padding duplicates
    with open(os.path.join(folder, fs.MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["num_rows"] == N and manifest["dim"] == 8
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == fs.shard_ranges(
        N, ROWS
    )
    x = torch.stack([im["data"][0] for im in _images()])
    with torch.no_grad():
        expected = _Linear().compute(x).numpy()
    store = fs.FeatureStore.open(folder)
    np.testing.assert_array_equal(store.take(np.arange(N)), expected)
    rows = np.array([3, 39, 40, 41, 149])
    np.testing.assert_array_equal(store.take(rows), expected[rows])
    chunks = list(store.chunks(1, 2))  # rank 1 of 2: shards 1 and 3
    assert [c[0][0] for c in chunks] == [40, 120]
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_killed_extraction_resumes_and_gives_the_same_labels(
    reference, tmp_path, monkeypatch
) -> None:
    ref_folder, _, ref_labels = reference
    folder = str(tmp_path)
    real, calls = fs.write_shard, []

    def killed_after_two(path, features, dtype):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(path)
        real(path, features, dtype)

    monkeypatch.setattr(fs, "write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        _extract(folder)
    monkeypatch.setattr(fs, "write_shard", real)
    assert sorted(os.listdir(folder)) == ["shard_000000.npy", "shard_000001.npy"]
    with pytest.raises(FileNotFoundError, match="incomplete"):
        fs.FeatureStore.open(folder)
    # a leftover of a kill -9 during a write, and a truncated shard, are not trusted
    stale = os.path.basename(tmp_path_for(os.path.join(folder, "shard_000002.npy")))
    stale = stale.replace(f"-{os.getpid()}.tmp", "-999999999.tmp")  # a dead writer
    open(os.path.join(folder, stale), "wb").close()
    with open(os.path.join(folder, "shard_000001.npy"), "r+b") as f:
        f.truncate(100)
    trunk = _extract(folder)
    assert trunk.seen == N - ROWS  # shard 0 kept; 1 (truncated), 2 and 3 extracted
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    assert _shards(folder).keys() == _shards(ref_folder).keys()
    for name, array in _shards(folder).items():
        np.testing.assert_array_equal(array, _shards(ref_folder)[name], err_msg=name)
    np.testing.assert_array_equal(_labels(folder), ref_labels)


def test_float16_shards_halve_the_disk(tmp_path) -> None:
    _extract(str(tmp_path), dtype="float16")
    store = fs.FeatureStore.open(str(tmp_path))
    assert np.load(store.shards[0].file).dtype == np.float16
    assert store.take(np.arange(3)).dtype == np.float32


def _two_ranks(rank: int, out_dir: str) -> None:
    folder = os.path.join(out_dir, "shards")
    trunk = _extract(folder)
    np.save(os.path.join(out_dir, f"seen{rank}.npy"), trunk.seen)
    labels = _labels(folder, rank)
    if rank == 0:
        np.save(os.path.join(out_dir, "labels.npy"), labels)


@pytest.mark.slow  # two spawned processes importing torch: ~30 s on 2 loaded cores
def test_one_and_two_processes_give_identical_shards_and_labels(
    reference, tmp_path
) -> None:
    ref_folder, _, ref_labels = reference
    run_on_ranks(_two_ranks, str(tmp_path), world_size=2)
    seen = [int(np.load(tmp_path / f"seen{r}.npy")) for r in range(2)]
    assert seen == [80, 70], seen  # shards 0, 2 and 1, 3: every image once
    folder = str(tmp_path / "shards")
    for name, array in _shards(folder).items():
        np.testing.assert_array_equal(array, _shards(ref_folder)[name], err_msg=name)
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), ref_labels)


def _rank0_cannot_write_the_manifest(rank: int, out_dir: str) -> None:
    """Both ranks extract their shards; writing the manifest fails on rank 0 (a
    fresh process: the stub stays in it)."""

    def no_space(*args) -> None:
        raise OSError(f"No space left on device: {fs.MANIFEST}")

    fs.write_manifest = no_space
    _extract(os.path.join(out_dir, "shards"))


def test_a_manifest_error_on_rank_0_stops_every_rank_with_its_message(tmp_path):
    """Rank 1 waits for rank 0's manifest; it must raise rank 0's error, not hang."""
    got = outcomes_on_ranks(_rank0_cannot_write_the_manifest, str(tmp_path))
    folder = tmp_path / "shards"
    assert_rank0_error_on_every_rank(
        got,
        "OSError: No space left on device: manifest.json",
        f"writing the manifest of the feature shards in {folder}",
    )
    assert len(_shards(str(folder))) == 4  # every shard was written before


def test_precomputed_vissl_features_with_padding_duplicates(reference, tmp_path):
    ref_folder, _, ref_labels = reference
    x = fs.FeatureStore.open(ref_folder).take(np.arange(N))
    # VISSL's layout: 2 ranks, DistributedSampler interleaving, padded to 76 rows each
    order = np.concatenate([np.arange(N), [0, 1]])
    for r in range(2):
        inds = order[r::2]
        np.save(tmp_path / f"rank{r}_chunk0_train_res5_features.npy", x[inds])
        np.save(tmp_path / f"rank{r}_chunk0_train_res5_inds.npy", inds)
        np.save(tmp_path / f"rank{r}_chunk0_train_res5_targets.npy", inds * 0)
    store = fs.vissl_extracted(str(tmp_path), "train", "res5", N)
    np.testing.assert_array_equal(store.take(np.arange(N)), x)
    labels = np.zeros(N, np.int64)
    dist = np.zeros(N, np.float32)
    bounded_kmeans(store, K, labels, dist, niter=5, seed=0, rows_per_centroid=8)
    np.testing.assert_array_equal(labels, ref_labels)
    with pytest.raises(ValueError, match="cover 150 of 151"):
        fs.vissl_extracted(str(tmp_path), "train", "res5", N + 1)
    with pytest.raises(
        FileNotFoundError,
        match="no VISSL features.*check config.VCF.CLUSTERFIT.FEATURE_SHARDS.PRECOMPUTED",
    ):
        fs.vissl_extracted(str(tmp_path), "train", "res4", N)


def test_precomputed_npy_and_its_sample_list(reference, tmp_path) -> None:
    x = fs.FeatureStore.open(reference[0]).take(np.arange(N))
    np.save(tmp_path / "f.npy", x)
    names = [f"img{i}.jpg" for i in range(N)]
    np.save(tmp_path / "s.npy", np.array(names))
    store = fs.npy_matrix(str(tmp_path / "f.npy"), N, str(tmp_path / "s.npy"), names)
    ids = np.concatenate([c[0] for c in store.chunks()])
    np.testing.assert_array_equal(ids, np.arange(N))
    np.testing.assert_array_equal(store.take(np.array([0, 77, 149])), x[[0, 77, 149]])
    with pytest.raises(ValueError) as err:
        fs.npy_matrix(str(tmp_path / "f.npy"), N, str(tmp_path / "s.npy"), names[::-1])
    for part in (
        f"config.VCF.CLUSTERFIT.FEATURE_SHARDS.SAMPLE_LIST={tmp_path / 's.npy'}",
        f"{N} entries for {N} images, entry 0 is 'img0.jpg' where DATA.TRAIN has "
        f"'img{N - 1}.jpg'",
        "one image path per row",
        f"row i of {tmp_path / 'f.npy'}",
    ):
        assert part in str(err.value), str(err.value)
    with open(tmp_path / "s.txt", "w") as f:
        f.write("\n".join(names[:-1]) + "\n")
    with pytest.raises(
        ValueError, match=f"{N - 1} entries for {N} images, entry {N - 1} is"
    ):
        fs.npy_matrix(str(tmp_path / "f.npy"), N, str(tmp_path / "s.txt"), names)
    with pytest.raises(
        ValueError,
        match=r"config.VCF.CLUSTERFIT.FEATURE_SHARDS.PRECOMPUTED must be \(N=151, D\)",
    ):
        fs.npy_matrix(str(tmp_path / "f.npy"), N + 1)
