"""clustering.pca_state: a fitted PCAWhitening survives a round trip."""

import numpy as np
import pytest

from tests.clustering.synthetic import anisotropic as _anisotropic
from vissl_clusterfit.clustering.pca import PCAWhitening
from vissl_clusterfit.clustering.pca_state import pca_from_state_dict, pca_state_dict


def test_pca_state_dict_round_trip_reproduces_transform():
    x = _anisotropic(n=600, d=10, seed=2)
    pca = PCAWhitening(4).fit(x)
    state = pca_state_dict(pca)
    assert isinstance(state["mean"], np.ndarray) and isinstance(
        state["projection"], np.ndarray
    )
    assert (state["dim"], state["whiten"], state["eps"]) == (4, True, 1e-5)
    restored = pca_from_state_dict(state)
    np.testing.assert_array_equal(restored.transform(x), pca.transform(x))
    with pytest.raises(ValueError, match="missing keys"):
        pca_from_state_dict({"mean": state["mean"]})


def test_pca_state_dict_of_unfitted_or_inconsistent_state_is_an_error():
    with pytest.raises(ValueError, match="before fit"):
        pca_state_dict(PCAWhitening(2))
    state = pca_state_dict(PCAWhitening(2).fit(_anisotropic(n=50, d=4, seed=0)))
    with pytest.raises(ValueError, match="inconsistent"):
        pca_from_state_dict(dict(state, dim=3))
