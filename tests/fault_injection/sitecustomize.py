"""Test-only fault injection for tests/test_fault_injection.py.

tests/test_fault_injection.py puts this folder on PYTHONPATH, so Python imports this
file at start-up as ``sitecustomize``. It does nothing unless ``VCF_FAULT_STAGE`` is
set. Then the process stops at that stage, on its ``VCF_FAULT_AT``-th arrival there
(default 1): it creates the file ``VCF_FAULT_READY`` and sleeps until the test kills
its process group. Stages:

- ``extraction``: entering ``cluster_step.extraction.extract_features``.
- ``kmeans``: entering ``clustering.run_kmeans``.
- ``label_write``: while writing ``<name>_centroids.npy``. ``<name>_labels.npy`` is
  complete, half of the centroids are in the temporary file, and there is no meta yet.
- ``iteration``: entering VISSL's train step. It is called once per batch and once
  more at the end of each epoch (that call ends it with StopIteration), so with 6
  batches per epoch ``VCF_FAULT_AT=8`` is the first step of the second epoch.
- ``checkpoint_write``: while ``torch.save`` writes a ``model_*.torch`` checkpoint.
  Half of its bytes are written and flushed.

Each patch is applied right after the module it patches is imported (a meta path
finder), so the run imports everything in its usual order.
"""

import importlib.abc
import io
import os
import sys
import time


STAGE = os.environ.get("VCF_FAULT_STAGE", "")
AT = int(os.environ.get("VCF_FAULT_AT", "1"))
_arrivals = {"n": 0}


def _stop_here() -> None:
    with open(os.environ["VCF_FAULT_READY"], "w") as f:
        f.write(f"{STAGE} {os.getpid()}\n")
    while True:  # until SIGKILL
        time.sleep(1)


def _arrive() -> bool:
    _arrivals["n"] += 1
    return _arrivals["n"] == AT


def _stop_on_entry(module, name):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        if _arrive():
            _stop_here()
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def _patch_label_write(module) -> None:
    # the label files' one atomic writer (save_npy and write_label_files call it)
    name = "atomic_write" if hasattr(module, "atomic_write") else "_atomic_write"
    original = getattr(module, name)

    def atomic_write(path, write):
        if not path.endswith("_centroids.npy") or not _arrive():
            return original(path, write)

        def half_then_stop(f):
            buffer = io.BytesIO()
            write(buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            _stop_here()

        return original(path, half_then_stop)

    setattr(module, name, atomic_write)


def _patch_torch_save(module) -> None:
    original = module.save

    def save(obj, f, *args, **kwargs):
        name = str(getattr(f, "name", f))
        base = os.path.basename(name)
        if not ("model_" in base and ".torch" in base) or not _arrive():
            return original(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if hasattr(f, "write"):
            f.write(data)
            f.flush()
        else:
            with open(f, "wb") as out:
                out.write(data)
        _stop_here()

    module.save = save
    module.serialization.save = save


def _patch_train_step(module) -> None:
    registry = module.TRAIN_STEP_REGISTRY
    original = registry["standard_train_step"]

    def step(*args, **kwargs):
        if _arrive():
            _stop_here()
        return original(*args, **kwargs)

    registry["standard_train_step"] = step


PATCHES = {
    "extraction": (
        "vissl_clusterfit.cluster_step.extraction",
        lambda m: _stop_on_entry(m, "extract_features"),
    ),
    "kmeans": (
        "vissl_clusterfit.clustering",
        lambda m: _stop_on_entry(m, "run_kmeans"),
    ),
    "label_write": ("vissl_clusterfit.data.cluster_labels", _patch_label_write),
    "iteration": ("vissl.trainer.train_steps", _patch_train_step),
    "checkpoint_write": ("torch", _patch_torch_save),
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` once ``target`` has been executed."""

    def __init__(self, target: str, patch) -> None:
        self.target, self.patch = target, patch

    def find_spec(self, name, path, target=None):
        if name != self.target:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module, patch = spec.loader.exec_module, self.patch

        def exec_then_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


if STAGE:
    if STAGE not in PATCHES:
        raise ValueError(f"VCF_FAULT_STAGE={STAGE}: use one of {sorted(PATCHES)}")
    sys.meta_path.insert(0, _PatchAfterImport(*PATCHES[STAGE]))
