"""benchmarks.clusterfit_seeds: K chosen on validation per N_cf family, the random-N_pre
arm's paired differences, the fixed-K analysis, interim reports without verdicts,
resuming seed by seed and reusing an earlier run's records (stages mocked)."""

import json
import math

import pytest

from benchmarks import clusterfit_seeds as cs, common
from benchmarks.seeds import analysis, render, store
from benchmarks.seeds.analysis import RANDOM_NCF


T95_2DF = 4.302653  # t(0.975, 2)


def _rows(shift):
    """(model, k, val, test) of one seed; N_cf: K=50 best on validation, K=10 on test;
    the random family: K=10 best on validation."""
    return [
        ("N_pre", None, 70.0, 70.0 + shift),
        ("N_pre 2x", None, 71.0, 71.0 + shift),
        ("N_cf K=10", 10, 60.0, 90.0),
        ("N_cf K=50", 50, 80.0, 72.0 + 2 * shift),
        ("random init", None, 50.0, 50.0),
        (f"{RANDOM_NCF} K=10", 10, 85.0, 60.0 + shift),
        (f"{RANDOM_NCF} K=50", 50, 55.0, 65.0),
    ]


def _records(seeds=(0, 1, 2), pretexts=("rotnet",)):
    return [
        dict(variant=p, p=0, seed=seed, target=t, model=model, k=k, val=val, test=test)
        for seed in seeds
        for p in pretexts
        for t in analysis.TARGETS
        for model, k, val, test in _rows(float(seed))
    ]


def test_k_is_chosen_on_validation_and_differences_are_paired():
    s = analysis.summarise(_records(), ["rotnet"], fixed_k=50)
    assert s["chosen_k"]["N_cf | rotnet | fmnist10"] == {0: 50, 1: 50, 2: 50}
    d = s["differences"]["rotnet | fmnist10 | N_cf - N_pre"]
    # per seed (72 + 2s) - (70 + s) = 2 + s: 2, 3, 4
    assert d["diff"] == pytest.approx(3.0) and d["n"] == 3
    assert d["ci_high"] - d["diff"] == pytest.approx(T95_2DF / math.sqrt(3), rel=1e-5)
    assert s["differences"]["rotnet | digits10 | random init - N_pre"][
        "diff"
    ] == pytest.approx(-21.0)
    ((h, hd),) = s["hyps"]["primary"]
    assert h.startswith("H1 (primary): rotnet") and hd is d


def test_random_arm_chooses_its_own_k_and_is_compared_with_ncf():
    s = analysis.summarise(_records(), ["rotnet"], fixed_k=50)
    assert s["chosen_k"][f"{RANDOM_NCF} | rotnet | tops4"] == {0: 10, 1: 10, 2: 10}
    d = s["differences"][f"rotnet | fmnist10 | N_cf - {RANDOM_NCF}"]
    # (72 + 2s) - (60 + s) = 12 + s
    assert d["diff"] == pytest.approx(13.0) and d["n"] == 3
    g = s["differences"][f"rotnet | fmnist10 | {RANDOM_NCF} - random init"]
    assert g["diff"] == pytest.approx(11.0)
    texts = [h for h, _ in s["hyps"]["random_arm"]]
    assert texts[0].startswith(f"rotnet N_cf - {RANDOM_NCF} > 0")
    assert texts[1].startswith(f"{RANDOM_NCF} - random init > 0")


def test_fixed_k_compares_the_k50_models_not_the_chosen_ones():
    recs = _records()
    for r in recs:  # make K=10 best on validation: the fixed-K rows must not move
        if r["model"] == "N_cf K=10":
            r["val"] = 99.0
    s = analysis.summarise(recs, ["rotnet"], fixed_k=50)
    fixed = s["differences"]["rotnet | fmnist10 | N_cf K=50 - N_pre"]
    chosen = s["differences"]["rotnet | fmnist10 | N_cf - N_pre"]
    assert fixed["diff"] == pytest.approx(3.0)  # (72 + 2s) - (70 + s)
    assert chosen["diff"] == pytest.approx(19.0)  # 90 - (70 + s), K=10 chosen
    k50 = s["differences"][f"rotnet | fmnist10 | N_cf K=50 - {RANDOM_NCF} K=50"]
    assert k50["diff"] == pytest.approx(72.0 + 2 - 65.0)
    assert [h for h, _ in s["hyps"]["fixed_k"]] == [
        "rotnet N_cf K=50 - N_pre on fmnist10",
        f"rotnet N_cf K=50 - {RANDOM_NCF} K=50 on fmnist10",
    ]


