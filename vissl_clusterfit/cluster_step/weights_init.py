"""VISSL's ``MODEL.WEIGHTS_INIT`` keys for an N_pre file, read once from the config.

The same keys as VISSL's (vissl/utils/checkpoint.py, ``init_model_from_consolidated_weights``),
applied to N_pre's trunk; unset (null) keys are detected by checkpoint_formats.py.
"""

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple


# VISSL's APPEND_PREFIX addresses the whole model ("trunk._feature_blocks."); we load
# only the trunk, so these leading parts are dropped from a copied VISSL value
_VISSL_MODEL_PREFIXES = ("trunk.base_model.", "trunk.")


@dataclass(frozen=True)
class WeightsInit:
    """VISSL's ``MODEL.WEIGHTS_INIT`` keys for one N_pre file. ``None`` = detect.

    Config params (``VCF.CLUSTERFIT.NPRE_WEIGHTS_INIT``, ``EXTRA_NPRE[i].WEIGHTS_INIT``):
        STATE_DICT_KEY_NAME: dotted path of the tensor dict in the file ("" = the file
            itself; ``classy_state_dict`` = VISSL's training layout)
        REMOVE_PREFIX: removed from the front of every key (VISSL: executed first)
        APPEND_PREFIX: then put in front of every key; VISSL's whole-model form
            (``trunk._feature_blocks.``) is accepted and means ``_feature_blocks.``
        SKIP_LAYERS: trunk tensors whose name contains one of these keep their
            initialisation (on purpose; everything else must be in the file)
        WEIGHTS_ONLY: torch.load(weights_only=...); False only for a trusted file
    """

    state_dict_key_name: Optional[str] = None
    remove_prefix: Optional[str] = None
    append_prefix: Optional[str] = None
    skip_layers: Tuple[str, ...] = ()
    weights_only: bool = True

    @classmethod
    def from_mapping(
        cls, value: Optional[Mapping[str, Any]], key: str
    ) -> "WeightsInit":
        value = dict(value or {})
        known = {
            "STATE_DICT_KEY_NAME",
            "REMOVE_PREFIX",
            "APPEND_PREFIX",
            "SKIP_LAYERS",
            "WEIGHTS_ONLY",
        }
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"{key} has unknown keys {unknown}: use {sorted(known)} (VISSL's "
                "MODEL.WEIGHTS_INIT semantics)"
            )

        def text(name: str) -> Optional[str]:
            v = value.get(name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{key}.{name}={v!r} must be a string or null")
            return v

        skip = value.get("SKIP_LAYERS") or ()
        if isinstance(skip, str):
            skip = (skip,)
        append = text("APPEND_PREFIX")
        if append:
            for vissl_prefix in _VISSL_MODEL_PREFIXES:
                if append.startswith(vissl_prefix):
                    append = append[len(vissl_prefix) :]
                    break
        return cls(
            state_dict_key_name=text("STATE_DICT_KEY_NAME"),
            remove_prefix=text("REMOVE_PREFIX"),
            append_prefix=append,
            skip_layers=tuple(str(s) for s in skip),
            weights_only=bool(value.get("WEIGHTS_ONLY", True)),
        )

    def is_default(self) -> bool:
        return self == WeightsInit()

    def as_dict(self) -> Dict[str, Any]:
        return {
            "STATE_DICT_KEY_NAME": self.state_dict_key_name,
            "REMOVE_PREFIX": self.remove_prefix,
            "APPEND_PREFIX": self.append_prefix,
            "SKIP_LAYERS": list(self.skip_layers),
            "WEIGHTS_ONLY": self.weights_only,
        }
