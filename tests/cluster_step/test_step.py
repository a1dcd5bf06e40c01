"""ClusterFit's cluster step in-process: labels, reuse, refusal, every bad input."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vissl_clusterfit  # noqa: F401
from tests.clustering.gloo import assert_rank0_error_on_every_rank, outcomes_on_ranks
from tests.conftest import data_overrides
from vissl_clusterfit import clustering
from vissl_clusterfit.cluster_step import (
    ClusterFitParams,
    extraction as fx,
    extraction_trunks,
    npre as npre_loading,
    run_cluster_step,
)
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.data.cluster_labels import label_paths, read_meta
from vissl_clusterfit.experiments.checkpoints import save_untrained_trunk


def cluster_dataset(cfg):
    return run_cluster_step(cfg, ClusterFitParams.from_config(cfg))


def output_dir(cfg):
    return os.path.join(cfg.CHECKPOINT.DIR, "clusterfit")  # OUTPUT_DIR="" default


def save_untrained_npre(
    folder: str,
    seed: int = 0,
    config: str = "vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
) -> str:
    """An N_pre checkpoint in VISSL's layout + its train_config.yaml (no training)."""
    _, cfg = compose_config([f"config={config}"], dump_config=False)
    path = os.path.join(folder, "model_final_checkpoint_phase0.torch")
    return save_untrained_trunk(path, cfg.MODEL, seed, train_config=cfg)


@pytest.fixture(scope="module")
def npre(tmp_path_factory):
    return save_untrained_npre(str(tmp_path_factory.mktemp("npre")))


def ncf_cfg(idx_dir, out, npre, *extra):
    _, cfg = compose_config(
        [
            "config=vissl_clusterfit/clusterfit/ncf_fmnist_cpu",
            f"config.CHECKPOINT.DIR={out}",
            f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
            "config.DATA.TRAIN.DATA_LIMIT=120",
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=6",
            "config.VCF.CLUSTERFIT.BATCHSIZE=32",
            *data_overrides(idx_dir, train_labels=False),
            *extra,
        ],
        dump_config=False,
    )
    return cfg


def test_cluster_dataset_writes_valid_labels_and_reuses(
    idx_dir, npre, tmp_path, monkeypatch
):
    cfg = ncf_cfg(idx_dir, tmp_path, npre)
    meta = cluster_dataset(cfg)
    paths = label_paths(output_dir(cfg), "clusterfit")
    labels = np.load(paths["labels"])
    assert labels.shape == (120,) and labels.min() >= 0 and labels.max() < 6
    assert meta["num_clusters"] == 6 and meta["num_samples"] == 120
    assert meta["metrics"]["num_empty"] == 0
    assert 0.0 <= meta["metrics"]["nmi"] <= 1.0  # ground truth exists for this source
    assert meta["settings"]["npre"][0]["CHECKPOINT_SHA256"]
    centroids = np.load(paths["centroids"])
    assert centroids.shape == (6, meta["clustered_dim"])
    # second run: nothing is recomputed
    monkeypatch.setattr(
        npre_loading, "build_npre_trunk", lambda *a, **k: pytest.fail("recomputed")
    )
    again = cluster_dataset(cfg)
    assert again["fingerprint"] == meta["fingerprint"]


def _rank0_cannot_write_the_labels(rank: int, out_dir: str) -> None:
    """The disk route on 2 ranks with the features and k-means stubbed; writing the
    label files fails on rank 0 (a fresh process: the stubs stay in it)."""
    from vissl_clusterfit.cluster_step import step

    def no_space(*args, **kwargs):
        raise OSError("No space left on device: clusterfit_labels.npy")

    step.disk_route = SimpleNamespace(
        open_features=lambda *args: (None, None),
        scratch_dir=lambda *args: out_dir,
        cluster_from_disk=lambda *args: (None, {}),
        clean_up=lambda *args: None,
    )
    step.write_labels = no_space
    params = SimpleNamespace(assign_test=False, shards=SimpleNamespace(keep=False))
    step._run_from_disk(None, params, [], "cpu", {}, "fp")