def test_k_counts_count_each_random_cell_once():
    s = analysis.summarise(
        _records(pretexts=("rotnet", "jigsaw")), ["rotnet", "jigsaw"], 50
    )
    assert s["k_counts"]["N_cf"] == {50: 18}  # 2 pretexts x 3 targets x 3 seeds
    assert s["k_counts"][RANDOM_NCF] == {10: 9}  # the same cells under both pretexts


def _result(seeds, finished):
    return {
        "seeds": seeds,
        "seeds_finished": finished,
        "complete": finished == seeds,
        "pretexts": ["rotnet"],
        "args": {},
        "machine": {},
        "fixed_k": 50,
        "sources": {s: {"commit": "abc", "reused_from": None} for s in finished},
    }


def test_interim_report_gives_no_verdict_and_the_complete_one_does():
    s = analysis.summarise(_records(), ["rotnet"], 50)
    interim = render.markdown(_result(list(range(10)), [0, 1, 2]), s)
    assert "**Interim report**: 3 of the 10 pre-registered seeds" in interim
    assert "| interim, no verdict (3 of 10 seeds) |" in interim
    assert "| supported |" not in interim
    done = render.markdown(_result([0, 1, 2], [0, 1, 2]), s)
    assert "| H1 (primary): rotnet N_cf - N_pre > 0 on fmnist10 | +3.00 [" in done
    assert "| supported |" in done and "interim" not in done
    assert f"| rotnet | {RANDOM_NCF} K=10 | 61.00 ± 1.00 |" in done
    assert "- N_cf: {50: 9}" in done


# ---------------------------------------------------------------- resuming and reuse


def _fake_stages(monkeypatch, calls, random_shift=0.0):
    """train_seed and records_of without VISSL: one checkpoint name per model, records
    from ``_rows``; ``calls`` collects (seed, existing_arms)."""

    def train_seed(args, seed, existing_arms=True):
        calls.append((seed, existing_arms))
        keep = [m for m, *_ in _rows(0.0)]
        if not existing_arms:
            keep = ["random init"] + [m for m in keep if m.startswith(RANDOM_NCF)]
        models = {m: dict(checkpoint=f"/ck/{seed}/{m}", model=m) for m in keep}
        return models, {"stage": 1.0}

    def records_of(args, seed, models):
        recs = [r for r in _records((seed,)) if r["model"] in models]
        for r in recs:
            if r["model"] == "random init":
                r["test"] += random_shift
        return recs

    monkeypatch.setattr(cs, "train_seed", train_seed)
    monkeypatch.setattr(cs, "records_of", records_of)


def _args(tmp_path, seeds, *extra):
    return ["--seeds", seeds, "--pretexts", "rotnet", "--ks", "10,50",
            "--out", str(tmp_path / "w"), "--name", "t", *extra]  # fmt: skip


