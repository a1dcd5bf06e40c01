"""Uniform label noise for a supervised N_pre: ClusterFit's control experiment
(Yan et al., CVPR 2020, Sec. 3.2, footnote 2): a fraction p of the labels is replaced,
each by a label drawn uniformly from the *other* C - 1 classes.

Pure numpy, no VISSL imports; the label sources ``vcf_noisy:<inner>`` (see
``label_sources.py``) apply it to the labels a split serves.

The draw, given the served labels ``y`` (one per dataset position), ``p``, ``seed``, C:

- candidates are the positions with ``y >= 0`` (``-1`` = ignored sample, never flipped);
  N = their number;
- exactly ``n = floor(p * N + 0.5)`` of them are flipped (``p * N`` rounded half up, so
  0.29 * 100 gives 29 despite floating point);
- ``rng = numpy.random.default_rng(seed)`` (PCG64: its own stream, independent of
  torch's and numpy's global RNGs, so model init or data order never change the flips);
  the flipped positions are ``rng.choice(N, n, replace=False)``, sorted; then for each,
  in position order, an offset ``o = rng.integers(1, C)`` and the new label
  ``(y + o) mod C``, which is uniform over the C - 1 labels other than ``y``.

Same labels, p, seed and C give the same flips; the record (``noise_record``) lists them.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from vissl_clusterfit.io import atomic_write


CONFIG_KEY = "VCF_LABEL_NOISE"
RECORD_FORMAT = 1
ROUNDING = "n = floor(p * N + 0.5)"
RNG = "numpy.random.default_rng(seed): choice(N, n, replace=False) sorted, then integers(1, C) per flip"


@dataclass(frozen=True)
class LabelNoiseSettings:
    """``DATA.<SPLIT>.VCF_LABEL_NOISE`` read once.

    Args:
        rate: p in [0, 1], the fraction of (non-ignored) labels replaced.
        seed: seed of the flip RNG.
        num_classes: C; 0 = the largest clean label + 1.
        record_file: where the record goes; "" = ``<CHECKPOINT.DIR>/vcf_label_noise_<split>.json``.
    """

    rate: float
    seed: int = 0
    num_classes: int = 0
    record_file: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(
                f"{CONFIG_KEY}.RATE={self.rate} must lie in [0, 1] (the fraction p of "
                "labels replaced, ClusterFit Sec. 3.2)"
            )
        if self.num_classes < 0 or self.num_classes == 1:
            raise ValueError(
                f"{CONFIG_KEY}.NUM_CLASSES={self.num_classes}: use 0 (infer) or >= 2"
            )

    @classmethod
    def from_split_config(
        cls, split_cfg: Mapping[str, Any], split: str
    ) -> "LabelNoiseSettings":
        section = split_cfg.get(CONFIG_KEY, None)
        if section is None or "RATE" not in section:
            raise ValueError(
                f"a vcf_noisy:<source> label source needs DATA.{split}.{CONFIG_KEY}.RATE "
                f"(and SEED): add e.g. '+config.DATA.{split}.{CONFIG_KEY}.RATE=0.2' or use "
                "a config that declares it (pretrain/supervised_fmnist_cpu)"
            )
        return cls(
            rate=float(section["RATE"]),
            seed=int(section.get("SEED", 0)),
            num_classes=int(section.get("NUM_CLASSES", 0)),
            record_file=str(section.get("RECORD_FILE", "") or ""),
        )


def num_flips(rate: float, num_samples: int) -> int:
    """Number of flipped labels: ``floor(rate * num_samples + 0.5)``."""
    return int(np.floor(rate * num_samples + 0.5))


def resolve_num_classes(labels: np.ndarray, num_classes: int) -> int:
    """C: ``num_classes`` if > 0 (checked against the labels), else max label + 1."""
    valid = labels[labels >= 0]
    top = int(valid.max()) + 1 if valid.size else 0
    if num_classes > 0:
        if top > num_classes:
            raise ValueError(
                f"labels go up to {top - 1} but {CONFIG_KEY}.NUM_CLASSES={num_classes}: "
                "raise NUM_CLASSES or set it to 0 (infer)"
            )
        return num_classes
    if top < 2:
        raise ValueError(
            f"cannot infer the number of classes from labels with maximum {top - 1}: "
            f"set {CONFIG_KEY}.NUM_CLASSES (>= 2)"
        )
    return top


def inject_uniform_noise(
    labels: np.ndarray, rate: float, seed: int, num_classes: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Flip ``floor(rate * N + 0.5)`` of the N non-negative labels to a uniformly drawn
    other label (ClusterFit Sec. 3.2, footnote 2); see the module docstring for the draw.

    Args:
        labels: (M,) integer labels, ``-1`` for ignored samples.
        rate: p in [0, 1].
        seed: seed of the private RNG.
        num_classes: C >= 2, every label < C.
    Returns:
        (noisy labels (M,) int64 (a copy), flipped positions (n,) int64, sorted).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"label noise needs one integer label per sample, got an array of shape "
            f"{y.shape} and dtype {y.dtype}"
        )
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate {rate} must lie in [0, 1]")
    if num_classes < 2 or (y.size and int(y.max()) >= num_classes):
        raise ValueError(
            f"num_classes={num_classes} must be >= 2 and above every label "
            f"(max {int(y.max()) if y.size else None})"
        )
    y = y.astype(np.int64)
    candidates = np.flatnonzero(y >= 0)
    n = num_flips(rate, len(candidates))
    rng = np.random.default_rng(seed)
    positions = candidates[np.sort(rng.choice(len(candidates), size=n, replace=False))]
    offsets = rng.integers(1, num_classes, size=n)
    noisy = y.copy()
    noisy[positions] = (y[positions] + offsets) % num_classes
    return noisy, positions.astype(np.int64)


def labels_sha256(labels: np.ndarray) -> str:
    return hashlib.sha256(
        np.ascontiguousarray(labels, dtype=np.int64).tobytes()
    ).hexdigest()


def noise_record(
    settings: LabelNoiseSettings,
    clean: np.ndarray,
    noisy: np.ndarray,
    positions: np.ndarray,
    num_classes: int,
    source_indices: Optional[np.ndarray] = None,
    describe: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The JSON record of one noisy split: settings, counts, and per flipped sample its
    dataset position (the sample index VISSL serves), its index in the data source when
    known, and its clean and noisy label."""
    record: Dict[str, Any] = dict(describe or {})
    record.update(
        {
            "format": RECORD_FORMAT,
            "rate": settings.rate,
            "seed": settings.seed,
            "num_classes": int(num_classes),
            "num_samples": int((clean >= 0).sum()),
            "num_flipped": int(len(positions)),
            "rounding": ROUNDING,
            "rng": RNG,
            "positions": positions.tolist(),
            "source_indices": (
                None if source_indices is None else source_indices.tolist()
            ),
            "clean_labels": clean[positions].tolist(),
            "noisy_labels": noisy[positions].tolist(),
            "clean_labels_sha256": labels_sha256(clean),
            "noisy_labels_sha256": labels_sha256(noisy),
        }
    )
    return record