def test_an_error_on_rank_0_stops_every_rank_with_its_message(tmp_path):
    """Only rank 0 writes the label files; the other ranks wait for its meta and
    must raise its error instead of hanging."""
    got = outcomes_on_ranks(_rank0_cannot_write_the_labels, str(tmp_path))
    error = "OSError: No space left on device: clusterfit_labels.npy"
    assert_rank0_error_on_every_rank(got, error, "writing the label files")


def test_other_settings_are_refused(idx_dir, npre, tmp_path):
    cluster_dataset(ncf_cfg(idx_dir, tmp_path, npre))
    with pytest.raises(ValueError, match=r"other settings \(num_clusters: 6 -> 7"):
        cluster_dataset(
            ncf_cfg(idx_dir, tmp_path, npre, "config.VCF.CLUSTERFIT.NUM_CLUSTERS=7")
        )
    with pytest.raises(ValueError, match="dataset.limit: 120 -> 100"):
        cluster_dataset(
            ncf_cfg(idx_dir, tmp_path, npre, "config.DATA.TRAIN.DATA_LIMIT=100")
        )


def test_label_source_serves_labels_and_checks_length(idx_dir, npre, tmp_path):
    from vissl.data import build_dataset

    cfg = ncf_cfg(idx_dir, tmp_path, npre)
    ds = build_dataset(cfg, "TRAIN")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ds.load_labels()
    cluster_dataset(cfg)
    from vissl_clusterfit.data.label_sources import reload_labels

    reload_labels(ds)
    labels = np.load(label_paths(output_dir(cfg), "clusterfit")["labels"])
    assert [int(ds[i]["label"][0]) for i in range(5)] == labels[:5].tolist()
    # the same files read by a dataset of another length are refused
    other = ncf_cfg(idx_dir, tmp_path, npre, "config.DATA.TRAIN.DATA_LIMIT=100")
    with pytest.raises(ValueError, match="has 120 labels but DATA.TRAIN"):
        build_dataset(other, "TRAIN").load_labels()


