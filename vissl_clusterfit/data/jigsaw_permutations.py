"""Jigsaw permutations generated locally, and a transform that uses them.

VISSL's Jigsaw configs point ``ShuffleImgPatches.perm_file`` at a URL; nothing may be
downloaded here. Noroozi & Favaro (ECCV 2016, Sec. 3.2) choose the permutation set
greedily so that the minimum Hamming distance between permutations is large: start from
a random permutation, then repeatedly add the candidate whose minimum distance to the
chosen set is largest. This is that greedy ("max-min") selection over all 9! candidates,
vectorised with numpy and seeded, so every process builds the same set without a file.
"""

import itertools
from typing import Any, Dict

import numpy as np
from classy_vision.dataset.transforms import register_transform
from vissl.data.ssl_transforms.shuffle_img_patches import ShuffleImgPatches


def generate_permutations(
    num_perms: int, num_patches: int = 9, seed: int = 0
) -> np.ndarray:
    """``(num_perms, num_patches)`` int64 permutations of ``range(num_patches)`` with a
    large minimum pairwise Hamming distance; deterministic for a seed."""
    if num_patches > 10:
        raise ValueError(
            f"num_patches={num_patches}: at most 10 (all candidates are enumerated)"
        )
    candidates = np.array(
        list(itertools.permutations(range(num_patches))), dtype=np.int8
    )
    if not 1 <= num_perms <= len(candidates):
        raise ValueError(f"num_perms={num_perms} must be in [1, {len(candidates)}]")
    rng = np.random.RandomState(seed)
    chosen = [int(rng.randint(len(candidates)))]
    min_dist = (candidates != candidates[chosen[0]]).sum(1)
    for _ in range(num_perms - 1):
        best = np.flatnonzero(min_dist == min_dist.max())
        pick = int(best[rng.randint(len(best))])  # seeded tie-break
        chosen.append(pick)
        min_dist = np.minimum(min_dist, (candidates != candidates[pick]).sum(1))
    return candidates[chosen].astype(np.int64)


@register_transform("VcfShuffleImgPatches")
class VcfShuffleImgPatches(ShuffleImgPatches):
    """VISSL's ShuffleImgPatches with a locally generated permutation set.

    Config: ``{name: VcfShuffleImgPatches, num_perms: 100, seed: 0}`` (the label is the
    permutation index, as in VISSL)."""

    def __init__(
        self, num_perms: int = 100, num_patches: int = 9, seed: int = 0
    ) -> None:
        super().__init__(perm_file="")
        self.perms = generate_permutations(num_perms, num_patches, seed)
        self.perm_loaded = True

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "VcfShuffleImgPatches":
        return cls(
            num_perms=int(config.get("num_perms", 100)),
            num_patches=int(config.get("num_patches", 9)),
            seed=int(config.get("seed", 0)),
        )


def _declare_label_transform(name: str) -> None:
    # VISSL decides by name which transforms return (data, label); its list is the
    # extension point (shared by reference through DEFAULT_TRANSFORM_TYPES).
    from vissl.data.ssl_transforms.ssl_transforms_wrapper import DEFAULT_TRANSFORM_TYPES

    with_labels = DEFAULT_TRANSFORM_TYPES["TRANSFORMS_WITH_LABELS"]
    if name not in with_labels:
        with_labels.append(name)


_declare_label_transform("VcfShuffleImgPatches")
