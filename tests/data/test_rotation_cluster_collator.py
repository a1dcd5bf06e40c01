import torch

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.data.rotation_cluster_collator import (
    rotation_cluster_collator,
    rotation_cluster_targets,
)
from vissl_clusterfit.losses.hierarchical_criterion import split_targets


def test_targets_encode_group_rotation_and_sub():
    codes = torch.tensor(
        [0, 7, 13, -1]
    )  # num_sub=5: (group, sub) = (0,0) (1,2) (2,3) ignored
    rot = torch.tensor([3, 1, 0, 2])
    t = rotation_cluster_targets(codes, rot, num_sub=5)
    assert t.tolist() == [
        (0 * 4 + 3) * 5 + 0,
        (1 * 4 + 1) * 5 + 2,
        (2 * 4 + 0) * 5 + 3,
        -1,
    ]
    sup, sub = split_targets(t, 5)
    assert sup.tolist()[:3] == [3, 5, 8] and sub.tolist()[:3] == [0, 2, 3]


def test_collator_rotates_images_consistently_with_targets():
    torch.manual_seed(0)
    batch = [
        {
            "data": [torch.arange(16.0).view(1, 4, 4)],
            "label": [c],
            "data_valid": [1],
            "data_idx": [i],
        }
        for i, c in enumerate([4, 9, 2, 6, 0, 8])
    ]
    out = rotation_cluster_collator(batch, num_sub_classes=3)
    targets = out["label"][0]
    for i, sample in enumerate(batch):
        r = int((targets[i] // 3) % 4)
        expected = torch.rot90(sample["data"][0], r, dims=(1, 2))
        assert torch.equal(out["data"][0][i], expected)
        code = sample["label"][0]
        assert int(targets[i]) == ((code // 3) * 4 + r) * 3 + code % 3
    assert out["data_idx"][0].tolist() == list(range(6))
