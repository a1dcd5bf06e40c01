"""The AUTOCAST settings (``config.VCF.TRAINING.AUTOCAST``, ``config.VCF.<SECTION>.
LOADER.AUTOCAST``): the accepted values, their check and the autocast context.

bfloat16 keeps float32's exponent range, so neither training nor extraction needs loss
scaling with it; "" and "float32" run without autocast.
"""

import contextlib
from typing import Any

import torch


AUTOCAST_DTYPES = {"": None, "float32": None, "bfloat16": torch.bfloat16}


def checked_autocast(value: Any, key: str) -> str:
    """``value`` (None or "" = float32) as text; ValueError naming ``key`` otherwise."""
    autocast = str(value or "")
    if autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"{key}={autocast!r}: use one of {sorted(AUTOCAST_DTYPES)}")
    return autocast


def autocast_context(autocast: str, device: torch.device) -> Any:
    """``torch.autocast`` in the dtype of a checked ``autocast`` on ``device``'s type,
    or a context that changes nothing."""
    dtype = AUTOCAST_DTYPES[autocast]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
