"""Finished training stages kept in the repository, so that a benchmark whose unit of
work outlasts a working session goes on in a fresh checkout.

The control experiment's ``full`` preset needs about 5 h of 2 CPU cores per (seed, rate)
cell, in stages of about an hour each (N_pre, then N_cf at each K), while a session lasts 3 h
and a fresh checkout starts without the git-ignored work dir. Finished cells are kept
by ``control_experiment.finished_path``; this module keeps the finished *stages* of
cells still running: ``archive`` copies each stage folder of a work dir that holds its
final checkpoint into ``results/<...>_finished/<name>/stages/<stage path>/`` (the final
checkpoint, the cached probe, VISSL's metrics and config, the label set); ``restore``
puts them back into an empty work dir before the run starts, where the stage is then
reused as if it had never left (``experiments.pipeline.training.train`` reuses a folder
with a final checkpoint; the probe cache is keyed on the checkpoint's path, size and
modification time, so the time is recorded here and set again, since git does not keep
it). A stage still training is not archived: a killed run loses its epochs, as any run
on a fresh machine does.

Written here rather than with VISSL's checkpointing: VISSL resumes a run from the
checkpoints of its own folder, and nothing in VISSL, classy-vision or fvcore carries a
run folder across checkouts.

Example (from the repository root)::

    python -m benchmarks.stage_archive archive benchmarks/_work/control_experiment_full_seeds012
    python -m benchmarks.stage_archive restore benchmarks/_work/control_experiment_full_seeds012
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
from typing import Callable, Dict, List, Optional

from benchmarks import common


# what a finished stage needs to be reused and reported (the final checkpoint aside):
# the probe cache, N_pre's train accuracy (metrics.json), VISSL's config and stdout
# summary, the label-noise record and the cluster label set (its meta is reported)
STAGE_FILES = (
    "probe_res5.json",
    "metrics.json",
    "stdout.json",
    "train_config.yaml",
    "vcf_label_noise_train.json",
)
STAGE_FOLDERS = ("clusterfit",)
INDEX = "archived.json"  # per stage: checkpoint name, size, mtime, sha256
TIMES = "stage_times.json"  # the control experiment's stage times, merged
# the settings the stages were trained with: restored only into a work dir without
# one, where the control experiment then refuses a run with other settings
SETTINGS = "training_settings.json"


def archive_dir(work_dir: str) -> str:
    """``results/control_experiment_finished/<work dir name>/stages``: beside the
    finished cells of the same run."""
    name = os.path.basename(os.path.normpath(work_dir))
    return os.path.join(
        common.RESULTS_DIR, "control_experiment_finished", name, "stages"
    )


def _final_checkpoint(folder: str) -> Optional[str]:
    found = glob.glob(os.path.join(folder, "model_final_checkpoint_phase*.torch"))
    return max(found, key=lambda p: int(p.rsplit("phase", 1)[1].split(".")[0]), default=None)  # fmt: skip


def _read(path: str) -> Dict:
    with open(path) as f:
        return json.load(f)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy(src: str, dst: str) -> None:
    """``src`` to ``dst``, complete or not at all (a killed copy leaves no half file)."""
    from benchmarks.plugin import atomic_write

    with open(src, "rb") as f:
        atomic_write(dst, lambda out: shutil.copyfileobj(f, out))


def _merge_times(src: str, dst: str) -> None:
    if not os.path.isfile(src):
        return
    merged: Dict = {}
    for path in (dst, src):
        if os.path.isfile(path):
            merged.update(_read(path))
    common.write_json(dst, merged)


def finished_stages(work_dir: str) -> List[str]:
    """Stage folders under ``work_dir`` (relative) that hold a final checkpoint."""
    found = glob.glob(
        os.path.join(work_dir, "**", "model_final_checkpoint_phase*.torch"),
        recursive=True,
    )
    return sorted({os.path.relpath(os.path.dirname(p), work_dir) for p in found})


def archive(
    work_dir: str,
    dest: Optional[str] = None,
    skip: Callable[[str], bool] = lambda stage: False,
) -> List[str]:
    """Copy every finished stage of ``work_dir`` not yet in ``dest`` (or whose probe
    or label set arrived since) into ``dest``, but those that ``skip(stage)`` (stage
    paths relative to ``work_dir``); returns the stages written."""
    dest = dest or archive_dir(work_dir)
    written = []
    for stage in finished_stages(work_dir):
        if skip(stage):
            continue
        src, out = os.path.join(work_dir, stage), os.path.join(dest, stage)
        ckpt = _final_checkpoint(src)
        names = [os.path.basename(ckpt)]
        names += [f for f in STAGE_FILES if os.path.isfile(os.path.join(src, f))]
        for folder in STAGE_FOLDERS:
            for path in sorted(glob.glob(os.path.join(src, folder, "*"))):
                if os.path.isfile(path) and not os.path.basename(path).startswith("."):
                    names.append(os.path.relpath(path, src))
        index_path = os.path.join(out, INDEX)
        old = _read(index_path) if os.path.isfile(index_path) else {}
        if old.get("files") == names:
            continue
        for rel in names:
            _copy(os.path.join(src, rel), os.path.join(out, rel))
        stat = os.stat(ckpt)
        index = {
            "checkpoint": names[0],
            "size": stat.st_size,
            "mtime": stat.st_mtime,
            "sha256": _sha256(ckpt),
            "files": names,
        }
        common.write_json(index_path, index)
        written.append(stage)
    _merge_times(os.path.join(work_dir, TIMES), os.path.join(dest, TIMES))
    if written and os.path.isfile(os.path.join(work_dir, SETTINGS)):
        _copy(os.path.join(work_dir, SETTINGS), os.path.join(dest, SETTINGS))
    return written


def restore(work_dir: str, src: Optional[str] = None) -> List[str]:
    """Put every archived stage that ``work_dir`` lacks back into it, with its
    checkpoint's modification time; returns the stages restored. ValueError naming the
    file when an archived checkpoint is not the one its index describes."""
    src = src or archive_dir(work_dir)
    restored = []
    settings, kept = os.path.join(work_dir, SETTINGS), os.path.join(src, SETTINGS)
    if os.path.isfile(kept):
        if not os.path.isfile(settings):
            _copy(kept, settings)
        elif _read(kept) != _read(settings):
            raise ValueError(
                f"{kept} and {settings} differ: the archived stages were trained with "
                "other settings than this work dir's; give the run another work dir "
                "name, or delete the archive to train them again"
            )
    for index_path in sorted(glob.glob(os.path.join(src, "**", INDEX), recursive=True)):
        folder = os.path.dirname(index_path)
        stage = os.path.relpath(folder, src)
        out = os.path.join(work_dir, stage)
        if _final_checkpoint(out):
            continue  # the work dir's own stage wins
        index = _read(index_path)
        ckpt = os.path.join(folder, index["checkpoint"])
        if not os.path.isfile(ckpt) or _sha256(ckpt) != index["sha256"]:
            raise ValueError(
                f"{ckpt}: missing or not the checkpoint {index_path} describes (sha256 "
                f"{index['sha256'][:12]}...): delete {folder} to train the stage again"
            )
        for rel in index["files"][1:] + index["files"][:1]:  # the checkpoint last
            _copy(os.path.join(folder, rel), os.path.join(out, rel))
        os.utime(os.path.join(out, index["checkpoint"]), (index["mtime"],) * 2)
        restored.append(stage)
    _merge_times(os.path.join(src, TIMES), os.path.join(work_dir, TIMES))
    return restored


def drop(work_dir: str, prefix: str) -> None:
    """Delete the archived stages under ``prefix`` (say ``coarse/p50/s1``, once that
    cell is kept whole) and the folders this leaves empty."""
    root = archive_dir(work_dir)
    folder = os.path.join(root, prefix)
    shutil.rmtree(folder, ignore_errors=True)
    folder = os.path.dirname(folder)
    while os.path.isdir(folder) and not os.listdir(folder) and folder != root:
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def main(argv: Optional[List[str]] = None) -> List[str]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.stage_archive",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("action", choices=("archive", "restore"))
    p.add_argument("work_dir")
    p.add_argument("--dir", default="", help="the archive (default: archive_dir)")
    args = p.parse_args(argv)
    fn = archive if args.action == "archive" else restore
    stages = fn(args.work_dir, args.dir or None)
    where = args.dir or archive_dir(args.work_dir)
    print(f"[stage_archive] {args.action}: {len(stages)} stage(s) ({where})")
    for stage in stages:
        print(f"  {stage}")
    return stages


if __name__ == "__main__":
    main()
