"""Step schedules fitted to the run's length: VISSL's ImageNet configs (steps at
30/60/90/100 of 105 epochs) composed with fewer epochs build and run in fvcore."""

import pytest
from classy_vision.optim.param_scheduler import build_param_scheduler

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.optim.schedule_length import check_schedules, scaled


def test_scaled_by_hand():
    values = [0.1, 0.01, 0.001, 0.0001, 0.00001]
    # 30/60/90/100 of 105 at 10 epochs: 2.9 -> 3, 5.7 -> 6, 8.6 -> 9, 9.5 -> 10 (dropped)
    assert scaled([30, 60, 90, 100], values, 10, 105) == ([3, 6, 9], values[:4])
    assert scaled([30, 60, 90, 100], values, 1, 105) == ([], [0.1])
    # two milestones on one epoch: the later value wins
    assert scaled([4, 5], [1.0, 0.5, 0.25], 2, 10) == ([1], [1.0, 0.25])  # 0.8, 1.0
    assert scaled([30, 60], [1.0, 0.1, 0.01], 105, 105) == ([30, 60], [1.0, 0.1, 0.01])


def _lr_scheduler(cfg):
    node = dict(cfg.OPTIMIZER.param_schedulers.lr)
    node.pop("auto_lr_scaling", None)
    return build_param_scheduler(dict(node, num_epochs=cfg.OPTIMIZER.num_epochs))


@pytest.mark.parametrize(
    "config,epochs,expected",
    [
        ("pretrain/rotnet/rotnet_8gpu_resnet", 1, []),
        ("pretrain/rotnet/rotnet_8gpu_resnet", 10, [3, 6, 9]),
        # composite: linear warm-up, then the multistep
        ("pretrain/clusterfit/clusterfit_resnet_8gpu_imagenet", 1, []),
    ],
)
def test_vissl_imagenet_configs_with_fewer_epochs(config, epochs, expected):
    with pytest.raises(ValueError, match="num_updates"):  # fvcore, unscaled
        _, raw = compose_config([f"config={config}"], dump_config=False)
        raw.OPTIMIZER.num_epochs = epochs  # what the run would do unscaled
        _lr_scheduler(raw)
    _, cfg = compose_config(
        [f"config={config}", f"config.OPTIMIZER.num_epochs={epochs}"], dump_config=False
    )
    lr = cfg.OPTIMIZER.param_schedulers.lr
    node = lr if lr.name == "multistep" else lr.schedulers[1]
    assert list(node.milestones) == expected, node
    values = node["values"]  # not .values: AttrDict is a dict
    assert len(values) == len(expected) + 1 and values[0] == 0.1
    scheduler = _lr_scheduler(cfg)  # builds and runs in fvcore
    assert scheduler(0.0) > 0


def test_hand_set_milestones_that_do_not_fit_are_refused():
    key = "config.OPTIMIZER.param_schedulers.lr"
    with pytest.raises(
        ValueError, match=rf"{key}.milestones=\[30, 60, 90, 100\] do not fit"
    ):
        compose_config(
            [
                "config=pretrain/rotnet/rotnet_8gpu_resnet",
                "config.OPTIMIZER.num_epochs=2",
                "config.OPTIMIZER.param_schedulers.lr.milestones=[30,60,90,100]",
            ],
            dump_config=False,
        )
    _, cfg = compose_config(
        ["config=pretrain/rotnet/rotnet_8gpu_resnet"], dump_config=False
    )
    cfg.OPTIMIZER.num_epochs = (
        50  # a config reaching the hooks through VISSL's launcher
    )
    # the suggestion scales from max + 1 = 101 epochs: 14.9, 29.7, 44.6 (49.5 -> 50: out)
    with pytest.raises(ValueError, match=r"num_epochs=50.*e\.g\. \[15, 30, 45\]"):
        check_schedules(cfg)
