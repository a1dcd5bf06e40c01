"""Fixes for VISSL 0.1.6 / classy-vision 0.7.0 on Python 3.11, torch 2.x, numpy 1.26.

VISSL's last release predates this stack. Each patch below names the upstream file it
replaces, says why, and is applied once at ``import vissl_clusterfit`` (``apply_all`` is
idempotent). Nothing in site-packages is edited. Each patch has a test that fails
without it: in ``tests/compat/test_patches.py``, or in the test file of the module that holds
the patch's body (``crash_safe_checkpoints``: ``tests/compat/test_crash_safe_checkpoints.py``).

| patch                      | upstream                                         | symptom fixed |
|----------------------------|--------------------------------------------------|---------------|
| ``numpy_aliases``          | vissl/meters/mean_ap_meter.py, svm_utils, ...    | ``np.float`` etc. removed in numpy 1.24 |
| ``fast_broadcast_object``  | classy_vision/generic/distributed_util.py        | 16-20 s per ResNet-50 checkpoint load |
| ``trusted_torch_load``     | vissl/utils/cluster_utils.py, checkpoint.py      | torch>=2.6 ``weights_only=True`` refuses VISSL files |
| ``cpu_feature_extraction`` | vissl/trainer/trainer_main.py                    | extract_features asserts a GPU |
| ``hydra_version_base``     | vissl/utils/hydra_config.py                      | hydra>=1.2 warns on every compose |
| ``atomic_checkpoints``     | vissl/utils/checkpoint.py (``save_checkpoint``)  | a kill mid-write leaves a truncated checkpoint under its final name |
| ``loadable_resume``        | vissl/utils/checkpoint.py, distributed_launcher.py | AUTO_RESUME resumes from a checkpoint that does not load; a truncated final checkpoint counts as finished training |
| ``launcher_error_logging`` | vissl/utils/distributed_launcher.py              | two "--- Logging error ---" tracebacks around every RuntimeError of a run |
| ``apex_syncbn_fallback``   | vissl/models/model_helpers.py                    | ``SYNC_BN_TYPE: apex`` without apex: ``NameError: name 'apex' is not defined`` |
| ``phase_iterators``        | vissl/trainer/train_task.py, vissl/data/__init__.py (``build_dataloader``) | a full ``gc.collect()`` at every phase start (0.5-0.7 s on 2 shared CPU cores); workers forked anew every phase (``config.VCF.DATA``) |

``phase_iterators`` lives in ``compat/phase_iterators.py`` (with the time stamps that
``PhaseTimerHook`` logs); the four before it and ``shutdown_process_group`` in
``run_lifecycle`` (the run's life cycle: checkpoints, launcher, SyncBN); the decorator that
applies a patch once is in ``patching``.

Not a patch: ``shutdown_process_group()``, for the end of an engine and of a launcher
that ran one in its own process (VISSL never destroys its process group; a gloo worker
thread can then abort the process at exit with code 134; see its docstring).
"""

import io
import logging
from typing import Any, Dict, List

import numpy as np
import torch

from vissl_clusterfit.compat.patching import once
from vissl_clusterfit.compat.phase_iterators import patch_phase_iterators
from vissl_clusterfit.compat.run_lifecycle import (
    patch_apex_syncbn_fallback,
    patch_atomic_checkpoints,
    patch_launcher_error_logging,
    patch_loadable_resume,
    shutdown_process_group,
)


@once("numpy_aliases")
def patch_numpy_aliases() -> None:
    """Restore ``np.float/np.int/np.bool/np.object`` (removed in numpy 1.24).

    VISSL uses them in mean_ap_meter (VOC07 benchmark), the cutmixup collator,
    svm_utils and rmac. The aliases are the Python builtins numpy used to re-export,
    so restoring them changes no result.
    """
    for name, value in (
        ("float", float),
        ("int", int),
        ("bool", bool),
        ("object", object),
    ):
        if name not in np.__dict__:
            setattr(np, name, value)


def fast_broadcast_object(obj: Any, src: int = 0, use_disk: bool = True) -> Any:
    """classy_vision.generic.distributed_util.broadcast_object without the slow copy.

    Upstream builds ``torch.ByteTensor(memoryview)``, which copies the serialized
    checkpoint byte by byte through Python (16-20 s for a ResNet-50, even with one
    process). ``torch.frombuffer`` wraps the same bytes without a copy. The payload is
    our own rank ``src``'s ``torch.save`` output, so ``weights_only=False`` is safe.
    ``use_disk`` is accepted for signature compatibility; receivers read from memory.
    """
    from classy_vision.generic import distributed_util as du

    if du.get_rank() == src:
        payload = io.BytesIO()
        torch.save(obj, payload)
        data = bytearray(payload.getbuffer())
        length = du.broadcast(torch.tensor([len(data)], dtype=torch.long), src=src)
        du.broadcast(torch.frombuffer(data, dtype=torch.uint8), src=src)
        return obj
    length = du.broadcast(torch.tensor([0], dtype=torch.long), src=src)
    data_tensor = torch.empty([int(length.item())], dtype=torch.uint8)
    data_tensor = du.broadcast(data_tensor, src=src)
    return torch.load(io.BytesIO(data_tensor.numpy().tobytes()), weights_only=False)


