"""Crash-safe VISSL checkpoints: atomic writes, and a resume that skips files that do
not load.

VISSL 0.1.6 writes ``model_phaseN.torch``, ``model_iterationN.torch`` and
``model_final_checkpoint_phaseN.torch`` in place: ``CheckpointWriter._save`` calls
classy-vision's ``save_checkpoint``, which opens the final name for writing and
``torch.save``s into it. A process killed mid-write leaves a truncated file under the
final name; with ``CHECKPOINT.AUTO_RESUME`` VISSL resumes from the newest name, and
every re-run fails with "PytorchStreamReader failed reading zip archive" until the
file is deleted by hand. A truncated final checkpoint is worse: VISSL takes its
presence as "training already succeeded" and exits without training.

- ``atomic_save_checkpoint``: the same call, written to a temporary file in the same
  folder, fsynced, then ``os.replace``d over the final name (atomic on POSIX file
  systems): the final name holds the previous content or the complete new one.
- ``loadable_resume_checkpoint``: VISSL's choice of resume checkpoint, except that a
  candidate that does not load is skipped with a warning naming it, falling back to
  the next older one, then to a fresh start.
- ``has_loadable_final_checkpoint``: VISSL's "training finished" test, counting only a
  final checkpoint that loads.
- The temporary files of killed writes (``vissl_clusterfit.io.remove_stale_tmp_files``)
  are deleted when a run starts, before any rank of it writes a checkpoint (every rank
  of a multi-node run passes VISSL's launcher, which calls it, before the process group
  forms and training can begin).
"""

import contextlib
import logging
import os
import zipfile
from typing import Any, List, Optional

import torch

from vissl_clusterfit.io import atomic_write, remove_stale_tmp_files


SYMLINK_NAME = "checkpoint.torch"


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file under ``path``
    (``vissl_clusterfit.io.atomic_write``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_checkpoint(
    checkpoint_folder: str, state: Any, checkpoint_file: str = SYMLINK_NAME
) -> str:
    """classy_vision.generic.util.save_checkpoint (as VISSL's CheckpointWriter calls it)
    with an atomic write. Non-local paths (``scheme://``) go to classy-vision's own
    function: ``os.replace`` needs a local file system."""
    if "://" in checkpoint_folder:
        from classy_vision.generic.util import save_checkpoint

        return save_checkpoint(checkpoint_folder, state, checkpoint_file)
    os.makedirs(checkpoint_folder, exist_ok=True)
    full_filename = f"{checkpoint_folder}/{checkpoint_file}"
    atomic_torch_save(state, full_filename)
    return full_filename


def checkpoint_load_error(path: str) -> Optional[str]:
    """None when the checkpoint at ``path`` loads; otherwise why not, in one line.

    Zip checkpoints (every ``torch.save`` since torch 1.6) are opened with
    ``mmap=True``: the archive and the pickle are read and checked, the tensor data
    is not copied, so checking a ResNet-50 checkpoint costs little memory. A sharded
    checkpoint's list is checked together with its shards.
    """
    try:
        mmap = zipfile.is_zipfile(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # any reason not to load: truncation, garbage, missing
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0] if lines else ''}"
    if isinstance(checkpoint, dict) and checkpoint.get("type") == "shard_list":
        for shard in checkpoint.get("shards", []):
            shard_path = shard
            if not os.path.isabs(shard):
                shard_path = os.path.join(os.path.dirname(path), shard)
            error = checkpoint_load_error(shard_path)
            if error is not None:
                return f"its shard {shard_path} does not load ({error})"
    return None


def _listdir(checkpoint_folder: str) -> List[str]:
    from iopath.common.file_io import g_pathmgr

    return list(g_pathmgr.ls(checkpoint_folder))


def _is_final(name: str) -> bool:
    # VISSL's final checkpoints; a shard is loaded through its list, never directly
    return name.endswith(".torch") and "model_final" in name and "_shard" not in name


