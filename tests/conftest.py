"""Shared fixtures: a small IDX dataset in Fashion-MNIST's format (no apt, no download)
and a helper that runs our launcher in a subprocess, as a user would."""

import gzip
import os
import struct
import subprocess
import sys
from typing import List

import numpy as np
import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path: str, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 IDX file (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path + (".gz" if compress else ""), "wb") as f:
        f.write(data)


def make_idx_dataset(
    folder: str, n_train: int = 600, n_test: int = 200, seed: int = 0
) -> str:
    """Fashion-MNIST-format folder built from scikit-learn's digits upscaled to 28x28:
    real images with 10 classes, small enough for end-to-end tests."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(digits.images))
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(np.uint8(im * 255 / 16)).resize(
                    (28, 28), Image.BILINEAR
                )
            )
            for im in digits.images[order]
        ]
    )
    labels = digits.target[order].astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte"), images[:n_train])
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), labels[:n_train])
    write_idx(
        os.path.join(folder, "t10k-images-idx3-ubyte"),
        images[n_train : n_train + n_test],
    )
    write_idx(
        os.path.join(folder, "t10k-labels-idx1-ubyte"),
        labels[n_train : n_train + n_test],
    )
    return folder


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> str:
    return make_idx_dataset(str(tmp_path_factory.mktemp("idx")))


def data_overrides(idx: str, train_labels: bool = True) -> List[str]:
    """Point a config's data at ``idx``; ``train_labels=False`` keeps DATA.TRAIN's
    LABEL_PATHS (e.g. N_cf's ``auto`` cluster labels)."""
    out = [f"config.DATA.TRAIN.DATA_PATHS=[{idx}]"]
    if train_labels:
        out.append(f"config.DATA.TRAIN.LABEL_PATHS=[{idx}]")
    return out + [
        f"config.DATA.TEST.DATA_PATHS=[{idx}]",
        f"config.DATA.TEST.LABEL_PATHS=[{idx}]",
    ]


def run_tool(
    args: List[str], tool: str = "run_distributed_engines.py", timeout: int = 600
):
    """Run one of our tools/ scripts; fail the test with the log tail on error."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{tool} {' '.join(args)} failed ({proc.returncode}):\n"
            + "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        )
    return proc