def test_finished_seeds_are_never_recomputed_and_reported_so_far(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    calls = []
    _fake_stages(monkeypatch, calls)
    cs.main(_args(tmp_path, "0,1"))
    assert calls == [(0, True), (1, True)]
    cs.main(_args(tmp_path, "0,1,2"))  # resumes: only seed 2 runs
    assert calls[2:] == [(2, True)]
    with open(tmp_path / "results" / "t.json") as f:
        result = json.load(f)
    assert result["seeds_finished"] == [0, 1, 2] and result["complete"]
    # a report from the finished seeds only, trains nothing, says it is interim
    r = cs.main(_args(tmp_path, ",".join(map(str, range(10))), "--report-only"))
    assert len(calls) == 3 and r["seeds_finished"] == [0, 1, 2] and not r["complete"]
    primary = r["hypotheses"]["primary"][0]
    assert primary["n"] == 3 and primary["verdict"].startswith("interim")


def test_a_committed_seed_is_reused_by_a_fresh_checkout(tmp_path, monkeypatch):
    """The work dir is git-ignored: a finished seed also lands under results/, and a
    checkout without the work dir takes it from there instead of training again."""
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    calls = []
    _fake_stages(monkeypatch, calls)
    cs.main(_args(tmp_path, "0"))
    committed = store.committed_path(str(tmp_path / "w"), 0)
    assert committed.startswith(str(tmp_path / "results")), committed
    with open(committed) as f:
        saved = json.load(f)
    (tmp_path / "w" / "seed0" / "records.json").unlink()  # a fresh checkout
    r = cs.main(_args(tmp_path, "0,1"))
    assert calls == [(0, True), (1, True)], calls  # seed 0 not trained again
    assert r["seeds_finished"] == [0, 1]
    assert store.load_finished(str(tmp_path / "w"), [0])[0] == saved


def test_a_killed_seed_leaves_the_report_of_the_seeds_before(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    calls = []
    _fake_stages(monkeypatch, calls)
    real = cs.train_seed

    def dies_at_seed_1(args, seed, existing_arms=True):
        if seed == 1:
            raise KeyboardInterrupt
        return real(args, seed, existing_arms)

    monkeypatch.setattr(cs, "train_seed", dies_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        cs.main(_args(tmp_path, "0,1,2"))
    with open(tmp_path / "results" / "t.json") as f:
        assert json.load(f)["seeds_finished"] == [0]
    assert not (tmp_path / "w" / "seed1" / "records.json").exists()


def _earlier_run(tmp_path, seeds=(0,), **args):
    path = tmp_path / "old.json"
    settings = vars(cs.parse_args(_args(tmp_path, "0", "--pretexts", "rotnet")))
    settings.update(args)
    recs = [r for r in _records(seeds) if not r["model"].startswith(RANDOM_NCF)]
    old = {"args": settings, "machine": {"git_commit": "old1", "date": "d"}}
    path.write_text(json.dumps({**old, "records": recs}))
    return str(path)


def test_reuse_trains_only_the_missing_arm_and_keeps_the_old_records(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    calls = []
    _fake_stages(monkeypatch, calls)
    old = _earlier_run(tmp_path)
    r = cs.main(_args(tmp_path, "0,1", "--reuse", old))
    assert calls == [(0, False), (1, True)]  # seed 1 is not in the earlier run
    assert r["sources"][0]["reused_from"]["commit"] == "old1"
    assert r["sources"][1]["reused_from"] is None
    models = {x["model"] for x in r["records"] if x["seed"] == 0}
    assert {"N_pre", "N_cf K=50", f"{RANDOM_NCF} K=10", "N_cf"} <= models


def test_reuse_is_refused_when_the_random_init_probes_differently(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    _fake_stages(monkeypatch, [], random_shift=0.05)
    with pytest.raises(ValueError, match="random init probes at"):
        cs.main(_args(tmp_path, "0", "--reuse", _earlier_run(tmp_path)))
    assert not (tmp_path / "w" / "seed0" / "records.json").exists()


def test_reuse_is_refused_with_other_settings_or_missing_records(tmp_path):
    args = cs.parse_args(_args(tmp_path, "0"))
    with pytest.raises(ValueError, match="epochs=3"):
        store.read_reuse(_earlier_run(tmp_path, epochs=3), args)
    reuse = store.read_reuse(_earlier_run(tmp_path), args)
    reuse["records"][0] = [r for r in reuse["records"][0] if r["model"] != "N_pre 2x"]
    with pytest.raises(ValueError, match="seed 0 lacks"):
        store.reused_records(reuse, 0, ["rotnet"], [10, 50])
    assert store.reused_records(reuse, 5, ["rotnet"], [10, 50]) is None


def test_fixed_k_must_be_trained():
    with pytest.raises(ValueError, match="--fixed-k 20 is not in --ks"):
        cs.parse_args(["--fixed-k", "20"])
