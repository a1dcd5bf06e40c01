"""Reading an N_pre checkpoint file: ``.pth`` / ``.pt`` / ``.torch`` with
``torch.load(weights_only=True)`` unless the user opts out, ``.safetensors`` through the
``safetensors`` package; every failure names the file and the fix."""

import os
import pickle
from typing import Any, Dict, List

import torch


def read_checkpoint_file(
    path: str,
    weights_only: bool = True,
    key: str = "NPRE_WEIGHTS_INIT",
    checkpoint_key: str = "config.VCF.CLUSTERFIT.NPRE_CHECKPOINT",
) -> Dict[str, Any]:
    """A ``.pth`` / ``.pt`` / ``.torch`` / ``.safetensors`` file on CPU, with errors
    that name the file and the fix. ``key``: the WEIGHTS_INIT section's config key;
    ``checkpoint_key``: the config key ``path`` came from."""
    if os.path.isdir(path):
        raise ValueError(
            f"N_pre checkpoint {path} is a directory: point it at a checkpoint file in "
            "it (e.g. model_final_checkpoint_phaseN.torch)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"N_pre checkpoint {path} does not exist: check {checkpoint_key} "
            "(pre-train N_pre first)"
        )
    if path.endswith(".safetensors"):
        return _read_safetensors(path, checkpoint_key)
    try:
        with torch.serialization.safe_globals(numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if not weights_only:
            raise _corrupt(path, e, checkpoint_key) from e
        raise ValueError(
            f"N_pre checkpoint {path} holds Python objects besides tensors and numpy "
            f"arrays ({_unsafe_globals(path) or str(e).splitlines()[0]}), which "
            f"torch.load(weights_only=True) refuses. If you trust the file, set "
            f"{key}.WEIGHTS_ONLY=false (unpickling runs code from the file), or re-save "
            "only its state_dict"
        ) from None
    except Exception as e:
        raise _corrupt(path, e, checkpoint_key) from e


def numpy_array_globals() -> List[Any]:
    """What unpickling a numpy array or scalar needs: constructors of arrays and dtypes,
    no code of the file's. VISSL's training checkpoints hold numpy arrays (hook states
    such as DeepCluster's targets), so weights_only=True must take them."""
    import numpy as np

    dtype_classes = {type(np.dtype(t)) for t in set(np.sctypeDict.values())}
    multiarray = np.core.multiarray
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype] + sorted(
        dtype_classes, key=str
    )


def _unsafe_globals(path: str) -> str:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy (non-zip) file: torch's own message says enough
        return ""
    known = {f"{g.__module__}.{g.__name__}" for g in numpy_array_globals()}
    return ", ".join(g for g in found if g not in known)


def _corrupt(path: str, e: Exception, checkpoint_key: str) -> ValueError:
    return ValueError(
        f"N_pre checkpoint {path} is corrupt or not a torch file "
        f"({type(e).__name__}: {e}): re-run the pre-training or point {checkpoint_key} "
        "at a good checkpoint"
    )


def _read_safetensors(path: str, checkpoint_key: str) -> Dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError(
            f"N_pre checkpoint {path} is a .safetensors file but the package "
            "'safetensors' is not installed: pip install safetensors"
        ) from None
    try:
        return load_file(path, device="cpu")
    except Exception as e:
        raise _corrupt(path, e, checkpoint_key) from e
