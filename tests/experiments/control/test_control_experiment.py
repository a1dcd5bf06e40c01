"""The control experiment (ClusterFit Sec. 3.2, Fig. 3): pure helpers (validation split,
K choice on validation, paired statistics, the stages' overrides) and the tiny preset
end to end through VISSL's trainer, resumed."""

import json
import math
import os

import numpy as np
import pytest
import yaml

from tests.conftest import run_tool
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.data.array_source import select_subset
from vissl_clusterfit.experiments.control import probe as control_probe, report as cr
from vissl_clusterfit.experiments.control.probe import (
    cached_probe,
    choose_k,
    fmnist_splits,
    linear_probe,
    stratified_holdout,
)
from vissl_clusterfit.experiments.control.report import npre_train_accuracy
from vissl_clusterfit.experiments.control.settings import (
    VARIANTS,
    ControlSettings,
    stage_overrides,
)


# ------------------------------------------------------------------ splits and K choice


@pytest.mark.parametrize("n_pre,n_train,n_val", [(1500, 3000, 1000), (5000, 2000, 700)])
def test_validation_images_are_outside_dpre_and_probe_train(n_pre, n_train, n_val):
    splits = fmnist_splits(n_pre, n_train, n_val)
    pick = lambda limit, skip: set(select_subset(60000, limit, 0, skip))  # noqa: E731
    dpre, train, val = pick(n_pre, 0), pick(*splits["train"]), pick(*splits["val"])
    assert len(val) == n_val and len(train) == n_train
    assert not val & dpre and not val & train
    # the probe trains on D_pre's own images first (as the paper's linear probes do)
    assert dpre <= train or train <= dpre


def test_validation_split_errors():
    with pytest.raises(ValueError, match="exceed"):
        fmnist_splits(55000, 10000, 5001)
    with pytest.raises(ValueError, match=">= 1"):
        fmnist_splits(1000, 1000, 0)


def test_stratified_holdout():
    labels = np.repeat(np.arange(4), [10, 20, 5, 2])
    train, val = stratified_holdout(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[val]).tolist() == [2, 4, 1, 1]  # >= 1 per class
    again = stratified_holdout(labels, 0.2, seed=3)[1]
    assert np.array_equal(val, again)


def test_choose_k_on_validation():
    assert choose_k({10: 71.0, 50: 73.5, 200: 73.0}) == 50
    assert choose_k({50: 70.0, 10: 70.0}) == 10  # ties: the smaller K
    with pytest.raises(ValueError):
        choose_k({})


def test_with_chosen_k_uses_validation_never_test():
    base = dict(variant="coarse", p=50, seed=0, target="aligned")
    recs = [
        dict(base, model="N_cf K=10", k=10, val=80.0, test=70.0),
        dict(base, model="N_cf K=50", k=50, val=79.0, test=90.0),
    ]
    chosen = [r for r in cr.with_chosen_k(recs) if r["model"] == "N_cf"]
    assert [(r["k"], r["test"]) for r in chosen] == [(10, 70.0)]


def test_linear_probe_fits_once_and_scores_each_split():
    rng = np.random.RandomState(0)
    x = rng.randn(300, 5)
    y = (x[:, 0] > 0).astype(int)
    res = linear_probe(x[:200], y[:200], {"val": (x[200:250], y[200:250]),
                                          "test": (x[250:], y[250:])})  # fmt: skip
    assert res["val"] > 90 and res["test"] > 90 and res["n_train"] == 200, res


def test_cached_probe_reuses_only_the_same_checkpoint_and_leaves_no_temp(
    tmp_path, monkeypatch
):
    calls = []

    def fake_probe(checkpoint, targets, settings):
        calls.append(checkpoint)
        return {"fmnist10": {"test": 50.0 + len(calls)}}

    monkeypatch.setattr(control_probe, "probe_checkpoint", fake_probe)
    ckpt, cache = tmp_path / "model.torch", str(tmp_path / "probe_res5.json")
    ckpt.write_bytes(b"weights")
    first, computed = cached_probe(str(ckpt), ["fmnist10"], {"seed": 0}, cache)
    assert computed and first["fmnist10"]["test"] == 51.0
    again, computed = cached_probe(str(ckpt), ["fmnist10"], {"seed": 0}, cache)
    assert not computed and again == first and len(calls) == 1
    # other settings or a rewritten checkpoint are probed again
    _, computed = cached_probe(str(ckpt), ["fmnist10"], {"seed": 1}, cache)
    assert computed and len(calls) == 2
    ckpt.write_bytes(b"other weights")
    _, computed = cached_probe(str(ckpt), ["fmnist10"], {"seed": 1}, cache)
    assert computed and len(calls) == 3
    assert sorted(os.listdir(tmp_path)) == ["model.torch", "probe_res5.json"]


