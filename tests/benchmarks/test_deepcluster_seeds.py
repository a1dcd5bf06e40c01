"""benchmarks.deepcluster_seeds: paired comparisons, re-clustering cost, report."""

import math

from benchmarks import deepcluster_seeds as ds


def _seed(dc, rnd, deeper, rot):
    probe = lambda v: {"fmnist full": {"res5": v}}  # noqa: E731
    return {
        "probes": {
            "deepcluster": probe(dc),
            "random": probe(rnd),
            "deepercluster": probe(deeper),
            "rotnet": probe(rot),
        }
    }


def test_compare_pairs_by_seed():
    per_seed = {
        0: _seed(80, 76, 82, 81),
        1: _seed(81, 78, 83, 81),
        2: _seed(79, 74, 84, 82),
    }
    diffs = ds.compare(per_seed)
    d = diffs["DeepCluster - random init"]["fmnist full res5"]
    assert math.isclose(d.diff, (4 + 3 + 5) / 3)
    # sd of (4, 3, 5) is 1; t(0.975, 2) = 4.3027
    assert math.isclose(d.ci_high - d.diff, 4.302653 / math.sqrt(3), rel_tol=1e-5)
    assert math.isclose(
        diffs["DeeperCluster - its RotNet init"]["fmnist full res5"].diff, 5 / 3
    )


def test_recluster_cost_is_cluster_time_over_round_time():
    rounds = [
        {"unix_time": 100.0, "extract_s": 2.0, "cluster_s": 1.0},
        {"unix_time": 110.0, "extract_s": 3.0, "cluster_s": 2.0},
        {"unix_time": 120.0},
    ]
    cost = ds.recluster_cost(rounds)
    assert cost == {"mean_fraction": (0.3 + 0.5) / 2, "rounds": 2}
    assert ds.recluster_cost(rounds[:1]) is None


def test_markdown_has_primary_table_and_readable_cost():
    per_seed = {
        0: _seed(80, 76, 82, 81),
        1: _seed(81, 78, 83, 81),
        2: _seed(79, 74, 84, 82),
    }
    result = {
        "seeds": [0, 1, 2],
        "machine": {"command": "x", "commit": "c", "date": "d"},
        "recluster_cost": {
            "deepcluster": [{"mean_fraction": 0.25, "rounds": 9}] * 3,
            "deepercluster": [{"mean_fraction": 0.5, "rounds": 4}, None],
        },
    }
    md = ds.markdown(result, ds.compare(per_seed))
    assert "| DeepCluster - random init | +4.00 [" in md
    assert (
        "- deepcluster: 25% (9 rounds), 25% (9 rounds), 25% (9 rounds); mean 25%" in md
    )
    assert "- deepercluster: 50% (4 rounds); mean 50%" in md


def test_retrain_check_compares_every_tensor(tmp_path, monkeypatch):
    import argparse

    import torch

    from benchmarks import common

    def save(path, value):
        model = {"trunk": {"w": torch.full((2,), value)}, "heads": {"b": torch.ones(1)}}
        torch.save({"classy_state_dict": {"base_model": {"model": model}}}, path)
        return str(path)

    stored = {"deepcluster": save(tmp_path / "a.torch", 1.0)}
    fresh = {"deepcluster": save(tmp_path / "b.torch", 1.25)}
    monkeypatch.setattr(
        ds,
        "train_seed",
        lambda args, seed: {
            "checkpoints": fresh if args.out.endswith("_retrain") else stored
        },
    )
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    args = argparse.Namespace(out=str(tmp_path / "w"), name="t")
    res = ds.retrain_check(args, 1)["models"]["deepcluster"]
    assert res == {"tensors": 2, "same_keys": True, "max_abs_diff": 0.25}
    assert (tmp_path / "t_retrain_check.json").is_file()


def test_work_dir_depends_on_training_settings_only():
    base = ds.parse_args([]).out
    assert ds.parse_args(["--retrain-check", "1", "--seeds", "0"]).out == base
    assert ds.parse_args(["--epochs", "11"]).out != base


def test_preactivation_compare_pairs_seeds_both_have():
    from benchmarks import deepcluster_preactivation as dp

    pre = {0: {"fmnist full": {"res5": 80.0}}, 1: {"fmnist full": {"res5": 83.0}}}
    post = {
        0: {"fmnist full": {"res5": 79.0}},
        1: {"fmnist full": {"res5": 81.0}},
        2: {"fmnist full": {"res5": 99.0}},  # no pre-activation run: not paired
    }
    d = ds.paired_cells(pre, post)[dp.PRIMARY]
    assert d.diff == 1.5 and d.n == 2


def test_registered_deepcluster_stays_post_relu_whatever_the_default(monkeypatch):
    """The 3-seed comparison was registered and run post-ReLU; the plugin's default
    is now pre-activation, so the benchmark pins the setting of each stage."""
    calls = []
    monkeypatch.setattr(
        ds.Pipeline,
        "train",
        lambda self, name, config, over: calls.append((name, over)),
    )
    args = ds.parse_args([])
    ds.train_deepcluster(args, 1)
    ds.train_deepcluster(args, 1, preactivation=True)
    (post_name, post), (pre_name, pre) = calls
    assert (
        post_name == "deepcluster"
        and "config.VCF.DEEPCLUSTER.PREACTIVATION=false" in post
    )
    assert (
        pre_name == "deepcluster_preact"
        and "config.VCF.DEEPCLUSTER.PREACTIVATION=true" in pre
    )
