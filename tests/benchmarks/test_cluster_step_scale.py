"""benchmarks.cluster_step_scale: the GPU command's dry CPU equivalent (torch route,
float16 shards, W = 1, time guard) writes its results with every phase; shards do not
depend on the number of writers; the time guard stops a run and keeps what it has."""

import json
import os

import numpy as np
import pytest

from benchmarks import cluster_step_scale as scale


PHASES = [
    "read_shards",
    "read_sample",
    "pca",
    "train",
    "broadcast",
    "assign",
    "fixup",
    "write",
]


def _args(tmp_path, *extra: str):
    return [
        "--n",
        "3000",
        "--d",
        "48",
        "--k",
        "20",
        "--rows-per-centroid",
        "40",
        "--pca-dim",
        "16",
        "--niter",
        "5",
        "--dtype",
        "float16",
        "--shard-rows",
        "1024",
        "--worlds",
        "1",
        "--workdir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]


@pytest.mark.slow  # one spawned rank imports the plugin (~20 s on 2 busy cores)
def test_dry_gpu_command_on_cpu_writes_every_phase(tmp_path) -> None:
    args = _args(tmp_path, "--backend", "torch", "--device", "cpu", "--max-s", "600")
    scale.main(args + ["--name", "dry"])
    payload = json.loads((tmp_path / "out" / "dry.json").read_text())
    (summary,) = payload["data"]["summary"]
    assert summary["status"] == "complete", summary
    assert summary["backend"] == "torch-cpu", summary
    assert summary["sample_rows"] == 800
    assert summary["labels_equal_reference"] is None  # one W: nothing to compare
    assert summary["assign_gpu_bound_gib"] > 0, summary
    phases = [r["phase"] for r in payload["tables"][0]["rows"]]
    assert phases == PHASES, phases
    labels = np.load(tmp_path / "work" / "run_dry_w1" / "scale_labels.npy")
    assert labels.shape == (3000,) and 0 <= labels.min() and labels.max() < 20
    assert len(np.unique(labels)) == 20  # empty clusters re-seeded
    md = (tmp_path / "out" / "dry.md").read_text()
    assert "--backend torch --device cpu" in md and "| assign |" in md, md


def test_shards_do_not_depend_on_the_number_of_writers(tmp_path) -> None:
    files = {}
    for workers in (1, 3):
        args = scale.parse_args(
            _args(tmp_path / str(workers), "--workers", str(workers))
        )
        args.t0 = 0.0
        made = scale.write_synthetic_shards(args)
        assert made["complete"] and made["workers"] == workers, made
        names = sorted(f for f in os.listdir(args.shards) if f.startswith("shard_"))
        assert len(names) == 3, names
        store = scale.plugin.feature_store.FeatureStore.open(args.shards)
        assert (store.num_rows, store.dim) == (3000, 48)
        files[workers] = [np.load(os.path.join(args.shards, f)) for f in names]
    for a, b in zip(files[1], files[3]):
        assert a.dtype == np.float16 and np.array_equal(a, b)


def test_time_guard_stops_the_run(tmp_path) -> None:
    args = scale.parse_args(_args(tmp_path, "--max-s", "1e-9"))
    args.t0 = 0.0  # long past: the guard fires at once
    run = scale.run_world(args, 1)
    assert run["status"].startswith("stopped by --max-s"), run
    assert "labels" not in run and run["wall_s"] < 60, run


def test_every_phase_end_is_on_disk_before_the_next_phase(tmp_path) -> None:
    path = str(tmp_path / "rank0.json")
    with scale.PeakRSS() as peak:
        record = scale.PhaseRecorder(path, peak, {"status": "running"})
        record("read_shards")
        first = json.loads(open(path).read())
        record("read_sample")
    second = json.loads(open(path).read())
    assert [p["phase"] for p in first["phases"]] == ["read_shards"], first
    assert [p["phase"] for p in second["phases"]] == PHASES[:2], second
    assert second["status"] == "running" and second["phases"][1]["time_s"] >= 0
