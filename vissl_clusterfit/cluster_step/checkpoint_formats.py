"""N_pre's trunk weights from any common checkpoint layout.

ClusterFit (Yan et al., CVPR 2020, Sec. 3.1) takes *any* pre-trained network as N_pre.
The networks people hold come from VISSL (training checkpoints, model zoo), torchvision,
timm, MoCo v2/v3, DINO, SwAV / DeepClusterV2: the same ResNet tensors, nested under
another key (``state_dict``, ``model``, ``teacher``...) and behind another prefix
(``module.``, ``backbone.``, ``module.encoder_q.``...). VISSL maps such files onto its
model with ``MODEL.WEIGHTS_INIT`` (``STATE_DICT_KEY_NAME``, ``REMOVE_PREFIX``,
``APPEND_PREFIX``, ``SKIP_LAYERS``; vissl/utils/checkpoint.py,
``init_model_from_consolidated_weights``). We honour the same keys, applied to N_pre's
trunk, and reuse VISSL's prefix functions. Two things differ on purpose:

- keys left unset are detected: every nested dict of tensors and every prefix that
  turns its keys into the trunk's is scored by how much of the trunk it covers, the
  best is taken and logged in WEIGHTS_INIT terms, so the user can pin it;
- a partial load is refused: VISSL only logs "Not found ... not initialized", which
  would cluster features of a half-random network. The error lists the first
  mismatched / missing / unexpected tensors and the keys to set.

The architecture comes from N_pre's config (``NPRE_CONFIG``), never from the file.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from vissl.utils.checkpoint import append_module_prefix, replace_module_prefix

from vissl_clusterfit.cluster_step.checkpoint_files import read_checkpoint_file
from vissl_clusterfit.cluster_step.weights_init import WeightsInit


# VISSL's own trunks keep their layers under this name; torchvision / timm ResNets
# have the same layer names without it (VISSL's resnext.py wraps torchvision's blocks)
FEATURE_BLOCKS = "_feature_blocks."
# where VISSL's training writes the trunk; STATE_DICT_KEY_NAME=classy_state_dict means it
VISSL_TRUNK_PATH = "classy_state_dict.base_model.model.trunk"
# a second copy of the network in SSL checkpoints (MoCo's key / momentum encoder,
# DINO's student, BYOL's target, EMA weights): used only when nothing else fits
_SECONDARY = ("encoder_k", "momentum", "student", "target", "ema")
# classification / projection heads of the usual projects: dropped (and logged), not
# an error, since N_pre's features come from the trunk
HEAD_NAMES = (
    "fc",
    "head",
    "heads",
    "classifier",
    "projection_head",
    "prototypes",
    "projector",
    "predictor",
    "last_layer",
)
# tensors older checkpoints lack and a trunk can do without (BatchNorm's counter)
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_SHOW = 5


def tensor_dicts(
    obj: Any, path: str = "", depth: int = 5
) -> Iterator[Tuple[str, Dict]]:
    """Every nested dict holding tensors, with its dotted path ("" = the file)."""
    if not isinstance(obj, Mapping) or depth < 0:
        return
    tensors = {
        k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)
    }
    if tensors:
        yield path, tensors
    for k, v in obj.items():
        if isinstance(k, str) and isinstance(v, Mapping):
            yield from tensor_dicts(v, f"{path}.{k}" if path else k, depth - 1)


def _at(obj: Any, dotted: str, path: str) -> Dict[str, Any]:
    """``STATE_DICT_KEY_NAME`` resolved in the file (VISSL's classy layout included)."""
    if dotted == "classy_state_dict":
        dotted = VISSL_TRUNK_PATH
    node = obj
    for part in [p for p in dotted.split(".") if p]:
        if not isinstance(node, Mapping) or part not in node:
            keys = list(node)[:10] if isinstance(node, Mapping) else type(node).__name__
            raise ValueError(
                f"N_pre checkpoint {path} has no '{dotted}' (STATE_DICT_KEY_NAME): at "
                f"'{part}' the keys are {keys}"
            )
        node = node[part]
    found = dict(next(tensor_dicts(node, depth=0), ("", {}))[1])
    if not found:
        raise ValueError(
            f"N_pre checkpoint {path}: '{dotted}' (STATE_DICT_KEY_NAME) holds no tensors"
        )
    return found


@dataclass(frozen=True)
class KeyMapping:
    """One way of reading a tensor dict as the trunk's state: VISSL's three keys."""

    state_dict_key_name: str
    remove_prefix: str
    append_prefix: str

    def describe(self) -> str:
        return (
            f"STATE_DICT_KEY_NAME={self.state_dict_key_name!r} "
            f"REMOVE_PREFIX={self.remove_prefix!r} APPEND_PREFIX={self.append_prefix!r}"
        )

    def secondary(self) -> bool:
        text = f"{self.state_dict_key_name}.{self.remove_prefix}".lower()
        return any(s in text for s in _SECONDARY)


@dataclass
class TrunkWeights:
    """The trunk's state read from a file, and what did not fit."""

    mapping: KeyMapping
    state: Dict[str, torch.Tensor]
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    dropped_heads: List[str] = field(default_factory=list)
    ignored: int = 0

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _candidates(
    dicts: List[Tuple[str, Dict]], trunk_keys: List[str], init: WeightsInit
) -> List[Tuple[KeyMapping, Dict]]:
    """(mapping, dict) pairs whose keys reach at least one trunk key."""
    appends = (
        [init.append_prefix]
        if init.append_prefix is not None
        else (
            ["", FEATURE_BLOCKS]
            if any(t.startswith(FEATURE_BLOCKS) for t in trunk_keys)
            else [""]
        )
    )
    found = {}
    for path, tensors in dicts:
        for append in appends:
            rests = {t[len(append) :] for t in trunk_keys if t.startswith(append)}
            for k in tensors:
                starts = [0] + [i + 1 for i, c in enumerate(k) if c == "."]
                for i in starts:
                    if k[i:] in rests:
                        prefix = k[:i]
                        if init.remove_prefix is None or prefix == init.remove_prefix:
                            found[KeyMapping(path, prefix, append)] = tensors
    return list(found.items())


def _read_as_trunk(
    tensors: Dict[str, Any],
    m: KeyMapping,
    model_state: Dict[str, torch.Tensor],
    init: WeightsInit,
) -> TrunkWeights:
    # VISSL's own functions, in VISSL's order (remove first, then append)
    kept = {k: v for k, v in tensors.items() if k.startswith(m.remove_prefix)}
    state = replace_module_prefix(kept, m.remove_prefix) if m.remove_prefix else kept
    state = append_module_prefix(state, m.append_prefix) if m.append_prefix else state
    out = TrunkWeights(m, {}, ignored=len(tensors) - len(kept))
    for k, v in state.items():
        name = k[len(FEATURE_BLOCKS) :] if k.startswith(FEATURE_BLOCKS) else k
        if k not in model_state:
            if name.split(".")[0] in HEAD_NAMES:
                out.dropped_heads.append(k)
            else:
                out.unexpected.append(k)
            continue
        if any(s in k for s in init.skip_layers):
            continue
        v = v if torch.is_tensor(v) else torch.as_tensor(v)
        if tuple(v.shape) != tuple(model_state[k].shape):
            out.mismatched.append(
                f"{k}: checkpoint {list(v.shape)} vs model {list(model_state[k].shape)}"
            )
            continue
        out.state[k] = v
    out.missing = [
        k
        for k in model_state
        if k not in out.state
        and not any(s in k for s in init.skip_layers)
        and not k.endswith(_OPTIONAL_SUFFIXES)
        and not any(x.startswith(k + ":") for x in out.mismatched)
    ]
    return out


def resolve_trunk_weights(
    checkpoint: Dict[str, Any],
    model_state: Dict[str, torch.Tensor],
    init: WeightsInit,
    path: str,
) -> TrunkWeights:
    """The best reading of ``checkpoint`` as the trunk's state: the one covering most
    trunk tensors; among full ones, the main network over secondary copies (MoCo's
    key encoder, DINO's student, EMA), then the shortest key path."""
    if init.state_dict_key_name is not None:
        dicts = [
            (init.state_dict_key_name, _at(checkpoint, init.state_dict_key_name, path))
        ]
    else:
        dicts = list(tensor_dicts(checkpoint))
    trunk_keys = list(model_state)
    readings = [
        _read_as_trunk(tensors, m, model_state, init)
        for m, tensors in _candidates(dicts, trunk_keys, init)
    ]
    if not readings:
        top = list(checkpoint)[:10] if isinstance(checkpoint, Mapping) else []
        sample = [k for _, d in dicts for k in list(d)[:3]][:_SHOW]
        raise ValueError(
            f"N_pre checkpoint {path} has no tensor named like a tensor of N_pre's trunk "
            f"(e.g. {trunk_keys[:2]}); its top-level keys are {top}, its tensors e.g. "
            f"{sample}. Set NPRE_CONFIG to N_pre's architecture, and if the names only "
            "differ by a prefix, NPRE_WEIGHTS_INIT.STATE_DICT_KEY_NAME / REMOVE_PREFIX / "
            "APPEND_PREFIX (VISSL's MODEL.WEIGHTS_INIT semantics)"
        )

    def rank(r: TrunkWeights) -> Tuple:
        m = r.mapping
        return (
            -len(r.state),
            not r.complete,
            m.secondary(),
            len(m.state_dict_key_name) + len(m.remove_prefix),
        )

    readings.sort(key=rank)
    return readings[0]


def _first(items: List[str]) -> str:
    more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return "; ".join(items[:_SHOW]) + more


def partial_load_error(r: TrunkWeights, path: str, trunk_name: str, key: str) -> str:
    parts = []
    if r.mismatched:
        parts.append(
            f"{len(r.mismatched)} tensors differ in shape: {_first(r.mismatched)}"
        )
    if r.missing:
        parts.append(f"{len(r.missing)} trunk tensors are missing: {_first(r.missing)}")
    if r.unexpected:
        parts.append(
            f"{len(r.unexpected)} tensors are not in the trunk: {_first(r.unexpected)}"
        )
    return (
        f"N_pre checkpoint {path} does not fit N_pre's trunk ({trunk_name}) read with "
        f"{r.mapping.describe()}: {'. '.join(parts)}. Set NPRE_CONFIG to the config of "
        f"N_pre's architecture; if the names differ, set {key}.STATE_DICT_KEY_NAME / "
        f"REMOVE_PREFIX / APPEND_PREFIX; to keep layers at their initialisation on "
        f"purpose, {key}.SKIP_LAYERS"
    )


def load_trunk_weights(
    trunk: torch.nn.Module,
    path: str,
    init: WeightsInit = WeightsInit(),
    key: str = "config.VCF.CLUSTERFIT.NPRE_WEIGHTS_INIT",
    checkpoint: Optional[Dict[str, Any]] = None,
) -> TrunkWeights:
    """Load ``path`` into ``trunk`` (all of it, or an error); log the mapping used."""
    if checkpoint is None:
        checkpoint = read_checkpoint_file(path, init.weights_only, key)
    model_state = trunk.state_dict()
    r = resolve_trunk_weights(checkpoint, model_state, init, path)
    name = type(trunk).__name__
    if not r.complete:
        raise ValueError(partial_load_error(r, path, name, key))
    trunk.load_state_dict(r.state, strict=False)
    extra = (
        f"; dropped head tensors {_first(r.dropped_heads)}" if r.dropped_heads else ""
    )
    skipped = f"; SKIP_LAYERS kept {list(init.skip_layers)}" if init.skip_layers else ""
    logging.info(
        f"[vcf] N_pre weights {path} -> {name}: {r.mapping.describe()} "
        f"({len(r.state)} tensors; {r.ignored} outside the prefix ignored{extra}{skipped})"
    )
    return r
