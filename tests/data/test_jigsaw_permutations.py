import numpy as np
import pytest
import torch

from vissl_clusterfit.data.jigsaw_permutations import (
    VcfShuffleImgPatches,
    generate_permutations,
)


def test_permutations_valid_distinct_far_apart_and_seeded():
    p = generate_permutations(30, seed=1)
    assert p.shape == (30, 9)
    assert all(sorted(row) == list(range(9)) for row in p.tolist())
    d = (p[:, None, :] != p[None, :, :]).sum(-1)
    np.fill_diagonal(d, 99)
    assert d.min() >= 6, d.min()  # greedy max-min selection keeps them far apart
    np.testing.assert_array_equal(p, generate_permutations(30, seed=1))
    assert not np.array_equal(p, generate_permutations(30, seed=2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_perms"):
        generate_permutations(0)


def test_transform_shuffles_and_labels():
    t = VcfShuffleImgPatches.from_config({"num_perms": 10, "seed": 0})
    patches = [torch.full((1, 2, 2), float(i)) for i in range(9)]
    out, label = t(patches)
    perm = t.perms[label]
    assert [int(x[0, 0, 0]) for x in out] == perm.tolist()
