"""Learning-rate step schedules that fit the run's length.

VISSL's ImageNet configs step the learning rate at epochs 30/60/90/100 of 105
(``multistep``, alone or inside a ``composite``). A shorter run (``num_epochs=1``,
what people try first) fails deep in fvcore: "Total num_updates must be greater than
length of param schedule". When the config is composed with ``OPTIMIZER.num_epochs``
overridden, the milestones are scaled from the config's own length to the run's
(``scale_milestones``, logged); a schedule that still does not fit (milestones set by
hand, or a config reached through VISSL's own launcher) is refused up front naming the
key (``check_schedules``).

Scaling: milestone m of a schedule written for E0 epochs moves to ceil(m * E / E0), the
first epoch boundary at or after the same fraction of the run; milestones that land on
the same epoch keep the last value; milestones at or past E are dropped with their
values. Epoch-interval schedules only: ``update_interval: step`` counts iterations.
"""

import logging
import math
from typing import Any, Iterator, List, Tuple


NUM_EPOCHS_KEY = "OPTIMIZER.num_epochs"


def multistep_schedules(cfg: Any) -> Iterator[Tuple[str, Any]]:
    """(config key, node) of every epoch-interval multistep lr/wd schedule."""
    optimizer = cfg["OPTIMIZER"]
    schedulers = optimizer.get("param_schedulers", {}) or {}
    head = optimizer.get("head_optimizer_params", {}) or {}
    for param, node in schedulers.items():
        key = f"config.OPTIMIZER.param_schedulers.{param}"
        if param.endswith("_head") and not head.get("use_different_lr", False):
            continue  # VISSL replaces it with the trunk's (hydra_config.infer_lr...)
        if node.get("update_interval", "epoch") != "epoch":
            continue
        if node.get("name") == "multistep":
            yield key, node
        elif node.get("name") == "composite":
            for i, inner in enumerate(node.get("schedulers", []) or []):
                if inner.get("name") == "multistep":
                    yield f"{key}.schedulers[{i}]", inner


def _misfits(cfg: Any) -> List[Tuple[str, Any, int]]:
    epochs = int(cfg["OPTIMIZER"]["num_epochs"])
    out = []
    for key, node in multistep_schedules(cfg):
        length = int(node.get("num_epochs", epochs))
        milestones = list(node.get("milestones") or [])
        if milestones and max(milestones) >= length:
            out.append((key, node, length))
    return out


def scaled(
    milestones: List[int], values: List[float], epochs: int, original: int
) -> Tuple[List[int], List[float]]:
    """(milestones, values) of a schedule written for ``original`` epochs, fitted
    to ``epochs``."""
    new_ms: List[int] = []
    new_values = [values[0]]
    for m, value in zip(milestones, values[1:]):
        at = math.ceil(m * epochs / original - 1e-9)
        if at >= epochs:
            break
        if new_ms and new_ms[-1] == at:
            new_values[-1] = value
        elif at <= 0:
            new_values[0] = value
        else:
            new_ms.append(at)
            new_values.append(value)
    return new_ms, new_values


def scale_milestones(cfg: Any, original_epochs: int) -> List[str]:
    """Fit every misfitting multistep schedule of ``cfg`` (a composed config's
    ``config`` node, edited in place) to its num_epochs; returns what was changed."""
    changes = []
    for key, node, length in _misfits(cfg):
        milestones, values = list(node["milestones"]), list(node["values"])
        if max(milestones) >= original_epochs:
            continue  # did not fit its own length either: check_schedules refuses it
        new_ms, new_values = scaled(milestones, values, length, original_epochs)
        node["milestones"], node["values"] = new_ms, new_values
        changes.append(
            f"{key}: milestones {milestones} -> {new_ms}, values {values} -> "
            f"{new_values} (written for {original_epochs} epochs, run: {length})"
        )
    for change in changes:
        # a warning: composition runs before VISSL sets up logging, and the run differs
        # from the config as written
        logging.warning(f"[vcf] lr schedule scaled to the run's length: {change}")
    return changes


def check_schedules(cfg: Any) -> None:
    """Refuse a step schedule with milestones at or past the run's last epoch."""
    misfits = _misfits(cfg)
    if not misfits:
        return
    key, node, length = misfits[0]
    milestones = list(node["milestones"])
    raise ValueError(
        f"{key}.milestones={milestones} do not fit config.{NUM_EPOCHS_KEY}={length}: "
        f"fvcore needs every milestone below the number of epochs. Set {key}."
        f"milestones (and its values: one more than milestones), e.g. "
        f"{scaled(milestones, list(node['values']), length, max(milestones) + 1)[0]}, "
        f"or {key}.name=constant"
    )


def fit_schedules(cfg: Any, overrides: List[str], compose: Any) -> None:
    """Called at composition: when ``overrides`` set OPTIMIZER.num_epochs (and not the
    milestones) and a step schedule does not fit, scale it from the config's own
    length, composed again without that override by ``compose(overrides)``; then
    refuse what still does not fit."""
    touched = [o for o in overrides if NUM_EPOCHS_KEY in o]
    manual = any("milestones" in o for o in overrides)
    if touched and not manual and _misfits(cfg):
        original = compose([o for o in overrides if o not in touched])
        scale_milestones(cfg, int(original["OPTIMIZER"]["num_epochs"]))
    check_schedules(cfg)
