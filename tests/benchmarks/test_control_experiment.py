"""benchmarks.control_experiment: seeds of an earlier results file join a run's report."""

import dataclasses
import json
import os
import shutil

import pytest

from benchmarks import control_experiment as ce
from benchmarks.plugin import ControlSettings


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


class FakeControl:
    """control_main for one (seed, rate) cell: the `_report` rows of that cell; records
    each call's (seed, rate); ``fail_on`` raises on that call (a killed run)."""

    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, argv):
        last = {a.split("=")[0]: a.split("=")[1] for a in argv}
        seed, rate = int(last["control.seeds"]), int(last["control.rates"])
        self.calls.append((seed, rate))
        if (seed, rate) == self.fail_on:
            raise RuntimeError("killed")
        rep = _report([seed])
        ours = [a for a in argv if a.startswith("control.")]
        rep["settings"] = dataclasses.asdict(ControlSettings.from_args(ours))
        for key in ce.SEED_LISTS:
            rep[key] = [x for x in rep[key] if x["p"] == rate]
        rep["records"].append(dict(rep["records"][1], model="N_cf"))  # a chosen row
        rep["stage_time_s"] = {
            f"coarse/p{rate}/s{seed}/npre": {"wall_s": 1.0, "cpu_s": 1.0},
            f"probe:random/s{seed}": {"wall_s": 2.0, "cpu_s": 2.0},
            "coarse/p99/s7/npre": {
                "wall_s": 3.0,
                "cpu_s": 3.0,
            },  # another cell's, in a shared folder
        }
        rep["stages_run_now"] = [f"coarse/p{rate}/s{seed}/npre"]
        return rep


@pytest.fixture
def cells(tmp_path, monkeypatch):
    from benchmarks import common, plugin

    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    work = tmp_path / "work" / "full_run"
    argv = ["control.preset=full", f"control.output_dir={work}", "control.seeds=1,2"]

    def run(fake):
        monkeypatch.setattr(plugin, "control_main", fake)
        return ce.run_cells(argv, "abc123")

    return run, tmp_path / "results" / "control_experiment_finished" / "full_run"


def test_cells_run_one_at_a_time_and_a_finished_cell_is_kept(cells):
    run, finished = cells
    fake = FakeControl()
    joint = run(fake)
    assert fake.calls == [(1, 0), (1, 50), (2, 0), (2, 50)]
    assert sorted(p.name for p in finished.iterdir()) == [
        "s1_p0.json", "s1_p50.json", "s2_p0.json", "s2_p50.json"]  # fmt: skip
    cell = json.loads((finished / "s2_p50.json").read_text())
    assert cell["commit"] == "abc123" and (cell["seed"], cell["rate"]) == (2, 50)
    assert "seeds" not in cell["settings"] and cell["settings"]["data_limit"] == 55000
    assert {r["model"] for r in cell["records"]} == {
        "N_pre", "N_cf K=100", "N_cf K=1000", "random init"}  # fmt: skip
    assert {(r["seed"], r["p"]) for r in cell["records"]} == {(2, 50)}
    assert set(cell["stage_time_s"]) == {"coarse/p50/s2/npre", "probe:random/s2"}
    assert joint["settings"]["seeds"] == "1,2" and len(joint["stages_run_now"]) == 4
    chosen = [r for r in joint["records"] if r["model"] == "N_cf"]
    assert len(chosen) == 2 * 2 * len(TARGETS)  # one per seed, rate and target
    report_md = finished.parent.parent.parent / "work" / "full_run" / "report.md"
    assert "+2.50 [" in report_md.read_text()  # N_cf - N_pre at p = 50: 2 and 3


def test_a_rerun_takes_every_finished_cell_and_trains_nothing(cells):
    run, _ = cells
    first = run(FakeControl())
    fake = FakeControl()
    again = run(fake)
    assert fake.calls == [] and again["stages_run_now"] == []
    assert again["records"] == first["records"]


def test_a_killed_run_keeps_the_cells_it_finished(cells):
    run, finished = cells
    with pytest.raises(RuntimeError, match="killed"):
        run(FakeControl(fail_on=(2, 0)))
    assert sorted(p.name for p in finished.iterdir()) == ["s1_p0.json", "s1_p50.json"]
    fake = FakeControl()
    run(fake)
    assert fake.calls == [(2, 0), (2, 50)]


def test_a_finished_cell_of_other_settings_is_refused(cells):
    run, finished = cells
    run(FakeControl())
    path = finished / "s1_p50.json"
    cell = json.loads(path.read_text())
    cell["settings"]["data_limit"] = 640
    path.write_text(json.dumps(cell))
    with pytest.raises(ValueError, match=r"s1_p50.json: .*control.data_limit=640"):
        run(FakeControl())


class StageWritingControl(FakeControl):
    """FakeControl whose cell first leaves a finished N_pre stage in the work dir (and
    records whether that stage was there before it started)."""

    def __init__(self, work, fail_on=None):
        super().__init__(fail_on)
        self.work, self.found = work, []

    def __call__(self, argv):
        last = {a.split("=")[0]: a.split("=")[1] for a in argv}
        stage = self.work / f"coarse/p{last['control.rates']}/s{last['control.seeds']}"
        ckpt = stage / "npre" / "model_final_checkpoint_phase39.torch"
        self.found.append(ckpt.exists())
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"weights")
        return super().__call__(argv)


def test_a_killed_cells_finished_stages_survive_a_fresh_checkout(cells, tmp_path):
    run, finished = cells
    work = tmp_path / "work" / "full_run"
    with pytest.raises(RuntimeError, match="killed"):
        run(StageWritingControl(work, fail_on=(2, 0)))
    kept = finished / "stages" / "coarse"
    # finished cells' stages are not kept (their cell files are); the killed cell's are
    assert sorted(p.name for p in kept.iterdir()) == ["p0"]
    assert os.listdir(kept / "p0") == ["s2"]
    shutil.rmtree(work)  # a fresh checkout: the work dir is git-ignored
    fake = StageWritingControl(work)
    run(fake)
    assert fake.calls == [(2, 0), (2, 50)] and fake.found == [True, False]
    assert not (kept / "p0" / "s2").exists()  # the finished cell supersedes them
