"""An ImageNet-style JPEG folder made on the spot (``<root>/{train,val}/<class>/*.jpg``),
for GPU checks on a machine without ImageNet: each class a colour and a stripe
frequency, each image that pattern under smooth random noise, so the classes are
separable (the pipeline's clusters and probes have something to find) and JPEG
decoding costs about what it costs on photographs of the same size.

    python -m benchmarks.synthetic_folder /tmp/imgs --classes 20 --train 500 --val 25
"""

import argparse
import multiprocessing
import os
import time
from typing import Tuple

import numpy as np


def _image(cls: int, index: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, cls, index])
    base = np.random.default_rng([seed, cls]).uniform(40, 215, size=3)
    # smooth noise: a coarse random grid, upsampled (cheap; not white noise, which
    # JPEG would compress far worse than photographs)
    coarse = rng.normal(0, 40, size=(size // 16 + 1, size // 16 + 1, 3))
    noise = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
    freq = 2 + cls % 7
    stripes = 30 * np.sin(np.linspace(0, freq * np.pi, size))[None, :, None]
    return np.clip(base + noise + stripes, 0, 255).astype(np.uint8)


def _write(job: Tuple[str, int, int, int, int]) -> None:
    from PIL import Image

    path, cls, index, size, seed = job
    Image.fromarray(_image(cls, index, size, seed)).save(path, quality=90)


def make_image_folder(
    root: str,
    classes: int = 20,
    train: int = 500,
    val: int = 25,
    size: int = 320,
    processes: int = 0,
    seed: int = 0,
) -> str:
    """Write the folder (kept when it already holds the same number of files);
    ``processes``: 0 = every CPU. Returns ``root``."""
    jobs = []
    for split, per_class, offset in (("train", train, 0), ("val", val, train)):
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c:03d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                path = os.path.join(folder, f"{i:05d}.jpg")
                if not os.path.isfile(path):
                    jobs.append((path, c, offset + i, size, seed))
    if jobs:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(processes or os.cpu_count() or 1) as pool:
            pool.map(_write, jobs, chunksize=64)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--train", type=int, default=500)
    p.add_argument("--val", type=int, default=25)
    p.add_argument("--size", type=int, default=320)
    a = p.parse_args()
    t0 = time.time()
    make_image_folder(a.root, a.classes, a.train, a.val, a.size)
    print(
        f"{a.root}: {a.classes * (a.train + a.val)} images in {time.time() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
