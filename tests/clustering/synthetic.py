"""Synthetic features shared by the clustering tests."""

import numpy as np


def anisotropic(n: int = 2000, d: int = 16, seed: int = 0) -> np.ndarray:
    """Gaussian data with eigenvalues 1..d^2 along a random rotation, non-zero mean."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.linspace(1.0, float(d), d)
    return (rng.standard_normal((n, d)) * scales @ rotation.T + 3.0).astype(np.float32)