def read_record(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_record(path: str, record: Dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically (every rank and dataloader worker may
    write the same record). An existing record of other flips is refused: a run resumed
    in the same folder would otherwise continue a checkpoint trained on other labels."""
    old = read_record(path)
    if old is not None:
        if old == json.loads(json.dumps(record)):
            return
        keys = ("rate", "seed", "num_classes", "num_samples", "clean_labels_sha256")
        diff = [
            f"{k}: {old.get(k)!r} -> {record.get(k)!r}"
            for k in keys
            if old.get(k) != record.get(k)
        ]
        raise ValueError(
            f"label-noise record {path} holds other flips ({'; '.join(diff) or 'other samples'}). "
            "Delete it, or use another CHECKPOINT.DIR or VCF_LABEL_NOISE.RECORD_FILE"
        )
    atomic_write(path, lambda f: f.write(json.dumps(record).encode()))


def record_path(
    settings: LabelNoiseSettings, checkpoint_dir: str, split: str, index: int = 0
) -> str:
    """``RECORD_FILE`` or ``<checkpoint_dir>/vcf_label_noise_<split>.json``; the label
    source at ``index`` > 0 of a split gets ``_<index>`` before ``.json``."""
    path = settings.record_file or os.path.join(
        checkpoint_dir, f"vcf_label_noise_{split.lower()}.json"
    )
    if index > 0:
        stem, ext = os.path.splitext(path)
        path = f"{stem}_{index}{ext or '.json'}"
    return path
