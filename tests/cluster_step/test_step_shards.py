"""The cluster step with FEATURE_SHARDS (features on disk, bounded memory) through
run_cluster_step: same labels as the in-memory route, meta, clean-up, precomputed."""

import os

import numpy as np
import pytest

from tests.cluster_step.test_step import cluster_dataset, ncf_cfg, save_untrained_npre
from tests.clustering.gloo import assert_rank0_error_on_every_rank, outcomes_on_ranks
from vissl_clusterfit.cluster_step import (
    ClusterFitParams,
    disk_route,
    npre as npre_loading,
)
from vissl_clusterfit.data.cluster_labels import label_paths


SHARDS = [
    "config.VCF.CLUSTERFIT.FEATURE_SHARDS.ENABLED=true",
    "config.VCF.CLUSTERFIT.FEATURE_SHARDS.ROWS=48",
]
PREP = ["config.VCF.CLUSTERFIT.PCA_DIM=16", "config.VCF.CLUSTERFIT.NITER=10"]


@pytest.fixture(scope="module")
def npre(tmp_path_factory):
    return save_untrained_npre(str(tmp_path_factory.mktemp("npre")))


def _files(cfg, name="clusterfit"):
    out = os.path.join(cfg.CHECKPOINT.DIR, "clusterfit")
    return out, {
        k: np.load(p)
        for k, p in label_paths(out, name).items()
        if k in ("labels", "centroids", "distances")
    }


def test_bounded_route_writes_the_in_memory_routes_labels(idx_dir, npre, tmp_path):
    mem_cfg = ncf_cfg(idx_dir, tmp_path / "mem", npre, *PREP)
    cluster_dataset(mem_cfg)
    _, ref = _files(mem_cfg)
    cfg = ncf_cfg(idx_dir, tmp_path / "disk", npre, *PREP, *SHARDS)
    meta = cluster_dataset(cfg)
    out, got = _files(cfg)
    for key in ("labels", "centroids", "distances"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    assert meta["kmeans"]["backend"] in ("faiss-cpu", "faiss-gpu", "torch-cuda")
    assert meta["kmeans"]["training_sample_rows"] == 120  # 6 x 256 > N: all rows
    assert meta["kmeans"]["rows_per_centroid"] == 256
    assert set(meta["phase_time_s"]) >= {"read_sample", "pca", "train", "assign"}
    assert meta["settings"]["feature_shards"] == {"dtype": "float32", "kmeans": "auto"}
    # shards and scratch arrays deleted once the labels are written
    assert sorted(os.listdir(out)) == sorted(
        os.path.basename(p) for p in meta["files"].values()
    ), os.listdir(out)


def test_kept_shards_are_clustered_again_as_precomputed_features(
    idx_dir, npre, tmp_path, monkeypatch
):
    cfg = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        *PREP,
        *SHARDS,
        "config.VCF.CLUSTERFIT.FEATURE_SHARDS.KEEP=true",
    )
    cluster_dataset(cfg)
    out, ref = _files(cfg)
    (folder,) = [f for f in os.listdir(out) if f.startswith("features_")]
    shards = sorted(f for f in os.listdir(os.path.join(out, folder)) if "shard_" in f)
    assert len(shards) == 3  # 120 images, 48 per shard
    x = np.concatenate([np.load(os.path.join(out, folder, f)) for f in shards])
    np.save(tmp_path / "features.npy", x)
    pre = ncf_cfg(
        idx_dir,
        tmp_path,
        "",
        *PREP,
        f"config.VCF.CLUSTERFIT.FEATURE_SHARDS.PRECOMPUTED={tmp_path}/features.npy",
        "config.VCF.CLUSTERFIT.NAME=pre",
    )
    meta = cluster_dataset(pre)
    _, got = _files(pre, "pre")
    np.testing.assert_array_equal(got["labels"], ref["labels"])
    assert meta["settings"]["npre"] == []  # no N_pre was needed
    # another K on the same features: the kept shards are reused, N_pre not even built
    monkeypatch.setattr(
        npre_loading, "build_npre_trunk", lambda *a, **k: pytest.fail("re-extracted")
    )
    other = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        *PREP,
        *SHARDS,
        "config.VCF.CLUSTERFIT.FEATURE_SHARDS.KEEP=true",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=4",
        "config.VCF.CLUSTERFIT.NAME=k4",
    )
    assert cluster_dataset(other)["num_clusters"] == 4


