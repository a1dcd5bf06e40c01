"""Checkpoint files in VISSL's layout: the final checkpoint of a run folder, the test
accuracy VISSL logged, and an untrained (randomly initialised) trunk saved as a
checkpoint, for random-init baselines and tests that need an N_pre without training."""

import glob
import json
import os
from typing import Any, Dict, Optional

import yaml


def final_checkpoint(folder: str) -> Optional[str]:
    """The last ``model_final_checkpoint_phaseN.torch`` of a run folder, or None."""
    found = sorted(
        glob.glob(os.path.join(folder, "model_final_checkpoint_phase*.torch")),
        key=lambda p: int(p.rsplit("phase", 1)[1].split(".")[0]),
    )
    return found[-1] if found else None


def read_final_test_accuracy(metrics_path: str) -> Dict[str, float]:
    """Top-1 per layer of the last test evaluation in VISSL's metrics.json."""
    last = None
    with open(metrics_path) as f:
        for line in f:
            entry = json.loads(line)
            if "test_accuracy_list_meter" in entry:
                last = entry["test_accuracy_list_meter"]["top_1"]
    if last is None:
        raise RuntimeError(f"{metrics_path} has no test accuracy")
    return {k: round(float(v), 2) for k, v in last.items()}


def save_untrained_trunk(
    path: str, model_cfg: Any, seed: int, train_config: Optional[Any] = None
) -> str:
    """A trunk built from ``model_cfg`` (VISSL's MODEL section) with torch's seed
    ``seed``, saved where VISSL's weight loading and our N_pre loading look for it
    (``classy_state_dict.base_model.model.trunk``), with a ``train_config.yaml``
    beside it holding the MODEL section (or the whole ``train_config``), as VISSL
    writes one. A 0-epoch training is not possible in VISSL, hence this."""
    import torch
    from vissl.models.trunks import get_model_trunk

    from vissl_clusterfit.compat.crash_safe_checkpoints import atomic_torch_save

    torch.manual_seed(seed)
    name = model_cfg.TRUNK.NAME
    trunk = get_model_trunk(name)(model_cfg, name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"model": {"trunk": trunk.state_dict(), "heads": {}}}
    atomic_torch_save({"classy_state_dict": {"base_model": state}}, path)
    tree = train_config.to_dict() if train_config is not None else {}
    tree["MODEL"] = model_cfg.to_dict()
    tree["MODEL"].get("FSDP_CONFIG", {}).pop("compute_dtype", None)  # a torch.dtype
    folder = os.path.dirname(os.path.abspath(path))
    with open(os.path.join(folder, "train_config.yaml"), "w") as f:
        yaml.safe_dump(tree, f)
    return path