# ------------------------------------------------------------------ statistics


def test_paired_ci_by_hand():
    d = cr.compare(
        [dict(model=m, seed=s, test=v) for m, vals in (("a", [3.0, 5.0, 7.0]), ("b", [2.0, 3.0, 4.0])) for s, v in enumerate(vals)],  # fmt: skip
        "a",
        "b",
    )  # differences 1, 2, 3
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert d["diff"] == pytest.approx(2.0) and d["n"] == 3
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((2 - half, 2 + half))
    assert cr.compare([dict(model=m, seed=0, test=1.0) for m in "ab"], "a", "b") == {
        "diff": 0.0,
        "ci_low": None,
        "ci_high": None,
        "n": 1,
    }


def synthetic_records(seeds=(0, 1, 2)):
    """N_pre loses 10 points per 50% noise, N_cf 4: the gap grows by 6 per step."""
    rng = np.random.RandomState(0)
    recs = []
    for seed in seeds:
        for variant, targets in (("coarse", cr.TARGET_TITLES), ("fine", ("aligned", "tops", "digits"))):  # fmt: skip
            for p in (0, 50, 75):
                for t in targets:
                    base = dict(variant=variant, p=p, seed=seed, target=t)
                    noise = lambda: float(rng.randn() * 0.1)  # noqa: E731
                    acc = {"N_pre": 80 - p / 5, "distillation": 81 - p / 5,
                           "prototype": 79 - p / 10, "random init": 60.0}  # fmt: skip
                    for m, v in acc.items():
                        recs.append(dict(base, model=m, k=None, val=v, test=v + noise()))  # fmt: skip
                    for k, off in ((10, 0.0), (50, 1.0)):
                        v = 78 - p * 4 / 50 + off
                        recs.append(dict(base, model=f"N_cf K={k}", k=k, val=v, test=v + noise()))  # fmt: skip
    return recs


def test_comparisons_and_hypotheses_on_synthetic_records():
    recs = cr.with_chosen_k(synthetic_records())
    d = cr.compare(recs, "N_cf", "N_pre", variant="coarse", target="aligned", p=75)
    assert d["n"] == 3 and d["diff"] == pytest.approx(79 - 6 - 65, abs=0.5)
    assert cr.verdict(d) == "supported"
    g = cr.gap_growth(recs, 0, 75, variant="coarse", target="finer")
    assert g["diff"] == pytest.approx(9.0, abs=0.5) and cr.verdict(g) == "supported"
    rows = cr.hypotheses(recs, "coarse", [0, 50, 75])
    verdicts = {(r[0], r[1], r[2]): r[4] for r in rows}
    assert verdicts[("H2 N_cf > N_pre", "aligned", 50)] == "supported"
    assert verdicts[("H3 N_cf level or better", "finer", 0)] == "worse"
    assert not any(r[1] == "finer" for r in cr.hypotheses(recs, "fine", [0, 50, 75]))
    assert (
        cr.verdict(cr.compare(recs[:1], "N_pre", "N_pre", p=0))
        == "no CI (< 2 seeds); not the paper's sign"
    )


def test_report_has_every_method_target_and_p(tmp_path):
    settings = ControlSettings(preset="small", variants="coarse,fine", rates="0,50,75")
    report = {
        "settings": dict(vars(settings)),
        "records": synthetic_records(),
        "npre_fit": [dict(variant="coarse", p=p, seed=s, train_top1=99.0) for p in (0, 50, 75) for s in (0, 1, 2)],  # fmt: skip
        "clusters": [dict(variant="coarse", p=0, seed=0, k=10, nmi=0.5)],
        "stage_time_s": {"coarse/p0/s0/npre": {"wall_s": 1.0, "cpu_s": 2.0}},
        "stages_run_now": [],
        "total_time_s": 1.0,
    }
    out = cr.write_report(str(tmp_path), report)
    md = (tmp_path / "report.md").read_text()
    assert (tmp_path / "fig3_control.png").stat().st_size > 0
    for m in cr.METHODS:
        for a, b in cr.COMPARISONS:
            assert f"| aligned | {a} - {b} |" in md
        assert f"| digits | {m} |" in md
    assert "| finer | N_cf |" in md and "H1 gap N_cf - N_pre grows" in md
    assert json.loads((tmp_path / "report.json").read_text())["plots"] == out["plots"]


