import os
import subprocess
import sys

import numpy as np
import pytest

from vissl_clusterfit.data import cluster_labels as cl
from vissl_clusterfit.io import tmp_path_for


def _write(tmp_path, labels, k=3, name="cf"):
    return cl.write_label_files(
        str(tmp_path),
        name,
        labels,
        np.zeros((k, 2)),
        np.zeros(len(labels)),
        {"num_clusters": k},
    )


def test_write_then_load_round_trip(tmp_path):
    paths = _write(tmp_path, np.array([0, 2, 1, 2]))
    labels = cl.load_cluster_labels(paths["labels"], expected_len=4)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 2, 1, 2]
    meta = cl.read_meta(str(tmp_path), "cf")
    assert meta["num_clusters"] == 3 and meta["labels_sha256"] == cl.file_sha256(
        paths["labels"]
    )
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # VISSL's own disk_filelist label loading reads the same file
    assert np.load(paths["labels"]).tolist() == [0, 2, 1, 2]


def test_length_and_range_errors(tmp_path):
    paths = _write(tmp_path, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="has 3 labels but .* has 5 samples"):
        cl.load_cluster_labels(paths["labels"], expected_len=5)
    np.save(paths["labels"], np.array([0, 1, 7]))
    with pytest.raises(ValueError, match=r"labels up to 7, outside \[0, 3\)"):
        cl.load_cluster_labels(paths["labels"], expected_len=3)
    # in range, but a -1 the meta does not list: the count is the problem, not K
    np.save(paths["labels"], np.array([0, -1, 2]))
    with pytest.raises(ValueError) as err:
        cl.load_cluster_labels(paths["labels"], expected_len=3)
    assert "1 labels are -1 (images that did not decode) but its meta lists 0" in str(
        err.value
    ) and "outside" not in str(err.value), str(err.value)
    assert f"delete {tmp_path / 'cf'}_* to re-cluster" in str(err.value)
    foreign = tmp_path / "mine.npy"  # no meta beside it: no K, no bad_images
    np.save(foreign, np.array([3, -2, -1]))
    with pytest.raises(ValueError) as err:
        cl.load_cluster_labels(str(foreign))
    for part in ("labels down to -2", "1 labels are -1", "there is no meta file"):
        assert part in str(err.value), str(err.value)
    assert "None" not in str(err.value), str(err.value)
    np.save(paths["labels"], np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="1-D integer"):
        cl.load_cluster_labels(paths["labels"])
    with pytest.raises(FileNotFoundError, match="ENABLED=true"):
        cl.load_cluster_labels(str(tmp_path / "missing_labels.npy"))


def test_interrupted_write_leaves_no_complete_set(tmp_path, monkeypatch):
    _write(tmp_path, np.array([0, 1, 2]))
    calls = {"n": 0}
    real_save = np.save

    def failing_save(f, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # die after the labels, while writing the centroids
            raise KeyboardInterrupt("killed")
        return real_save(f, arr, *a, **k)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, np.array([2, 1, 0]))
    monkeypatch.undo()
    assert cl.read_meta(str(tmp_path), "cf") is None  # no meta: the set is incomplete
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_fingerprint_is_stable_and_sensitive():
    a = cl.fingerprint({"k": 10, "layer": "res5", "x": [1, 2]})
    assert a == cl.fingerprint({"layer": "res5", "x": [1, 2], "k": 10})
    assert a != cl.fingerprint({"k": 11, "layer": "res5", "x": [1, 2]})


def test_label_files_get_the_umask_mode_and_meta_lists_written_files(tmp_path):
    old = os.umask(0o022)
    try:
        paths = _write(tmp_path, np.array([0, 1, 2]))
    finally:
        os.umask(old)
    for path in paths.values():
        assert os.stat(path).st_mode & 0o777 == 0o644, path  # mkstemp alone: 0600
    meta = cl.read_meta(str(tmp_path), "cf")
    # no PCA and no teacher logits were written: the meta does not list them
    assert sorted(meta["files"]) == ["centroids", "distances", "labels", "meta"]
    assert all(os.path.isfile(p) for p in meta["files"].values())


def test_stale_tmp_files_of_a_killed_write_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = os.path.basename(tmp_path_for(str(tmp_path / "cf_labels.npy")))
    stale = tmp_path / ours.replace(f"-{os.getpid()}.tmp", f"-{dead.pid}.tmp")
    stale.write_bytes(b"half a file")
    live = tmp_path / ours.replace("cf_labels", "other_labels")  # a live writer's
    live.write_bytes(b"x")
    foreign = tmp_path / "cf_labels.npy.abc123.tmp"  # not our pattern: left alone
    foreign.write_bytes(b"x")
    _write(tmp_path, np.array([0, 1, 2]))
    assert not stale.exists() and live.exists() and foreign.exists()


def test_unreadable_meta_and_deleted_labels_name_the_file(tmp_path):
    paths = _write(tmp_path, np.array([0, 1, 2]))
    os.unlink(paths["labels"])
    meta = cl.read_meta(str(tmp_path), "cf")
    with pytest.raises(
        FileNotFoundError, match="missing although its meta file exists"
    ):
        cl.verify_label_set(str(tmp_path), "cf", meta)
    with open(paths["meta"], "w") as f:
        f.write('{"num_clusters": 3, "trunc')  # a truncated meta
    with pytest.raises(ValueError, match="cf_meta.json is unreadable"):
        cl.read_meta(str(tmp_path), "cf")
