"""Uniform label noise (ClusterFit Sec. 3.2, footnote 2): the pure draw."""

import json

import numpy as np
import pytest
import torch

from vissl_clusterfit.data.label_noise import (
    LabelNoiseSettings,
    inject_uniform_noise,
    noise_record,
    num_flips,
    record_path,
    resolve_num_classes,
    write_record,
)


def reference_draw(labels, rate, seed, num_classes):
    """The documented draw, written out step by step."""
    labels = list(labels)
    candidates = [i for i, y in enumerate(labels) if y >= 0]
    n = int(np.floor(rate * len(candidates) + 0.5))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(candidates), size=n, replace=False).tolist())
    positions = [candidates[c] for c in chosen]
    noisy = list(labels)
    for p in positions:
        noisy[p] = (labels[p] + int(rng.integers(1, num_classes))) % num_classes
    return noisy, positions


@pytest.mark.parametrize(
    "rate, n, expected",
    [(0.29, 100, 29), (0.5, 3, 2), (0.25, 2, 1), (0.2, 2, 0), (0.0, 7, 0), (1.0, 7, 7)],
)
def test_num_flips_rounds_half_up(rate, n, expected):
    assert num_flips(rate, n) == expected, (rate, n, num_flips(rate, n))


def test_matches_the_documented_draw_and_flips_exactly_n():
    labels = np.array([3, 0, -1, 2, 2, 1, 0, 3, -1, 1, 2, 0])
    noisy, positions = inject_uniform_noise(labels, 0.5, seed=7, num_classes=4)
    ref_noisy, ref_positions = reference_draw(labels, 0.5, 7, 4)
    assert positions.tolist() == ref_positions, (positions, ref_positions)
    assert noisy.tolist() == ref_noisy, (noisy, ref_noisy)
    # 10 labelled samples, p = 0.5: exactly 5 flips, each to another label, -1 kept
    changed = np.flatnonzero(noisy != labels)
    assert changed.tolist() == positions.tolist() and len(changed) == 5, changed
    assert noisy[2] == -1 and noisy[8] == -1
    assert noisy.dtype == np.int64 and labels[0] == 3  # input untouched


def test_same_seed_same_flips_independent_of_global_rngs():
    labels = np.random.RandomState(0).randint(0, 10, size=500)
    torch.manual_seed(1)
    np.random.seed(1)
    a = inject_uniform_noise(labels, 0.3, seed=5, num_classes=10)
    torch.manual_seed(2)
    np.random.seed(2)
    torch.rand(100)
    np.random.rand(100)
    b = inject_uniform_noise(labels, 0.3, seed=5, num_classes=10)
    c = inject_uniform_noise(labels, 0.3, seed=6, num_classes=10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) == len(c[1]) == 150
    assert not np.array_equal(a[1], c[1])


def test_new_labels_uniform_over_the_other_classes():
    # every sample flipped (p = 1) from class 0 of C = 4: new labels 1, 2, 3 about 1/3 each
    labels = np.zeros(30000, dtype=np.int64)
    noisy, _ = inject_uniform_noise(labels, 1.0, seed=0, num_classes=4)
    counts = np.bincount(noisy, minlength=4)
    assert counts[0] == 0, counts
    expected = len(labels) / 3
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 13.8, (counts, chi2)  # chi-square, 2 dof, p = 0.001


def test_flipped_set_uniform_over_samples():
    labels = np.arange(20) % 5
    hits = np.zeros(20)
    for seed in range(2000):
        hits[inject_uniform_noise(labels, 0.25, seed, 5)[1]] += 1
    freq = hits / 2000
    assert np.all(np.abs(freq - 0.25) < 0.05), freq


def test_errors():
    with pytest.raises(ValueError, match="num_classes=3"):
        inject_uniform_noise(np.array([0, 3]), 0.5, 0, 3)
    with pytest.raises(ValueError, match="rate"):
        inject_uniform_noise(np.array([0, 1]), 1.5, 0, 3)
    with pytest.raises(ValueError, match="integer label"):
        inject_uniform_noise(np.array([0.0, 1.0]), 0.5, 0, 3)
    with pytest.raises(ValueError, match="RATE=-0.1"):
        LabelNoiseSettings(rate=-0.1)
    with pytest.raises(ValueError, match=r"DATA.TRAIN.VCF_LABEL_NOISE.RATE"):
        LabelNoiseSettings.from_split_config({}, "TRAIN")
    assert resolve_num_classes(np.array([0, 4, -1]), 0) == 5
    assert resolve_num_classes(np.array([0, 4]), 10) == 10
    with pytest.raises(ValueError, match="NUM_CLASSES=3"):
        resolve_num_classes(np.array([0, 4]), 3)


def test_record_written_once_and_refused_when_other(tmp_path):
    settings = LabelNoiseSettings.from_split_config(
        {"VCF_LABEL_NOISE": {"RATE": 0.5, "SEED": 3}}, "TRAIN"
    )
    assert (settings.rate, settings.seed, settings.num_classes) == (0.5, 3, 0)
    path = record_path(settings, str(tmp_path), "TRAIN")
    assert path == str(tmp_path / "vcf_label_noise_train.json")
    assert record_path(settings, str(tmp_path), "TRAIN", 1).endswith("_train_1.json")
    clean = np.array([0, 1, 2, 0, 1, 2])
    noisy, pos = inject_uniform_noise(clean, 0.5, 3, 3)
    record = noise_record(settings, clean, noisy, pos, 3, pos + 100)
    write_record(path, record)
    write_record(path, record)  # a second rank / worker / resume: same content
    saved = json.load(open(path))
    assert saved["positions"] == pos.tolist() and saved["num_flipped"] == 3
    assert saved["source_indices"] == (pos + 100).tolist()
    assert saved["clean_labels"] == clean[pos].tolist()
    assert saved["noisy_labels"] == noisy[pos].tolist()
    other = noise_record(
        LabelNoiseSettings(rate=0.5, seed=4), clean, noisy, pos, 3, pos + 100
    )
    with pytest.raises(ValueError, match="seed: 3 -> 4"):
        write_record(path, other)