def test_report_of_the_full_preset_shape_one_seed_ncf_only(tmp_path):
    """The `full` preset's report: seed 0 only, N_pre / N_cf / random init, p 0 and 50:
    every difference is printed without a CI, no verdict is claimed, and the baselines
    that did not run are "missing", not an error."""
    settings = ControlSettings(preset="full", seeds="0")
    recs = [
        r
        for r in synthetic_records(seeds=(0,))
        if r["variant"] == "coarse" and r["p"] in (0, 50)
        and r["model"] in ("N_pre", "random init", "N_cf K=10", "N_cf K=50")
    ]  # fmt: skip
    report = {
        "settings": dict(vars(settings)),
        "records": recs,
        "npre_fit": [dict(variant="coarse", p=p, seed=0, train_top1=97.5) for p in (0, 50)],  # fmt: skip
        "clusters": [],
        "stage_time_s": {},
        "stages_run_now": [],
        "total_time_s": 1.0,
    }
    cr.write_report(str(tmp_path), report)
    md = (tmp_path / "report.md").read_text()
    rows = cr.hypotheses(cr.with_chosen_k(recs), "coarse", [0, 50])
    by_name = {(r[0], r[1], r[2]): r for r in rows}
    h2 = by_name[("H2 N_cf > N_pre", "aligned", 50)]
    assert h2[3].endswith("(n=1)") and h2[4] == "no CI (< 2 seeds); the paper's sign"
    h1 = by_name[("H1 gap N_cf - N_pre grows", "aligned", "0->50")]
    assert float(h1[3].split()[0]) > 0 and h1[4].endswith("; the paper's sign")
    one_rate = cr.hypotheses(cr.with_chosen_k(recs), "coarse", [0])
    assert one_rate and not [r for r in one_rate if r[0].startswith("H1")]
    assert by_name[("H4b N_cf > distillation", "aligned", 0)][4] == "missing"
    assert not {r[4] for r in rows} & {"supported", "contradicted", "inconclusive"}
    assert "| aligned | N_cf - N_pre | " in md and "| 0 | 97.50 | 97.5 | 100 |" in md
    assert (tmp_path / "fig3_control.png").stat().st_size > 0


# ------------------------------------------------------------------ settings and stages


def test_settings_presets_and_errors():
    s = ControlSettings.from_args(["control.preset=tiny", "control.ks=3,5"])
    assert (s.ks, s.rates, s.data_limit, s.methods) == ("3,5", "0,50", 160, "ncf,distill,prototype")  # fmt: skip
    assert ControlSettings(preset="full").methods == "ncf"
    with pytest.raises(ValueError, match="unknown setting"):
        ControlSettings.from_args(["control.nope=1"])
    with pytest.raises(ValueError, match="control.variants"):
        ControlSettings(preset="tiny", variants="coarse,medium")