@pytest.mark.parametrize(
    "override,error,match",
    [
        (
            "config.VCF.CLUSTERFIT.FEATURE_LAYER=res9",
            ValueError,
            "available: conv1, res1, res2",
        ),
        (
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=500",
            ValueError,
            "NUM_CLUSTERS=500 is larger",
        ),
        ("config.VCF.CLUSTERFIT.POOLING=median", ValueError, "POOLING=median"),
        (
            "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT=/nonexistent/x.torch",
            FileNotFoundError,
            "/nonexistent/x.torch does not exist",
        ),
        (
            "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT=",
            ValueError,
            "NPRE_CHECKPOINT is empty",
        ),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(
    idx_dir, npre, tmp_path, override, error, match
):
    cfg = ncf_cfg(idx_dir, tmp_path, npre, override)
    with pytest.raises(error, match=match):
        cluster_dataset(cfg)
    assert read_meta(output_dir(cfg), "clusterfit") is None


def test_corrupt_checkpoint(idx_dir, tmp_path):
    bad = tmp_path / "bad.torch"
    bad.write_bytes(b"this is not a checkpoint")
    (tmp_path / "train_config.yaml").write_text("MODEL: {}\n")
    with pytest.raises(
        ValueError,
        match="bad.torch is corrupt.*point config.VCF."
        "CLUSTERFIT.NPRE_CHECKPOINT at a good",
    ):
        cluster_dataset(ncf_cfg(idx_dir, tmp_path / "out", str(bad)))


def test_corrupt_extra_checkpoint_names_its_own_key(idx_dir, npre, tmp_path):
    bad = tmp_path / "bad.torch"
    bad.write_bytes(b"this is not a checkpoint")
    extra = f"config.VCF.CLUSTERFIT.EXTRA_NPRE=[{{CHECKPOINT: {bad}}}]"
    with pytest.raises(ValueError) as err:
        cluster_dataset(ncf_cfg(idx_dir, tmp_path / "out", npre, extra))
    assert "point config.VCF.CLUSTERFIT.EXTRA_NPRE[0].CHECKPOINT at" in str(err.value)


def test_missing_model_config_next_to_checkpoint(idx_dir, npre, tmp_path):
    lonely = tmp_path / "lonely.torch"
    lonely.write_bytes(open(npre, "rb").read())
    with pytest.raises(FileNotFoundError, match="NPRE_CONFIG"):
        cluster_dataset(ncf_cfg(idx_dir, tmp_path / "out", str(lonely)))
    # with NPRE_CONFIG it works
    meta = cluster_dataset(
        ncf_cfg(
            idx_dir,
            tmp_path / "out",
            str(lonely),
            "config.VCF.CLUSTERFIT.NPRE_CONFIG=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
        )
    )
    assert meta["num_samples"] == 120


def test_nan_features_are_refused(idx_dir, npre, tmp_path, monkeypatch):
    real = fx.extract_features

    def nan_features(*a, **k):
        f = real(*a, **k)
        f[3, 0] = np.nan
        return f

    monkeypatch.setattr(fx, "extract_features", nan_features)
    cfg = ncf_cfg(idx_dir, tmp_path, npre)
    with pytest.raises(ValueError, match="NaN|inf"):
        cluster_dataset(cfg)
    assert read_meta(output_dir(cfg), "clusterfit") is None


def test_killed_run_completes_with_same_labels(idx_dir, npre, tmp_path, monkeypatch):
    reference = cluster_dataset(ncf_cfg(idx_dir, tmp_path / "ref", npre))
    ref_labels = np.load(reference["files"]["labels"])
    cfg = ncf_cfg(idx_dir, tmp_path / "killed", npre)
    for stage in ("extract_features", "run_kmeans"):
        target = fx if stage == "extract_features" else clustering
        with monkeypatch.context() as m:
            m.setattr(
                target,
                stage,
                lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt(stage)),
            )
            with pytest.raises(KeyboardInterrupt):
                cluster_dataset(cfg)
        assert read_meta(output_dir(cfg), "clusterfit") is None
    done = cluster_dataset(cfg)
    np.testing.assert_array_equal(np.load(done["files"]["labels"]), ref_labels)


def test_multitask_concatenates_features_and_assigns_test(idx_dir, npre, tmp_path):
    second = save_untrained_npre(str(tmp_path / "npre2"), seed=1)
    cfg = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        f"config.VCF.CLUSTERFIT.EXTRA_NPRE=[{{CHECKPOINT: {second}, FEATURE_LAYER: res4}}]",
        "config.VCF.CLUSTERFIT.ASSIGN_TEST=true",
        "config.DATA.TEST.DATA_LIMIT=50",
    )
    meta = cluster_dataset(cfg)
    assert meta["feature_dim"] == 128 + 64  # res5 (128) + res4 (64), avg-pooled
    assert meta["settings"]["npre_features"] == "l2_each_then_concat"
    test_labels = np.load(label_paths(output_dir(cfg), "clusterfit_test")["labels"])
    assert test_labels.shape == (50,) and test_labels.max() < 6


def test_distributed_backend_in_one_process(idx_dir, npre, tmp_path):
    cfg = ncf_cfg(
        idx_dir,
        tmp_path,
        npre,
        "config.VCF.CLUSTERFIT.KMEANS_BACKEND=distributed",
        "config.VCF.CLUSTERFIT.PCA_DIM=16",
    )
    meta = cluster_dataset(cfg)
    labels = np.load(label_paths(output_dir(cfg), "clusterfit")["labels"])
    assert labels.shape == (120,) and sorted(np.unique(labels)) == list(range(6))
    assert meta["settings"]["kmeans_backend"] == "distributed"
    assert meta["clustered_dim"] == 16 and meta["metrics"]["num_empty"] == 0