def test_bad_shard_settings_name_the_key(idx_dir, npre, tmp_path):
    for extra, match in [
        (["config.VCF.CLUSTERFIT.FEATURE_SHARDS.DTYPE=int8"], "DTYPE=int8"),
        (["config.VCF.CLUSTERFIT.FEATURE_SHARDS.KMEANS=gpu"], "KMEANS=gpu"),
        (["config.VCF.CLUSTERFIT.KMEANS_BACKEND=distributed"], "KMEANS_BACKEND=faiss"),
    ]:
        cfg = ncf_cfg(idx_dir, tmp_path, npre, *SHARDS, *extra)
        with pytest.raises(ValueError, match=match):
            ClusterFitParams.from_config(cfg)
    cfg = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        "config.VCF.CLUSTERFIT.FEATURE_SHARDS.PRECOMPUTED=/nonexistent.npy",
    )
    with pytest.raises(FileNotFoundError, match="PRECOMPUTED=/nonexistent.npy"):
        ClusterFitParams.from_config(cfg)


def test_sample_list_is_checked_against_the_data_limit_subset(idx_dir, tmp_path):
    """SAMPLE_LIST lists DATA.TRAIN after DATA_LIMIT (VISSL's seeded subset of the
    folder), not the whole folder."""
    from vissl.data.data_helper import unbalanced_sub_sampling

    from tests.data.test_dataset_identity import folder_cfg, image_folder

    folder = image_folder(str(tmp_path / "images"))  # 12 images, 2 class folders
    files = [
        os.path.join(folder, f"class{c}", f"{i:02d}.png")
        for c in (0, 1)
        for i in range(c, 12, 2)
    ]
    subset = unbalanced_sub_sampling(12, 8, seed=0)  # DATA_LIMIT=8, SEED 0
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(8, 6)))
    listed = tmp_path / "samples.txt"

    def cfg(name):
        return folder_cfg(
            idx_dir,
            tmp_path / "out",
            "",
            folder,
            "config.DATA.TRAIN.DATA_LIMIT=8",
            "config.VCF.CLUSTERFIT.PCA_DIM=4",
            f"config.VCF.CLUSTERFIT.FEATURE_SHARDS.PRECOMPUTED={tmp_path}/f.npy",
            f"config.VCF.CLUSTERFIT.FEATURE_SHARDS.SAMPLE_LIST={listed}",
            f"config.VCF.CLUSTERFIT.NAME={name}",
        )

    listed.write_text("\n".join(files[i] for i in subset) + "\n")
    assert cluster_dataset(cfg("subset"))["num_samples"] == 8
    listed.write_text("\n".join(files) + "\n")  # the folder, DATA_LIMIT ignored
    with pytest.raises(ValueError, match="SAMPLE_LIST=.*12 entries for 8 images"):
        cluster_dataset(cfg("folder"))


def _scratch_is_a_file(rank: int, out_dir: str) -> None:
    disk_route.label_arrays(os.path.join(out_dir, "scratch"), 10)


def test_label_arrays_error_on_rank_0_stops_every_rank_with_its_message(tmp_path):
    """Only rank 0 creates the label arrays (here it cannot: the scratch folder is a
    file); rank 1 waits for them and must raise rank 0's error, not hang."""
    scratch = tmp_path / "scratch"
    scratch.write_text("not a folder")
    got = outcomes_on_ranks(_scratch_is_a_file, str(tmp_path))
    assert_rank0_error_on_every_rank(
        got,
        f"FileExistsError: [Errno 17] File exists: '{scratch}'",
        f"creating the label arrays in {scratch}",
    )
