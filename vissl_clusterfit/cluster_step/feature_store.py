"""Features on disk: per-rank ``.npy`` shards keyed by dataset index, plus a manifest.

At ImageNet scale (ClusterFit, Yan et al. 2020, Sec. 4: 1.28M x 2048) and beyond
(DeeperCluster, Caron et al. 2019, Sec. 4: 96M images) the features of D_cf must not
travel to one process. The dataset is cut into shards of ``rows`` consecutive indices
(fixed by the data set, not by the number of processes); shard s is extracted by rank
s mod W, in batches that start at the shard's first row, so its content does not
depend on W. Each shard is written atomically (``vissl_clusterfit.io``) and skipped
when it is already there: a killed extraction resumes at the first missing shard.
Rank 0 writes ``manifest.json`` once every shard exists. No DistributedSampler is
involved, so no index is padded or duplicated.

Readers (:class:`FeatureStore`, and the precomputed sources: VISSL's
``extract_features`` output, an ``.npy`` matrix) open one shard at a time memory-mapped
and close it before the next, so a reader's resident memory is one shard, not N x D.
They implement :class:`vissl_clusterfit.clustering.bounded.RowSource`.
"""

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vissl_clusterfit.io import atomic_write


MANIFEST = "manifest.json"
DTYPES = ("float32", "float16")
FORMAT = "vcf_feature_shards/1"
# Rows per chunk of the readers: a multiple of the pre-processing chunk (4096 rows),
# so chunked pre-processing rounds exactly as it does on the whole matrix.
CHUNK_ROWS = 16384
PRECOMPUTED_KEY = "config.VCF.CLUSTERFIT.FEATURE_SHARDS.PRECOMPUTED"
SAMPLE_LIST_KEY = "config.VCF.CLUSTERFIT.FEATURE_SHARDS.SAMPLE_LIST"


def shard_ranges(n: int, rows: int) -> List[Tuple[int, int]]:
    """[start, stop) of each shard: ``rows`` consecutive dataset indices each."""
    return [(s, min(s + rows, n)) for s in range(0, n, rows)]


def shard_path(store_dir: str, index: int) -> str:
    return os.path.join(store_dir, f"shard_{index:06d}.npy")


def shard_complete(path: str, rows: int) -> bool:
    """True when ``path`` holds a readable (rows, D) array (a finished shard)."""
    if not os.path.exists(path):
        return False
    try:
        mm = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):  # truncated or not an .npy
        return False
    ok = mm.ndim == 2 and mm.shape[0] == rows
    del mm
    return ok


def write_shard(path: str, features: np.ndarray, dtype: str) -> None:
    """Save a shard atomically, in ``dtype`` (float16 halves the disk; rounding only)."""
    atomic_write(path, lambda f: np.save(f, np.asarray(features, dtype=dtype)))


def write_manifest(store_dir: str, n: int, rows: int, dtype: str) -> str:
    """Rank 0, after every shard exists: the manifest readers start from."""
    ranges = shard_ranges(n, rows)
    first = np.load(shard_path(store_dir, 0), mmap_mode="r") if ranges else None
    dim = int(first.shape[1]) if first is not None else 0
    del first
    manifest = {
        "format": FORMAT,
        "num_rows": n,
        "dim": dim,
        "dtype": dtype,
        "rows_per_shard": rows,
        "shards": [
            {"file": os.path.basename(shard_path(store_dir, i)), "start": a, "stop": b}
            for i, (a, b) in enumerate(ranges)
        ],
    }
    path = os.path.join(store_dir, MANIFEST)
    atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return path


@dataclass(frozen=True)
class Shard:
    """Rows ``offset .. offset + count`` of an ``.npy`` file. Their dataset indices:
    ``start ..`` consecutively, or ``indices`` (then only the file rows ``keep``)."""

    file: str
    start: int
    count: int
    offset: int = 0
    indices: Optional[np.ndarray] = None
    keep: Optional[np.ndarray] = None


class FeatureStore:
    """N x D features in shards on disk, one memory-mapped at a time (a ``RowSource``)."""

    def __init__(
        self,
        shards: Sequence[Shard],
        num_rows: int,
        dim: int,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.shards = list(shards)
        self.num_rows = int(num_rows)
        self.dim = int(dim)
        self.chunk_rows = chunk_rows

    @classmethod
    def open(cls, store_dir: str) -> "FeatureStore":
        """The store written by the extraction (``manifest.json`` in ``store_dir``)."""
        path = os.path.join(store_dir, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} does not exist: the feature shards in {store_dir} are "
                "incomplete (run the cluster step again to finish the extraction)"
            )
        with open(path) as f:
            m = json.load(f)
        if m.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} manifest ({m.get('format')})")
        shards = [
            Shard(
                os.path.join(store_dir, s["file"]), s["start"], s["stop"] - s["start"]
            )
            for s in m["shards"]
        ]
        return cls(shards, m["num_rows"], m["dim"])

    def _map(self, shard: Shard) -> np.ndarray:
        """The shard's rows, memory-mapped (a view: nothing read yet)."""
        mm = np.load(shard.file, mmap_mode="r")
        mm = mm.reshape(mm.shape[0], -1)[shard.offset : shard.offset + shard.count]
        return mm if shard.keep is None else mm[shard.keep]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), D) for sorted unique dataset indices."""
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for shard in self.shards:
            if shard.indices is None:
                lo, hi = np.searchsorted(rows, [shard.start, shard.start + shard.count])
                if hi > lo:
                    out[lo:hi] = self._map(shard)[rows[lo:hi] - shard.start]
                continue
            pos_in_rows, pos_in_shard = _match(rows, shard.indices)
            if len(pos_in_rows):
                out[pos_in_rows] = self._map(shard)[pos_in_shard]
        return out

    def chunks(
        self, rank: int = 0, world: int = 1
    ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """(dataset indices, float32 rows) per chunk of shards ``rank``, ``rank + W``..."""
        for shard in self.shards[rank::world]:
            mm = self._map(shard)
            ids = shard.indices
            if ids is None:
                ids = np.arange(shard.start, shard.start + shard.count)
            for s in range(0, len(ids), self.chunk_rows):
                rows = np.array(mm[s : s + self.chunk_rows], dtype=np.float32)
                yield ids[s : s + self.chunk_rows], rows
            del mm  # unmap before the next shard


def _match(rows: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Positions in ``rows`` (sorted) and in ``ids`` of the values both contain."""
    if not len(ids):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    found = np.minimum(np.searchsorted(ids[order], rows), len(ids) - 1)
    hit = ids[order][found] == rows
    return np.nonzero(hit)[0], order[found[hit]]


