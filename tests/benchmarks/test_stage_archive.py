"""benchmarks.stage_archive: finished stages leave the work dir and come back."""

import json
import os
import shutil

import pytest

from benchmarks import stage_archive as sa


def _stage(work, rel, final=True, probe=True, labels=False, epoch=None):
    """A stage folder as the control experiment leaves it."""
    folder = work / rel
    folder.mkdir(parents=True, exist_ok=True)
    if final:
        (folder / "model_final_checkpoint_phase39.torch").write_bytes(os.urandom(64))
    if epoch is not None:
        (folder / f"model_phase{epoch}.torch").write_bytes(b"epoch")
    (folder / "metrics.json").write_text('{"train_accuracy_list_meter": {}}\n')
    (folder / "stdout.log").write_text("long log\n")
    if probe:
        (folder / "probe_res5.json").write_text('{"key": {}, "result": {}}')
    if labels:
        (folder / "clusterfit").mkdir(exist_ok=True)
        (folder / "clusterfit" / "clusterfit_labels.npy").write_bytes(b"labels")
        (folder / "clusterfit" / "clusterfit_meta.json").write_text("{}")
        (folder / "clusterfit" / ".clusterfit_meta.json.vcf-h-1.tmp").write_text("x")
    return folder


@pytest.fixture
def work(tmp_path):
    work = tmp_path / "work" / "run"
    _stage(work, "coarse/p0/s1/npre")
    _stage(work, "coarse/p0/s1/ncf_k100", labels=True)
    _stage(work, "coarse/p0/s1/ncf_k1000", final=False, probe=False, epoch=7)
    (work / "stage_times.json").write_text('{"coarse/p0/s1/npre": {"wall_s": 5.0}}')
    (work / "training_settings.json").write_text('{"data_limit": 55000}')
    return work


def test_archive_then_restore_into_a_fresh_work_dir(work, tmp_path):
    dest = str(tmp_path / "kept")
    assert sa.archive(str(work), dest) == ["coarse/p0/s1/ncf_k100", "coarse/p0/s1/npre"]
    kept = tmp_path / "kept" / "coarse" / "p0" / "s1"
    assert not (kept / "ncf_k1000").exists()  # still training: not kept
    assert sorted(os.listdir(kept / "ncf_k100" / "clusterfit")) == [
        "clusterfit_labels.npy",
        "clusterfit_meta.json",
    ]  # fmt: skip (no tmp file)
    assert not (kept / "npre" / "stdout.log").exists()
    ckpt = work / "coarse/p0/s1/npre/model_final_checkpoint_phase39.torch"
    blob, mtime = ckpt.read_bytes(), os.stat(ckpt).st_mtime
    assert sa.archive(str(work), dest) == []  # nothing new

    shutil.rmtree(work.parent)  # a fresh checkout
    restored = sa.restore(str(work), dest)
    assert restored == ["coarse/p0/s1/ncf_k100", "coarse/p0/s1/npre"]
    assert ckpt.read_bytes() == blob and os.stat(ckpt).st_mtime == mtime
    npre = work / "coarse/p0/s1/npre"
    assert (npre / "probe_res5.json").read_text() == '{"key": {}, "result": {}}'
    assert (work / "coarse/p0/s1/ncf_k100/clusterfit/clusterfit_labels.npy").exists()
    assert json.loads((work / "stage_times.json").read_text()) == {
        "coarse/p0/s1/npre": {"wall_s": 5.0}}  # fmt: skip
    assert json.loads((work / "training_settings.json").read_text()) == {
        "data_limit": 55000}  # fmt: skip
    assert sa.restore(str(work), dest) == []  # the work dir's stages win


def test_a_probe_that_arrives_later_is_archived_again(work, tmp_path):
    dest = str(tmp_path / "kept")
    (work / "coarse/p0/s1/npre/probe_res5.json").unlink()
    sa.archive(str(work), dest)
    (work / "coarse/p0/s1/npre/probe_res5.json").write_text('{"late": 1}')
    assert sa.archive(str(work), dest) == ["coarse/p0/s1/npre"]
    assert (tmp_path / "kept/coarse/p0/s1/npre/probe_res5.json").read_text() == (
        '{"late": 1}'
    )


def test_skip_leaves_stages_out(work, tmp_path):
    dest = str(tmp_path / "kept")
    written = sa.archive(str(work), dest, skip=lambda s: s.endswith("npre"))
    assert written == ["coarse/p0/s1/ncf_k100"]


def test_a_changed_checkpoint_is_refused(work, tmp_path):
    dest = tmp_path / "kept"
    sa.archive(str(work), str(dest))
    shutil.rmtree(work)
    (dest / "coarse/p0/s1/npre/model_final_checkpoint_phase39.torch").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"npre/model_final_checkpoint_phase39.torch"):
        sa.restore(str(work), str(dest))
    assert not (
        work / "coarse/p0/s1/npre/model_final_checkpoint_phase39.torch"
    ).exists()


def test_stages_of_other_settings_are_refused(work, tmp_path):
    dest = str(tmp_path / "kept")
    sa.archive(str(work), dest)
    shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "training_settings.json").write_text('{"data_limit": 640}')
    with pytest.raises(ValueError, match="training_settings.json differ"):
        sa.restore(str(work), dest)


def test_the_probe_cache_still_holds_after_a_restore(tmp_path):
    """The control experiment's probe cache is keyed on the checkpoint's path, size
    and modification time: a restored stage is not probed again."""
    from benchmarks.plugin import cached_probe

    work = tmp_path / "work" / "run"
    folder = _stage(work, "coarse/p0/s1/npre", probe=False)
    ckpt = str(folder / "model_final_checkpoint_phase39.torch")
    cache = str(folder / "probe_res5.json")
    key = {
        "checkpoint": ckpt,
        "mtime": os.stat(ckpt).st_mtime,
        "size": os.stat(ckpt).st_size,
        "targets": ["fmnist10"],
        "probe": {"C": 1.0, "max_iter": 1000, "features": "res5 2x2 avg"},
    }
    with open(cache, "w") as f:
        json.dump({"key": key, "result": {"fmnist10": {"val": 1, "test": 2}}}, f)
    assert cached_probe(ckpt, ["fmnist10"], {}, cache) == (
        {"fmnist10": {"val": 1, "test": 2}}, False)  # fmt: skip
    dest = str(tmp_path / "kept")
    sa.archive(str(work), dest)
    shutil.rmtree(work)
    sa.restore(str(work), dest)
    assert cached_probe(ckpt, ["fmnist10"], {}, cache)[1] is False
