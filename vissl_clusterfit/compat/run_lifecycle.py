"""Patches of VISSL's run life cycle (see the table in ``compat``): atomic checkpoint
writes, resuming only from checkpoints that load, the launcher's error logging, apex
SyncBN without apex; and ``shutdown_process_group`` for the end of a run."""

import copy
import functools
import logging
from typing import Any, Callable

from vissl_clusterfit.compat.patching import once


@once("atomic_checkpoints")
def patch_atomic_checkpoints() -> None:
    """Write VISSL's checkpoints atomically (temporary file, fsync, ``os.replace``).

    ``CheckpointWriter._save`` (every consolidated, sharded and final checkpoint) calls
    ``save_checkpoint`` by the name vissl/utils/checkpoint.py imported from
    classy-vision, which writes in place. The ``checkpoint.torch`` symlink is made by
    ``create_file_symlink`` only after ``_save`` returned, so it always points at a
    complete file. See ``vissl_clusterfit.compat.crash_safe_checkpoints``.
    """
    import vissl.utils.checkpoint as vc

    from vissl_clusterfit.compat.crash_safe_checkpoints import atomic_save_checkpoint

    vc.save_checkpoint = atomic_save_checkpoint


@once("loadable_resume")
def patch_loadable_resume() -> None:
    """Resume only from checkpoints that load; count only a loadable final checkpoint
    as finished training; remove the temporary files of killed writes.

    ``launch_distributed`` calls ``is_training_finished`` and then
    ``get_resume_checkpoint`` (names bound in vissl/utils/distributed_launcher.py) once
    per node before it starts the engine; both are replaced there and in
    vissl/utils/checkpoint.py by ``has_loadable_final_checkpoint`` and
    ``loadable_resume_checkpoint``, which keep VISSL's choice and order of files.
    """
    import vissl.utils.checkpoint as vc
    import vissl.utils.distributed_launcher as dl

    from vissl_clusterfit.compat.crash_safe_checkpoints import (
        has_loadable_final_checkpoint,
        loadable_resume_checkpoint,
    )

    for module in (vc, dl):
        module.get_resume_checkpoint = loadable_resume_checkpoint
        module.is_training_finished = has_loadable_final_checkpoint


class _LauncherLogging:
    """The ``logging`` module as vissl/utils/distributed_launcher.py sees it.

    ``launch_distributed`` reports a RuntimeError of the run with
    ``logging.error("Wrapping up, caught exception: ", e)``: an argument without a
    ``%s`` in the message, so every handler fails to format the record and prints a
    "--- Logging error ---" traceback (one per handler: stdout and log.txt) before the
    real error. ``error`` here appends such arguments to the message instead;
    everything else is the logging module.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(logging, name)

    @staticmethod
    def error(msg: Any, *args: Any, **kwargs: Any) -> None:
        if args and "%" not in str(msg):
            msg, args = str(msg) + " ".join(str(a) for a in args), ()
        kwargs.setdefault("stacklevel", 2)  # the record names VISSL's line, not ours
        logging.error(msg, *args, **kwargs)


@once("launcher_error_logging")
def patch_launcher_error_logging() -> None:
    import vissl.utils.distributed_launcher as dl

    dl.logging = _LauncherLogging()


def _convert_sync_bn_without_apex(original: Callable) -> Callable:
    @functools.wraps(original)  # keeps upstream's docstring; __wrapped__ = upstream
    def convert_sync_bn(config: Any, model: Any) -> Any:
        from vissl.utils.misc import is_apex_available

        sync_bn = config.MODEL.SYNC_BN_CONFIG
        if sync_bn.SYNC_BN_TYPE == "apex" and not is_apex_available():
            logging.warning(
                "config.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE=apex but apex is not "
                "installed: using PyTorch's SyncBatchNorm (same statistics, same "
                "GROUP_SIZE process groups; apex's kernels are only faster). Set "
                "SYNC_BN_TYPE=pytorch to silence this warning"
            )
            config = copy.deepcopy(config)
            config.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE = "pytorch"
        return original(config, model)

    return convert_sync_bn


@once("apex_syncbn_fallback")
def patch_apex_syncbn_fallback() -> None:
    """``SYNC_BN_TYPE: apex`` without apex falls back to PyTorch's SyncBatchNorm.

    VISSL's benchmark configs (e.g. the ImageNet linear evaluations) set
    ``CONVERT_BN_TO_SYNC_BN: True, SYNC_BN_TYPE: apex``; apex has no wheel for this
    stack, and upstream ``to_apex_syncbn`` then fails with ``NameError: name 'apex' is
    not defined`` when the model is built. PyTorch's ``nn.SyncBatchNorm`` computes the
    same synchronised statistics; the fallback is logged. The model is converted where
    vissl/trainer/train_task.py imported ``convert_sync_bn``; the config is not
    changed (the run's train_config.yaml keeps what the user asked for).
    """
    import vissl.models as vm
    import vissl.models.model_helpers as mh
    import vissl.trainer.train_task as tt

    patched = _convert_sync_bn_without_apex(mh.convert_sync_bn)
    for module in (mh, vm, tt):
        module.convert_sync_bn = patched


def shutdown_process_group() -> None:
    """Destroy the default ``torch.distributed`` process group, if there is one.

    Call it at the end of an engine (and of a launcher that ran the engine in its own
    process). VISSL's trainer creates the group and nothing ever destroys it. A gloo
    group keeps worker threads; one of them may still hold the last reference to the
    tensors of the run's last collective (e.g. the ``broadcast_object_list`` that
    ends the cluster step) when the interpreter starts finalizing. That thread then
    needs the GIL to free them, is told to exit by Python's finalization
    (``pthread_exit`` inside a C++ destructor) and the process aborts with "terminate
    called without an active exception" (exit code 134), after all files are written.
    ``destroy_process_group`` joins the worker threads while Python is still alive.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