def vissl_extracted(input_dir: str, split: str, layer: str, n: int) -> FeatureStore:
    """VISSL's ``extract_features`` output (``<prefix>_<split>_<layer>_features.npy``
    with ``..._inds.npy``) as a store over dataset indices 0..n-1. Rows a
    DistributedSampler padded in twice are read once (the first occurrence)."""
    pattern = re.compile(rf"(.*)_{re.escape(split)}_{re.escape(layer)}_features\.npy$")
    files = sorted(
        f
        for f in glob.glob(os.path.join(glob.escape(input_dir), "*.npy"))
        if pattern.match(os.path.basename(f))
    )
    if not files:
        raise FileNotFoundError(
            f"no VISSL features {input_dir}/*_{split}_{layer}_features.npy: check "
            f"{PRECOMPUTED_KEY}, its PRECOMPUTED_SPLIT and "
            "config.VCF.CLUSTERFIT.FEATURE_LAYER"
        )
    seen = np.zeros(n, dtype=bool)
    shards, dim = [], 0
    for f in files:
        inds = np.load(f[: -len("_features.npy")] + "_inds.npy").astype(np.int64)
        if len(inds) and (inds.min() < 0 or inds.max() >= n):
            raise ValueError(
                f"{f}: indices up to {inds.max()} for a data set of {n} images: the "
                "features were extracted from another DATA.TRAIN"
            )
        _, first = np.unique(inds, return_index=True)
        first = np.sort(first[~seen[inds[first]]])
        seen[inds[first]] = True
        mm = np.load(f, mmap_mode="r")
        dim, count = int(np.prod(mm.shape[1:])), int(mm.shape[0])
        del mm
        shards.append(Shard(f, 0, count, indices=inds[first], keep=first))
    if not seen.all():
        raise ValueError(
            f"VISSL features in {input_dir} cover {int(seen.sum())} of {n} images of "
            "DATA.TRAIN: extract every image (same DATA_LIMIT) or cluster another split"
        )
    return FeatureStore(shards, n, dim)


def npy_matrix(
    path: str, n: int, samples: str = "", expected: Optional[List[str]] = None
) -> FeatureStore:
    """An (N, D) ``.npy`` in DATA.TRAIN order, read in chunks; ``samples``: an ``.npy``
    (or text file) of one image path per row, checked against ``expected``."""
    mm = np.load(path, mmap_mode="r")
    shape = mm.shape
    del mm
    if len(shape) < 2 or shape[0] != n:
        raise ValueError(
            f"{path} has shape {shape}: {PRECOMPUTED_KEY} "
            f"must be (N={n}, D), one row per image of DATA.TRAIN in its order"
        )
    if samples:
        listed = _read_sample_list(samples)
        if expected is not None:
            _check_sample_list(samples, path, listed, [str(p) for p in expected])
    # Windows of the one file, each mapped alone: resident memory stays one window.
    windows = [
        Shard(path, a, b - a, offset=a) for a, b in shard_ranges(n, 4 * CHUNK_ROWS)
    ]
    return FeatureStore(windows, n, int(np.prod(shape[1:])))


def _check_sample_list(
    samples: str, features: str, listed: List[str], expected: List[str]
) -> None:
    """``listed`` (SAMPLE_LIST) must be DATA.TRAIN's image paths in its order."""
    if listed == expected:
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(listed, expected)) if a != b),
        min(len(listed), len(expected)),
    )
    got = listed[first] if first < len(listed) else "(end of the list)"
    want = expected[first] if first < len(expected) else "(no more images)"
    raise ValueError(
        f"{SAMPLE_LIST_KEY}={samples} does not list DATA.TRAIN's images in order: "
        f"{len(listed)} entries for {len(expected)} images, entry {first} is {got!r} "
        f"where DATA.TRAIN has {want!r}. It must be an .npy of strings or a text file "
        f"with one image path per row, row i naming the image of row i of {features}. "
        "Cluster the DATA.TRAIN those features were extracted from, or write the "
        f"list (and {PRECOMPUTED_KEY}) again in DATA.TRAIN's order"
    )


def _read_sample_list(path: str) -> List[str]:
    if path.endswith(".npy"):
        return [str(s) for s in np.load(path, allow_pickle=False)]
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]
