"""vissl_clusterfit.io: the one atomic write and its stale temporary files."""

import os
import subprocess
import sys

import pytest

from vissl_clusterfit.io import (
    atomic_write,
    read_json,
    remove_stale_tmp_files,
    tmp_path_for,
)


def test_atomic_write_replaces_whole_and_gets_the_umask_mode(tmp_path):
    path = str(tmp_path / "sub" / "f.json")
    atomic_write(path, lambda f: f.write(b'{"a": 1}'))
    atomic_write(path, lambda f: f.write(b'{"a": 2}'))
    assert read_json(path, None) == {"a": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path / "sub") == ["f.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "f")
    atomic_write(path, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["f"]


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = os.path.basename(tmp_path_for(str(tmp_path / "f.npy")))
    stale = tmp_path / ours.replace(f"-{os.getpid()}.tmp", f"-{dead.pid}.tmp")
    live, foreign = tmp_path / ours, tmp_path / "f.npy.tmp"
    for p in (stale, live, foreign):
        p.write_bytes(b"x")
    assert remove_stale_tmp_files(str(tmp_path)) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, foreign.name])
    assert read_json(str(tmp_path / "missing.json"), {"d": 1}) == {"d": 1}