def test_npre_train_accuracy_reads_the_last_epoch(tmp_path):
    lines = [{"train_accuracy_list_meter": {"top_1": {"0": v}}} for v in (40.0, 97.5)]
    lines.insert(1, {"iteration": 3})
    (tmp_path / "metrics.json").write_text("\n".join(map(json.dumps, lines)))
    assert npre_train_accuracy(str(tmp_path)) == 97.5
    assert npre_train_accuracy(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_model_gets_npre_recipe_and_noisy_labels(variant, tmp_path):
    """Composed configs: N_cf, distillation and prototype train as N_pre does (same
    images, transforms, schedule, batch, epochs); the label users see N_pre's noise."""
    s = ControlSettings(preset="tiny", variants=variant, data_path=str(tmp_path))
    npre_name = VARIANTS[variant].npre_config + "_cpu"
    _, npre_cfg = compose_config(
        [f"config=vissl_clusterfit/pretrain/{npre_name}"], False
    )
    stages = stage_overrides(s, variant, 50, 2, "/x/npre.torch", npre_cfg)
    assert list(stages) == ["npre", "ncf_k4", "ncf_k8", "distill", "prototype"]
    cfgs = {
        name: compose_config([f"config=vissl_clusterfit/{c}", *over], False)[1]
        for name, (c, over) in stages.items()
    }
    ref = cfgs["npre"]
    noise = dict(ref.DATA.TRAIN.VCF_LABEL_NOISE)
    assert (noise["RATE"], noise["SEED"], noise["NUM_CLASSES"]) == (0.5, 2, VARIANTS[variant].num_classes)  # fmt: skip
    for name, cfg in cfgs.items():
        t, r = cfg.DATA.TRAIN, ref.DATA.TRAIN
        assert [dict(x) for x in t.TRANSFORMS] == [dict(x) for x in r.TRANSFORMS], name
        assert (t.DATA_LIMIT, t.BATCHSIZE_PER_REPLICA) == (160, r.BATCHSIZE_PER_REPLICA)
        assert t.DATA_PATHS == [str(tmp_path)]
        for key in ("weight_decay", "momentum", "nesterov", "num_epochs"):
            assert cfg.OPTIMIZER[key] == ref.OPTIMIZER[key], (name, key)
        lr, ref_lr = (
            cfg.OPTIMIZER.param_schedulers.lr,
            ref.OPTIMIZER.param_schedulers.lr,
        )
        assert (lr.start_value, lr.end_value) == (ref_lr.start_value, ref_lr.end_value)
    for name in ("distill", "prototype"):
        assert dict(cfgs[name].DATA.TRAIN.VCF_LABEL_NOISE) == noise, name
    inner = ref.DATA.TRAIN.LABEL_SOURCES
    assert list(cfgs["distill"].DATA.TRAIN.LABEL_SOURCES) == list(inner)
    assert cfgs["distill"].MODEL.HEAD.PARAMS == ref.MODEL.HEAD.PARAMS
    proto = cfgs["prototype"].VCF.CLUSTERFIT
    assert proto.METHOD == "prototype" and list(proto.PRETRAIN_LABELS.LABEL_SOURCES) == list(inner)  # fmt: skip
    assert proto.NUM_CLUSTERS == VARIANTS[variant].num_classes


# ------------------------------------------------------------------ end to end


def stage_dirs(out):
    for p in (0, 50):
        cell = os.path.join(out, "coarse", f"p{p}", "s0")
        for name in ("npre", "ncf_k4", "ncf_k8", "distill", "prototype"):
            yield name, os.path.join(cell, name)


@pytest.mark.slow
def test_tiny_preset_end_to_end_and_resumed(idx_dir, tmp_path):
    out = str(tmp_path / "control")
    args = ["control.preset=tiny", f"control.output_dir={out}", f"control.data_path={idx_dir}"]  # fmt: skip
    run_tool(args, tool="control_experiment.py", timeout=1200)
    for name, folder in stage_dirs(out):
        files = os.listdir(folder)
        assert any(f.startswith("model_final_checkpoint") for f in files), (name, files)
        assert "probe_res5.json" in files, (name, files)
        # N_cf, distillation and prototype do not start from N_pre's initial weights
        seed = yaml.safe_load(open(os.path.join(folder, "train_config.yaml")))
        assert seed["SEED_VALUE"] == (0 if name == "npre" else 1000), name
        if name != "npre":
            labels = "distill_supervised" if name == "distill" else "clusterfit"
            meta = os.path.join(folder, "clusterfit", f"{labels}_meta.json")
            assert os.path.isfile(meta), meta
    assert os.path.isfile(os.path.join(out, "random", "s0", "probe_res5.json"))
    # distillation and prototype used exactly N_pre's noisy labels
    for p in (0, 50):
        cell = os.path.join(out, "coarse", f"p{p}", "s0")
        rec = [json.load(open(os.path.join(cell, n, "vcf_label_noise_train.json")))
               for n in ("npre", "distill", "prototype")]  # fmt: skip
        assert rec[0]["num_flipped"] == round(p / 100 * 160)
        for other in rec[1:]:
            assert other["noisy_labels_sha256"] == rec[0]["noisy_labels_sha256"]
            assert other["positions"] == rec[0]["positions"]
    report = json.load(open(os.path.join(out, "report.json")))
    have = {(r["model"], r["target"], r["p"]) for r in report["records"]}
    for m in cr.METHODS:
        for t in cr.TARGET_TITLES:
            for p in (0, 50):
                assert (m, t, p) in have, (m, t, p)
    assert len(report["stages_run_now"]) == 10 + 11  # training stages + probes
    assert [f["train_top1"] is not None for f in report["npre_fit"]] == [True, True]
    assert os.path.getsize(os.path.join(out, "fig3_control.png")) > 0
    md = open(os.path.join(out, "report.md")).read()
    assert "pre-registered hypotheses" in md and "| tops | N_cf - N_pre |" in md
    # a re-run finds every stage and probe finished and runs nothing
    proc = run_tool(args, tool="control_experiment.py", timeout=600)
    again = json.load(open(os.path.join(out, "report.json")))
    assert again["stages_run_now"] == [], again["stages_run_now"]
    assert "running" not in proc.stdout, proc.stdout[-2000:]
    assert sorted(map(json.dumps, again["records"])) == sorted(
        map(json.dumps, report["records"])
    )


def test_output_dir_of_other_training_settings_is_refused(tmp_path):
    from vissl_clusterfit.experiments.control.driver import ControlExperiment

    out = str(tmp_path / "run")
    ControlExperiment(ControlSettings(preset="tiny", output_dir=out), [])
    ControlExperiment(ControlSettings(preset="tiny", output_dir=out, seeds="0,1"), [])
    with pytest.raises(ValueError, match="epochs: 1 -> 2"):
        ControlExperiment(ControlSettings(preset="tiny", output_dir=out, epochs=2), [])
    with pytest.raises(ValueError, match="passthrough"):
        ControlExperiment(
            ControlSettings(preset="tiny", output_dir=out), ["config.X=1"]
        )


def test_a_second_run_in_the_folder_leaves_its_settings_file_alone(tmp_path):
    """Control experiments of two rates start in one folder at once: the second must
    not rewrite (truncate) the settings file the first may be reading."""
    from vissl_clusterfit.experiments.control.driver import ControlExperiment

    out = tmp_path / "run"
    ControlExperiment(
        ControlSettings(preset="tiny", output_dir=str(out), rates="0"), []
    )
    path = out / "training_settings.json"
    before = os.stat(path)
    ControlExperiment(
        ControlSettings(preset="tiny", output_dir=str(out), rates="50"), []
    )
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (
        json.loads(path.read_text())["data_limit"]
        == ControlSettings(preset="tiny").data_limit
    )
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_runs_of_other_rates_sharing_the_folder_keep_each_others_stage_times(tmp_path):
    """Two control experiments (control.rates=0 and =50) in one folder at once: each
    stage time written by one stays when the other writes its own."""
    from vissl_clusterfit.experiments.control.driver import ControlExperiment

    out = str(tmp_path / "run")
    a = ControlExperiment(ControlSettings(preset="tiny", output_dir=out, rates="0"), [])
    b = ControlExperiment(
        ControlSettings(preset="tiny", output_dir=out, rates="50"), []
    )
    a._timed("coarse/p0/s0/npre", lambda: ("ckpt0", True))
    b._timed("coarse/p50/s0/npre", lambda: ("ckpt50", True))
    assert b._timed("coarse/p50/s0/ncf_k4", lambda: ("reused", False)) == "reused"
    with open(os.path.join(out, "stage_times.json")) as f:
        times = json.load(f)
    assert sorted(times) == ["coarse/p0/s0/npre", "coarse/p50/s0/npre"]
    assert set(b.times) == set(times) and b.run_now == ["coarse/p50/s0/npre"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_estimate_of_a_preset_from_measured_stage_times():
    from benchmarks.control_experiment import throughput_estimate

    settings = dict(vars(ControlSettings(preset="tiny")))
    settings.pop("num_proc")
    times = {"coarse/p0/s0/npre": {"wall_s": 30.0, "cpu_s": 10.0}}
    times["probe:coarse/p0/s0/npre"] = {"wall_s": 9.0, "cpu_s": 3.0}
    est = throughput_estimate(
        {"settings": settings, "stage_time_s": times}, "small", 400.0
    )
    small = ControlSettings(preset="small")
    # 9 cells x (N_pre, 2 N_cf, distillation, prototype); 45 + 3 random probes
    assert (est["cells"], est["training_stages"], est["probes"]) == (9, 45, 48)
    train = small.data_limit * small.epochs / 400.0
    assert est["stage_training_s"] == pytest.approx(train, abs=0.1)
    images = small.probe_train + small.probe_val + small.probe_test + 1797
    probe = round(3.0 * images / (160 + 100 + 200 + 1797), 1)
    assert est["total_s"] == pytest.approx(45 * (10.0 + train) + 48 * probe, abs=1)
