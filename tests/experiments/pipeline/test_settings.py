"""tools/clusterfit_pipeline.py settings: the Fashion-MNIST defaults unchanged, the
ResNet-50 preset on a folder or a catalog name, and clear errors."""

import os

import pytest

from vissl_clusterfit.experiments.pipeline.driver import Pipeline
from vissl_clusterfit.experiments.pipeline.settings import PipelineSettings, ncf_seed


def test_fmnist_defaults_and_stages_unchanged(tmp_path):
    s = PipelineSettings(output_dir=str(tmp_path))
    assert (s.preset, s.scale, s.num_clusters, s.data_limit, s.epochs) == (
        "fmnist",
        "cpu",
        50,
        8000,
        8,
    )
    assert (s.eval_train_limit, s.eval_test_limit, s.eval_epochs) == (8000, -1, 4)
    pipe = Pipeline(s, [])
    assert (
        pipe.config_name("npre", "jigsaw")
        == "vissl_clusterfit/pretrain/jigsaw_fmnist_cpu"
    )
    assert (
        pipe.config_name("ncf", "rotnet")
        == "vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu"
    )
    assert pipe.config_name("linear", target="digits") == (
        "vissl_clusterfit/benchmark/linear_digits_cpu"
    )
    assert pipe.data_overrides() == [] and pipe.data_label == "Fashion-MNIST"
    assert pipe._common() == [
        "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
        "config.SEED_VALUE=0",
    ]


def test_from_args_parses_preset_defaults(tmp_path):
    s = PipelineSettings.from_args(
        [
            "pipeline.preset=resnet50_in1k",
            "pipeline.epochs=3",
            "pipeline.with_2x=true",
            f"pipeline.output_dir={tmp_path}",
        ]
    )
    assert s.epochs == 3 and s.with_2x is True
    # the rest: the paper's / VISSL's settings
    assert (s.scale, s.num_clusters, s.data_limit, s.eval_epochs) == (
        "gpu",
        16000,
        -1,
        28,
    )


def make_folder(root, splits=("train", "val")):
    for split in splits:
        os.makedirs(os.path.join(root, split, "a"))
    return str(root)


def test_resnet50_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    s = PipelineSettings(
        output_dir=str(tmp_path / "out"),
        preset="resnet50_in1k",
        data=f"folder:{root}",
        scale="cpu",
    )
    pipe = Pipeline(s, [])
    assert pipe.config_name("npre", "rotnet") == "pretrain/rotnet/rotnet_8gpu_resnet"
    assert pipe.config_name("ncf", "jigsaw") == (
        "vissl_clusterfit/clusterfit/ncf_jigsaw_resnet50_in1k_gpu"
    )
    assert pipe.config_name("linear").endswith("eval_resnet_8gpu_transfer_in1k_linear")
    assert pipe._common()[0] == "+vissl_clusterfit_defaults=[plugin,cpu]"
    train, val = f"{root}/train", f"{root}/val"
    assert pipe.data_overrides() == [
        f"config.DATA.TRAIN.DATA_PATHS=[{train}]",
        f"config.DATA.TRAIN.LABEL_PATHS=[{train}]",
        f"config.DATA.TEST.DATA_PATHS=[{val}]",
        f"config.DATA.TEST.LABEL_PATHS=[{val}]",
    ]
    # N_cf keeps its LABEL_PATHS=[auto] (the cluster labels)
    assert f"config.DATA.TRAIN.LABEL_PATHS=[{train}]" not in pipe.data_overrides(
        cluster_labels=True
    )
    assert pipe.probe_target == "imgs" and pipe.data_label == f"folder {root}"


def test_resnet50_with_a_catalog_name(tmp_path):
    s = PipelineSettings(
        output_dir=str(tmp_path), preset="resnet50_in1k", dataset_name="my_set"
    )
    pipe = Pipeline(s, [])
    assert pipe.data_overrides() == [
        "config.DATA.TRAIN.DATASET_NAMES=[my_set]",
        "config.DATA.TEST.DATASET_NAMES=[my_set]",
    ]
    assert pipe._common()[0] == "+vissl_clusterfit_defaults=[plugin]"
    plain = Pipeline(
        PipelineSettings(output_dir=str(tmp_path), preset="resnet50_in1k"), []
    )
    assert plain.data_overrides() == [] and plain.probe_target == "imagenet1k_folder"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data": "folder:/x"}, "pipeline.preset=resnet50_in1k"),
        ({"preset": "resnet50_in1k", "data": "/x"}, "folder:<root>"),
        (
            {"preset": "resnet50_in1k", "data": "folder:/x", "dataset_name": "y"},
            "not both",
        ),
        ({"preset": "resnet50_in1k", "eval_digits": True}, "preset=fmnist"),
        ({"preset": "in22k"}, "fmnist, resnet50_in1k"),
        ({"scale": "tpu"}, "cpu or gpu"),
    ],
)
def test_settings_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PipelineSettings(**kwargs)


def test_folder_without_val_is_refused(tmp_path):
    root = make_folder(tmp_path / "imgs", splits=("train",))
    s = PipelineSettings(
        output_dir=str(tmp_path / "out"), preset="resnet50_in1k", data=f"folder:{root}"
    )
    with pytest.raises(FileNotFoundError, match="no val folder"):
        Pipeline(s, [])


def test_ncf_does_not_start_from_npre_initial_weights(tmp_path, monkeypatch):
    """N_pre runs with the pipeline's seed; N_cf (labels derived from N_pre) with
    ncf_seed(seed), so the two networks are initialised differently."""
    import vissl_clusterfit.experiments.pipeline.stages as stages

    calls = []

    def fake_call(cmd, **kwargs):
        calls.append(cmd)
        folder = next(
            a.split("=", 1)[1] for a in cmd if a.startswith("config.CHECKPOINT.DIR=")
        )
        open(os.path.join(folder, "model_final_checkpoint_phase0.torch"), "w").close()
        return 0

    monkeypatch.setattr(stages.subprocess, "call", fake_call)
    pipe = Pipeline(PipelineSettings(output_dir=str(tmp_path), seed=3), [])
    pipe.train("npre", "c", [])
    pipe.train("ncf", "c", [], from_npre_labels=True)
    seeds = [[a for a in cmd if a.startswith("config.SEED_VALUE=")] for cmd in calls]
    assert seeds == [["config.SEED_VALUE=3"], [f"config.SEED_VALUE={3 + 1000}"]]
    assert ncf_seed(3) == 1003