def test_bad_kmeans_backend(idx_dir, npre, tmp_path):
    with pytest.raises(ValueError, match="KMEANS_BACKEND=spark is not supported"):
        cluster_dataset(
            ncf_cfg(
                idx_dir, tmp_path, npre, "config.VCF.CLUSTERFIT.KMEANS_BACKEND=spark"
            )
        )
    assert not os.path.exists(output_dir(ncf_cfg(idx_dir, tmp_path, npre)))


def test_pooling():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    torch.testing.assert_close(
        extraction_trunks.pool_features(x, "avg"), torch.tensor([[5.5, 17.5]])
    )
    torch.testing.assert_close(
        extraction_trunks.pool_features(x, "max"), torch.tensor([[11.0, 23.0]])
    )
    assert extraction_trunks.pool_features(x, "flatten").shape == (1, 24)


def test_distill_needs_a_supervised_teacher_and_writes_its_logits(
    idx_dir, npre, tmp_path
):
    # RotNet is self-supervised: distillation is not a valid baseline (ClusterFit Sec. 4)
    with pytest.raises(ValueError, match="not a supervised classification"):
        cluster_dataset(
            ncf_cfg(idx_dir, tmp_path, npre, "config.VCF.CLUSTERFIT.DISTILL=true")
        )
    supervised = save_untrained_npre(
        str(tmp_path / "sup"), config="vissl_clusterfit/pretrain/supervised_fmnist_cpu"
    )
    cfg = ncf_cfg(idx_dir, tmp_path, supervised, "config.VCF.CLUSTERFIT.DISTILL=true")
    meta = cluster_dataset(cfg)
    logits = np.load(label_paths(output_dir(cfg), "clusterfit")["teacher_logits"])
    assert logits.shape == (120, 10) and np.isfinite(logits).all()  # 10 classes
    assert meta["settings"]["distill"] is True


def test_prototype_and_per_label_baselines(idx_dir, npre, tmp_path):
    """Prototype (Sec. 4): one pseudo-label per class, the nearest class mean; per-label
    (Sec. 5.2): each class clustered on its own, ids in per-class blocks."""
    labels_key = (
        "config.VCF.CLUSTERFIT.PRETRAIN_LABELS.LABEL_SOURCES=[vcf_fashion_mnist]"
    )
    paths_key = f"config.VCF.CLUSTERFIT.PRETRAIN_LABELS.LABEL_PATHS=[{idx_dir}]"
    with pytest.raises(ValueError, match="NUM_CLUSTERS=10 \\(now 6\\)"):
        cluster_dataset(
            ncf_cfg(
                idx_dir,
                tmp_path / "p",
                npre,
                "config.VCF.CLUSTERFIT.METHOD=prototype",
                labels_key,
                paths_key,
            )
        )
    cfg = ncf_cfg(
        idx_dir,
        tmp_path / "proto",
        npre,
        "config.VCF.CLUSTERFIT.METHOD=prototype",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=10",
        labels_key,
        paths_key,
    )
    meta = cluster_dataset(cfg)
    proto = np.load(label_paths(output_dir(cfg), "clusterfit")["labels"])
    truth = fx.ground_truth(fx.extraction_dataset(cfg, cfg.VCF.CLUSTERFIT.TRANSFORMS))
    assert meta["settings"]["method"] == "prototype" and proto.max() < 10
    # by hand: nearest class mean of the pre-processed features
    assert (proto == truth).mean() > 0.3  # most images keep a class near their own
    cfg = ncf_cfg(
        idx_dir,
        tmp_path / "per_label",
        npre,
        "config.VCF.CLUSTERFIT.METHOD=per_label",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=20",
        labels_key,
        paths_key,
    )
    cluster_dataset(cfg)
    per_label = np.load(label_paths(output_dir(cfg), "clusterfit")["labels"])
    # ids come in per-class blocks: every pseudo-label holds images of one class only
    for pseudo in np.unique(per_label):
        assert len(np.unique(truth[per_label == pseudo])) == 1
    assert per_label.max() < 20
    with pytest.raises(ValueError, match="PRETRAIN_LABELS.LABEL_SOURCES"):
        ClusterFitParams.from_config(
            ncf_cfg(idx_dir, tmp_path, npre, "config.VCF.CLUSTERFIT.METHOD=per_label")
        )