def resume_candidates(checkpoint_folder: str, cfg: Any) -> List[str]:
    """The checkpoint file names VISSL's ``get_checkpoint_resume_files`` chooses from,
    in the order it prefers them: the final checkpoint (unless
    ``CHECKPOINT.OVERWRITE_EXISTING``), then ``model_iterationN`` (with
    ``CHECKPOINT_ITER_FREQUENCY > 0``) or ``model_phaseN`` files from the one it
    picks (``LATEST_CHECKPOINT_RESUME_FILE_NUM``) to the oldest."""
    ckpt = cfg["CHECKPOINT"]
    files = _listdir(checkpoint_folder)
    prefix = (
        "model_iteration" if ckpt["CHECKPOINT_ITER_FREQUENCY"] > 0 else "model_phase"
    )
    finals = [] if ckpt["OVERWRITE_EXISTING"] else sorted(filter(_is_final, files))
    numbers = sorted(
        (
            int(f[len(prefix) : -len(".torch")])
            for f in files
            if f.startswith(prefix)
            and f.endswith(".torch")
            and f[len(prefix) : -len(".torch")].isdigit()
        ),
        reverse=True,
    )
    first = min(len(numbers) - 1, max(0, ckpt["LATEST_CHECKPOINT_RESUME_FILE_NUM"] - 1))
    return finals + [f"{prefix}{n}.torch" for n in numbers[max(first, 0) :]]


def loadable_resume_checkpoint(cfg: Any, checkpoint_folder: str) -> Optional[str]:
    """vissl.utils.checkpoint.get_resume_checkpoint, skipping checkpoints that do not
    load (each named in a warning). None: start from the beginning."""
    remove_stale_tmp_files(checkpoint_folder)
    if not cfg["CHECKPOINT"]["AUTO_RESUME"]:
        return None
    skipped = []
    for name in resume_candidates(checkpoint_folder, cfg):
        path = f"{checkpoint_folder}/{name}"
        error = checkpoint_load_error(path)
        if error is None:
            logging.info(f"Resume from file: {path}")
            return path
        skipped.append(path)
        logging.warning(
            f"Skipping checkpoint {path}: it does not load ({error}). A run killed "
            "while writing it leaves such a file; trying the previous checkpoint"
        )
    if skipped:
        logging.warning(
            f"No checkpoint in {checkpoint_folder} loads (skipped: {skipped}): "
            "training starts from the beginning"
        )
    return None


def has_loadable_final_checkpoint(cfg: Any, checkpoint_folder: str) -> bool:
    """vissl.utils.checkpoint.is_training_finished, counting only a final checkpoint
    that loads (a truncated one is named in a warning and resumed past).

    VISSL's launcher calls this first, before it looks for a resume checkpoint, so the
    resume housekeeping happens here too: stale temporary files are removed, and with
    ``CHECKPOINT.USE_SYMLINK_CHECKPOINT_FOR_RESUME`` a ``checkpoint.torch`` link whose
    target does not load is removed (the launcher then falls back to
    ``loadable_resume_checkpoint``).
    """
    remove_stale_tmp_files(checkpoint_folder)
    if cfg["CHECKPOINT"].get("USE_SYMLINK_CHECKPOINT_FOR_RESUME"):
        _drop_unloadable_symlink(checkpoint_folder)
    if cfg["CHECKPOINT"]["OVERWRITE_EXISTING"]:
        return False
    for name in sorted(filter(_is_final, _listdir(checkpoint_folder))):
        path = f"{checkpoint_folder}/{name}"
        error = checkpoint_load_error(path)
        if error is None:
            return True
        logging.warning(
            f"Final checkpoint {path} does not load ({error}): the training is not "
            "finished; resuming from the last checkpoint that loads"
        )
    return False


def _drop_unloadable_symlink(checkpoint_folder: str) -> None:
    link = os.path.join(checkpoint_folder, SYMLINK_NAME)
    if not os.path.lexists(link):
        return
    error = checkpoint_load_error(link)
    if error is not None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(link)
        logging.warning(
            f"Removed {link} (-> {os.path.realpath(link)}): its checkpoint does not "
            f"load ({error})"
        )
