"""The networks of a feature extraction: a trunk's layer, pooled (or its pre-activation),
of one or several N_pre (multi-task ClusterFit, supplementary) on the device.

ClusterFit (Yan et al. 2020, Sec. 3.1) clusters N_pre's features at one layer (res5 by
default); DeepCluster (thesis Sec. 3.1) those of the network being trained, before the
last ReLU when asked.
"""

import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from vissl_clusterfit.cluster_step.extraction_loader import ExtractionLoader
from vissl_clusterfit.cluster_step.runtime_checks import check_layer


# (trunk, feature name, pooling): one entry per network whose features are concatenated
TrunkLayer = Tuple[torch.nn.Module, str, str]


class SingleFeatureTrunk(torch.nn.Module):
    """A module seen by ``extract_features`` as a trunk with one feature,
    ``feature``: ``compute(x)`` of the wrapped module (e.g. a model's logits, or a
    trunk's res5 pooled to a grid)."""

    def __init__(self, module: torch.nn.Module, feature: str) -> None:
        super().__init__()
        self.module = module
        self.feat_eval_mapping = {feature: feature}

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, out_feat_keys: Optional[List[str]] = None
    ) -> List[torch.Tensor]:
        return [self.compute(x)]


def pool_features(feat: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, D): global average / max pooling or flattening (the name
    is validated with the config: param_checks.POOLINGS)."""
    if feat.dim() == 2:
        return feat
    if pooling == "avg":
        return feat.flatten(2).mean(-1)
    if pooling == "max":
        return feat.flatten(2).amax(-1)
    if pooling == "flatten":
        return feat.flatten(1)
    raise ValueError(f"pooling={pooling}: use avg, max or flatten")


def concat_npre_features(parts: List[torch.Tensor]) -> torch.Tensor:
    """Multi-task ClusterFit (paper, supplementary): each N_pre's features L2-normalised,
    then concatenated, so no network dominates the distances by the scale or width of
    its features. One N_pre: unchanged (L2_NORM / PCA apply later)."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat([torch.nn.functional.normalize(p, dim=1) for p in parts], 1)


def last_relu(trunk: torch.nn.Module, layer: str) -> torch.nn.ReLU:
    """The ReLU that produces ``layer``'s output: the last ReLU module of the block the
    trunk maps ``layer`` to (torchvision's and VISSL's ResNet blocks call their ``relu``
    last on ``out + identity``)."""
    blocks = getattr(trunk, "_feature_blocks", None)
    mapping = getattr(trunk, "feat_eval_mapping", None) or {}
    block = blocks[mapping.get(layer, layer)] if blocks is not None else None
    relus = (
        [m for m in block.modules() if isinstance(m, torch.nn.ReLU)] if block else []
    )
    if not relus:
        raise ValueError(
            f"pre-activation features of {layer}: no ReLU found in the block of "
            f"{type(trunk).__name__} that produces it; set PREACTIVATION: False"
        )
    return relus[-1]


@contextlib.contextmanager
def capture_preactivation(trunk: torch.nn.Module, layer: str):
    """Yields a dict whose ``"x"`` holds, after each forward, the input of the last
    call of ``layer``'s final ReLU: the pre-activation features (DeepCluster thesis
    Sec. 3.1 clusters the penultimate layer before its ReLU). Cloned, because the ReLU
    may run in place."""
    holder: Dict[str, torch.Tensor] = {}

    def keep_input(_module: torch.nn.Module, inputs: Tuple[torch.Tensor]) -> None:
        holder["x"] = inputs[0].detach().clone()

    handle = last_relu(trunk, layer).register_forward_pre_hook(keep_input)
    try:
        yield holder
    finally:
        handle.remove()


@contextlib.contextmanager
def prepared_trunks(
    trunks: List[TrunkLayer],
    device: torch.device,
    preactivation: bool,
    settings: ExtractionLoader,
) -> Iterator[Optional[Dict[str, torch.Tensor]]]:
    """Trunks on ``device`` in eval mode (and the loader's memory format) with their
    layer checked; yields the pre-activation holder (``capture_preactivation``) or
    None."""
    for trunk, layer, _ in trunks:
        trunk.to(device, memory_format=settings.memory_format()).eval()
        check_layer(trunk, layer)
    if not preactivation:
        yield None
        return
    if len(trunks) != 1:
        raise ValueError("pre-activation features: extract one trunk at a time")
    with capture_preactivation(*trunks[0][:2]) as preact:
        yield preact
