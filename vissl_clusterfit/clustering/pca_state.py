"""(De)serialisation of a fitted :class:`.pca.PCAWhitening`: the cluster step keeps the
transform in its meta data, and the bounded clustering broadcasts it from rank 0.
"""

from typing import Any, Dict

import numpy as np

from .pca import PCAWhitening


__all__ = ["pca_from_state_dict", "pca_state_dict"]


def pca_state_dict(pca: PCAWhitening) -> Dict[str, Any]:
    """Everything needed to rebuild the transform (numpy arrays + scalars)."""
    if not pca.is_fitted:
        raise ValueError("pca_state_dict called before fit(); call fit(x) first")
    assert pca.mean is not None and pca.projection is not None
    assert pca.eigenvalues is not None
    return {
        "mean": pca.mean.copy(),
        "projection": pca.projection.copy(),
        "eigenvalues": pca.eigenvalues.copy(),
        "dim": pca.dim,
        "whiten": pca.whiten,
        "eps": pca.eps,
    }


def pca_from_state_dict(state: Dict[str, Any]) -> PCAWhitening:
    """Rebuild a fitted :class:`.pca.PCAWhitening` from :func:`pca_state_dict` output."""
    missing = {"mean", "projection", "dim", "whiten", "eps"} - set(state)
    if missing:
        raise ValueError(
            f"PCA state dict is missing keys {sorted(missing)}; it must come from "
            "pca_state_dict()"
        )
    pca = PCAWhitening(
        int(state["dim"]), whiten=bool(state["whiten"]), eps=float(state["eps"])
    )
    mean = np.asarray(state["mean"], dtype=np.float64)
    projection = np.asarray(state["projection"], dtype=np.float64)
    if projection.shape != (mean.shape[0], pca.dim):
        raise ValueError(
            f"PCA state dict is inconsistent: projection has shape {projection.shape}, "
            f"expected ({mean.shape[0]}, {pca.dim})"
        )
    pca.mean = mean
    pca.projection = projection
    if "eigenvalues" in state:
        pca.eigenvalues = np.asarray(state["eigenvalues"], dtype=np.float64)
    else:
        pca.eigenvalues = np.full(pca.dim, np.nan)
    return pca
