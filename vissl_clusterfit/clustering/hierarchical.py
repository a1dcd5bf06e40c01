"""Two-level k-means of DeeperCluster (Caron et al. ICCV 2019, Sec. 4.1-4.2).

Level 1 splits the data into m groups; level 2 runs k-means with k clusters inside each
group. With the 4 rotations this gives the 4m super-classes and the k sub-classes of
Eq. 5. Groups smaller than k get as many sub-clusters as they have points (the unused
sub-class ids stay empty), so every point gets a valid (group, sub) pair.
"""

from typing import Tuple

import numpy as np

from .kmeans import run_kmeans
from .validation import check_num_clusters


def hierarchical_kmeans(
    x: np.ndarray, num_groups: int, num_sub: int, niter: int = 20, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """Returns ``(group, sub)`` int64 arrays: the level-1 group in [0, num_groups) and
    the level-2 cluster within that group in [0, num_sub)."""
    if num_groups < 1 or num_sub < 1:
        raise ValueError(f"NUM_GROUPS={num_groups} and NUM_SUB={num_sub} must be >= 1")
    check_num_clusters(num_groups, len(x), key="NUM_GROUPS")
    group = run_kmeans(x, num_groups, niter=niter, seed=seed).labels
    sub = np.zeros(len(x), dtype=np.int64)
    for g in range(num_groups):
        members = np.flatnonzero(group == g)
        k = min(num_sub, len(members))
        if k <= 1:
            continue
        sub[members] = run_kmeans(x[members], k, niter=niter, seed=seed + 1 + g).labels
    return group.astype(np.int64), sub
