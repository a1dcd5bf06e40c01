"""benchmarks.control_experiment: seeds of an earlier results file join a run's report."""

import json

import pytest

from benchmarks import control_experiment as ce


TARGETS = ("aligned", "finer", "tops", "digits")


def _report(seeds, shift=0.0, **settings):
    """A `full`-like report: N_pre, N_cf at K = 100 (best on validation) and 1000,
    random init; N_cf - N_pre = 1 + seed + shift on every target at p = 50."""
    recs, fits, clusters = [], [], []
    for s in seeds:
        for p in (0, 50):
            for t in TARGETS:
                base = dict(variant="coarse", p=p, seed=s, target=t)
                gain = (1.0 + s + shift) if p == 50 else 0.0
                recs += [
                    dict(base, model="N_pre", k=None, val=80.0, test=80.0),
                    dict(base, model="N_cf K=100", k=100, val=82.0, test=80.0 + gain),
                    dict(base, model="N_cf K=1000", k=1000, val=81.0, test=99.0),
                    dict(base, model="random init", k=None, val=70.0, test=70.0),
                ]
            fits.append(dict(variant="coarse", p=p, seed=s, train_top1=99.0))
            clusters.append(dict(variant="coarse", p=p, seed=s, k=100, nmi=0.5))
    ran = dict(variants="coarse", rates="0,50", ks="100,1000", preset="full",
               seeds=",".join(map(str, seeds)), output_dir="/x", data_limit=55000,
               epochs=None, probe_train=10000, probe_val=5000, probe_test=-1)  # fmt: skip
    ran.update(settings)
    return {
        "settings": ran,
        "records": recs,
        "npre_fit": fits,
        "clusters": clusters,
        "stage_time_s": {},
        "stages_run_now": [],
        "total_time_s": 1.0,
    }


def _results_file(tmp_path, report):
    path = tmp_path / "old.json"
    machine = {"git_commit": "abc123"}
    path.write_text(json.dumps({"machine": machine, "report": report}))
    return str(path)


def test_reused_seed_joins_the_report_and_k_is_chosen_again(tmp_path):
    old = _report([0])
    old["records"].append(dict(old["records"][1], model="N_cf"))  # a stale chosen row
    joint = ce.with_reused_seeds(
        _report([1, 2]), _results_file(tmp_path, old), str(tmp_path)
    )
    assert joint["settings"]["seeds"] == "0,1,2"
    assert joint["reused_seeds"] == {
        "path": str(tmp_path / "old.json"),
        "seeds": [0],
        "commit": "abc123",
    }
    chosen = [r for r in joint["records"] if r["model"] == "N_cf"]
    assert len(chosen) == 3 * 2 * len(TARGETS) and {r["k"] for r in chosen} == {100}
    assert sorted({f["seed"] for f in joint["npre_fit"]}) == [0, 1, 2]
    md = (tmp_path / "report.md").read_text()
    # N_cf - N_pre at p = 50 per seed: 1, 2, 3 -> mean 2 over n = 3
    assert "+2.00 [" in md and "(n=3)" in md


def test_a_seed_the_run_trained_is_not_taken_from_the_old_file(tmp_path):
    old = _results_file(tmp_path, _report([0, 1], shift=50.0))
    joint = ce.with_reused_seeds(_report([1]), old, str(tmp_path))
    seed1 = [r for r in joint["records"] if r["seed"] == 1 and r["model"] == "N_cf"]
    assert {r["test"] for r in seed1 if r["p"] == 50} == {82.0}  # the run's, not +50
    assert joint["reused_seeds"]["seeds"] == [0]


def test_other_settings_refuse_the_reuse(tmp_path):
    old = _results_file(tmp_path, _report([0], data_limit=640))
    with pytest.raises(ValueError, match="control.data_limit=640"):
        ce.with_reused_seeds(_report([1]), old, str(tmp_path))