@once("fast_broadcast_object")
def patch_broadcast_object() -> None:
    """Replace classy-vision's broadcast_object everywhere it was imported by name."""
    import classy_vision.generic.distributed_util as du
    import classy_vision.generic.util as cu

    du.broadcast_object = fast_broadcast_object
    if hasattr(cu, "broadcast_object"):
        cu.broadcast_object = fast_broadcast_object
    try:
        import vissl.utils.checkpoint as vc

        if hasattr(vc, "broadcast_object"):
            vc.broadcast_object = fast_broadcast_object
    except ImportError:  # pragma: no cover
        pass


class _TrustedTorch:
    """A stand-in for the ``torch`` module inside one VISSL module whose ``load``
    defaults to ``weights_only=False``. Everything else is forwarded to torch.

    torch>=2.6 loads with ``weights_only=True`` by default, which refuses VISSL's
    cluster assignment files (they hold an AttrDict) and checkpoints with non-tensor
    state. These files are written by VISSL runs the user started on their own disk.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


@once("trusted_torch_load")
def patch_trusted_torch_load() -> None:
    import classy_vision.generic.util as cu
    import vissl.utils.checkpoint as vc
    import vissl.utils.cluster_utils as vcu

    for module in (vcu, vc, cu):
        module.torch = _TrustedTorch()


def _extract_split_features_any_device(
    self: Any, feat_names: List[str], task: Any, split_name: str, output_folder: str
) -> None:
    """SelfSupervisionTrainer._extract_split_features with ``.to(task.device)``
    instead of ``.cuda()``; writes the same rank{r}_chunk{i}_{split}_{layer}_*.npy files.
    """
    task.model.eval()
    dist_rank = torch.distributed.get_rank()
    out_features: Dict[str, Dict[int, np.ndarray]] = {n: {} for n in feat_names}
    out_targets: Dict[str, Dict[int, np.ndarray]] = {n: {} for n in feat_names}
    chunk_index, buffered = 0, 0
    threshold = self.cfg.EXTRACT_FEATURES.CHUNK_THRESHOLD
    for sample in task.data_iterator:
        inputs = torch.cat(sample["data"]).to(task.device)
        targets = torch.cat(sample["label"]).cpu().numpy()
        inds = torch.cat(sample["data_idx"]).cpu().numpy()
        with torch.no_grad():
            feats = self._flatten_features_list(task.model(inputs))
        for num, name in enumerate(feat_names):
            feature = feats[num].cpu().numpy()
            for i, index in enumerate(inds):
                out_features[name][index] = feature[i]
                out_targets[name][index] = targets[i].reshape(-1)
        buffered += len(inds)
        if buffered >= threshold >= 0:
            self._save_extracted_features(
                out_features,
                out_targets,
                dist_rank,
                chunk_index,
                split_name,
                output_folder,
            )
            for name in feat_names:
                out_features[name].clear()
                out_targets[name].clear()
            chunk_index += 1
            buffered = 0
    self._save_extracted_features(
        out_features, out_targets, dist_rank, chunk_index, split_name, output_folder
    )


@once("cpu_feature_extraction")
def patch_cpu_feature_extraction() -> None:
    """Let VISSL's extract_features engine run with MACHINE.DEVICE=cpu.

    Upstream ``SelfSupervisionTrainer.extract`` asserts a CUDA device and
    ``_extract_split_features`` calls ``.cuda()``. Nothing in the computation needs a
    GPU, so the assert is skipped when the task is on CPU and batches move with
    ``.to(task.device)``.
    """
    from vissl.trainer.trainer_main import SelfSupervisionTrainer

    original_extract = SelfSupervisionTrainer.extract

    def extract(self: Any, output_folder: str, *args: Any, **kwargs: Any) -> None:
        if self.task.device.type == "cuda":
            return original_extract(self, output_folder, *args, **kwargs)
        # upstream's body after its GPU assert, unchanged in behaviour
        from vissl.models.model_helpers import get_trunk_output_feature_names

        self.task.prepare_extraction(pin_memory=False)
        self._add_dummy_layer()
        self.task.init_distributed_data_parallel_model()
        feat_names = get_trunk_output_feature_names(self.cfg.MODEL) or ["heads"]
        for split in self.task.available_splits:
            logging.info(f"Extracting features on CPU for partition: {split.lower()}")
            self.task.data_iterator = iter(self.task.dataloaders[split.lower()])
            self._extract_split_features(feat_names, self.task, split, output_folder)
        self._cleanup_task()

    SelfSupervisionTrainer.extract = extract
    SelfSupervisionTrainer._extract_split_features = _extract_split_features_any_device


HYDRA_VERSION_BASE = "1.1"


def compose_hydra_configuration(overrides: List[str]) -> Any:
    """vissl.utils.hydra_config.compose_hydra_configuration with an explicit
    ``version_base`` (hydra>=1.2 warns without one; "1.1" keeps VISSL's semantics)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(
        config_module="vissl.config", version_base=HYDRA_VERSION_BASE
    ):
        return compose("defaults", overrides=overrides)


@once("hydra_version_base")
def patch_hydra_version_base() -> None:
    import vissl.utils.hydra_config as hc

    hc.compose_hydra_configuration = compose_hydra_configuration


__all__ = ["apply_all", "compose_hydra_configuration", "shutdown_process_group"]


def apply_all() -> None:
    """Apply every patch (idempotent)."""
    patch_numpy_aliases()
    patch_broadcast_object()
    patch_trusted_torch_load()
    patch_cpu_feature_extraction()
    patch_hydra_version_base()
    patch_atomic_checkpoints()
    patch_loadable_resume()
    patch_launcher_error_logging()
    patch_apex_syncbn_fallback()
    patch_phase_iterators()
