"""A coarse view of Fashion-MNIST's 10 classes: 5 groups, for a pre-training label space
coarser than the target's (ClusterFit Sec. 3.2 / 4: N_pre trained on one label space,
evaluated by linear probes on finer targets; cf. ImageNet-1K -> ImageNet-9K).

=====  ===========  ==========================================================
coarse  name        Fashion-MNIST classes
=====  ===========  ==========================================================
0      tops         T-shirt/top (0), pullover (2), coat (4), shirt (6)
1      trouser      trouser (1)
2      dress        dress (3)
3      footwear     sandal (5), sneaker (7), ankle boot (9)
4      bag          bag (8)
=====  ===========  ==========================================================

Label source ``vcf_fashion_mnist_coarse`` (with the ``vcf_fashion_mnist`` data source)::

    LABEL_SOURCES: [vcf_fashion_mnist_coarse]
"""

from typing import Tuple

import numpy as np


COARSE_NAMES: Tuple[str, ...] = ("tops", "trouser", "dress", "footwear", "bag")
#: FINE_TO_COARSE[fine label] = coarse label
FINE_TO_COARSE = np.array([0, 1, 0, 2, 0, 3, 0, 3, 4, 3], dtype=np.int64)
NUM_FINE_CLASSES = len(FINE_TO_COARSE)
NUM_COARSE_CLASSES = len(COARSE_NAMES)


def coarse_labels(fine: np.ndarray) -> np.ndarray:
    """Map Fashion-MNIST labels (0..9) to the 5 coarse groups; ``-1`` stays ``-1``."""
    fine = np.asarray(fine, dtype=np.int64)
    bad = (fine < -1) | (fine >= NUM_FINE_CLASSES)
    if bad.any():
        raise ValueError(
            f"Fashion-MNIST labels must lie in 0..9 (or -1), got {np.unique(fine[bad])[:5]}"
        )
    return np.where(fine < 0, -1, FINE_TO_COARSE[fine.clip(min=0)])