@pytest.mark.parametrize(
    "override,error,match",
    [
        (
            "config.VCF.CLUSTERFIT.NUM_CLUSTERS=-5",
            ValueError,
            "NUM_CLUSTERS=-5 must be",
        ),
        ("config.VCF.CLUSTERFIT.NUM_CLUSTERS=0", ValueError, "NUM_CLUSTERS=0 must be"),
        ("config.VCF.CLUSTERFIT.NITER=0", ValueError, "NITER=0 must be an integer"),
        ("config.VCF.CLUSTERFIT.ORDER=pca_first", ValueError, "ORDER=pca_first"),
        ("config.DATA.TRAIN.DATA_PATHS=/some/folder", ValueError, "must be a list"),
    ],
)
def test_every_key_is_validated_before_any_work(
    idx_dir, npre, tmp_path, monkeypatch, override, error, match
):
    monkeypatch.setattr(
        fx, "extract_features", lambda *a, **k: pytest.fail("extraction started")
    )
    with pytest.raises(error, match=match):
        cluster_dataset(ncf_cfg(idx_dir, tmp_path, npre, override))


def test_checkpoint_directory_and_architecture_mismatch_messages(
    idx_dir, npre, tmp_path
):
    with pytest.raises(ValueError, match="is a directory: point it at a checkpoint"):
        ClusterFitParams.from_config(ncf_cfg(idx_dir, tmp_path, os.path.dirname(npre)))
    wide = save_untrained_npre(str(tmp_path / "wide"))
    cfg = ncf_cfg(
        idx_dir,
        tmp_path / "out",
        wide,
        "config.VCF.CLUSTERFIT.NPRE_CONFIG=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
        "config.VCF.CLUSTERFIT.NPRE_OVERRIDES=['config.MODEL.TRUNK.VCF_RESNET.WIDTH=32']",
    )
    with pytest.raises(ValueError) as err:
        cluster_dataset(cfg)
    message = str(err.value)
    assert "tensors differ in shape" in message and "Set NPRE_CONFIG" in message
    assert len(message.splitlines()) == 1 and len(message) < 1000, message


class _Scaled(extraction_trunks.SingleFeatureTrunk):
    """A 'trunk' whose one feature is a fixed linear map of the image times ``scale``."""

    def __init__(self, dim: int, scale: float, seed: int) -> None:
        torch.manual_seed(seed)
        super().__init__(torch.nn.Linear(12, dim), "res5")
        self.scale = scale

    def compute(self, x):
        return self.module(x.flatten(1)) * self.scale


def test_multitask_features_are_l2_normalised_per_npre_before_concatenation():
    images = [{"data": [torch.randn(3, 2, 2)]} for _ in range(10)]
    small, huge = _Scaled(4, 1.0, 0), _Scaled(32, 1000.0, 1)
    feats = fx.extract_features(
        [(small, "res5", "avg"), (huge, "res5", "avg")], images, 4, "cpu"
    )
    assert feats.shape == (10, 4 + 32)
    # each N_pre's block lies on the unit sphere: the wide, large one does not dominate
    np.testing.assert_allclose(np.linalg.norm(feats[:, :4], axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(feats[:, 4:], axis=1), 1, rtol=1e-5)
    # by hand: each block is its trunk's feature over its norm
    x = torch.stack([im["data"][0] for im in images])
    with torch.no_grad():
        ref = small.compute(x)
    np.testing.assert_allclose(
        feats[:, :4], (ref / ref.norm(dim=1, keepdim=True)).numpy(), rtol=1e-5
    )
    # one N_pre: its features unchanged (the cluster step's L2_NORM applies later)
    alone = fx.extract_features([(huge, "res5", "avg")], images, 4, "cpu")
    assert np.linalg.norm(alone, axis=1).min() > 100
