"""Cost of the dataset-identity check (data/dataset_identity.py) at ImageNet-1K size.

Every consumer of a cluster label set recomputes the ordered sample list (path + file
size per image) and compares its sha256 with the recorded one; the label set writes the
list once. Target (issue 20): under 2% of the extraction time at 1,200 img/s, i.e.
under 0.02 x 1,281,167 / 1,200 = 21.4 s for ImageNet-1K's train split.

What runs: a dataset shaped like VISSL's ``disk_folder`` source (an ImageFolder's
``samples`` list, built before timing: VISSL holds it anyway) with ``--num-paths``
ImageNet-style paths. The paths cycle over ``--real-files`` files that exist (so every
``os.stat`` is a real one, served from the kernel's dentry/inode cache: a warm local
disk; a cold network file system is slower and is not measured here). Timed, median of
``--repeats``:

- ``check``: sha256 of the recomputed list (what every reuse / N_cf dataset does),
- ``write``: writing ``<NAME>_images.txt`` (once per clustering),
- ``locate``: finding the first differing sample when it is the last one (worst case of
  a refusal's message).

Peak memory: the rise of the process's peak RSS (VmHWM) over each call.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.dataset_identity            # 1,281,167 paths
    .venv/bin/python -m benchmarks.dataset_identity --quick    # 50,000 paths

Writes benchmarks/results/dataset_identity.{json,md} (``--quick``: dataset_identity_quick).
"""

import argparse
import os
import shutil
import tempfile
from typing import Any, Dict, List

from benchmarks import common, plugin
from benchmarks.measure import PeakRSS, Timer, median, mib
from benchmarks.report import print_table


IMAGENET_TRAIN = 1281167
IMAGES_PER_S = 1200.0
BUDGET = 0.02


class _Samples:
    def __init__(self, samples: List[Any]) -> None:
        self.samples = samples


class _Source:
    data_source = "disk_folder"

    def __init__(self, samples: List[Any]) -> None:
        self.image_dataset = _Samples(samples)


class FolderLikeDataset:
    """The attributes of VISSL's GenericSSLDataset that the identity reads."""

    def __init__(self, samples: List[Any]) -> None:
        self.data_limit = -1
        self.data_objs = [_Source(samples)]
        self.data_sources = ["disk_folder"]
        self.split = "TRAIN"
        self.cfg = {"DATA": {"TRAIN": {}}}

    def __len__(self) -> int:
        return len(self.data_objs[0].image_dataset.samples)


def make_samples(root: str, num_paths: int, real_files: int) -> List[Any]:
    classes = 1000
    real = []
    for i in range(real_files):
        folder = os.path.join(root, f"n{i % classes:08d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"n{i % classes:08d}_{i}.JPEG")
        with open(path, "wb") as f:
            f.write(b"\xff" * (100 + i % 1000))
        real.append(path)
    return [(real[i % real_files], i % classes) for i in range(num_paths)]


def measure(fn: Any, repeats: int) -> Dict[str, float]:
    times, peaks = [], []
    for _ in range(repeats):
        with PeakRSS() as mem, Timer() as t:
            fn()
        times.append(t.s)
        peaks.append(mem.delta)
    return {"time_s": median(times), "peak_rss_mib": mib(max(peaks))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-paths", type=int, default=IMAGENET_TRAIN)
    ap.add_argument("--real-files", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50,000 paths, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.num_paths, args.repeats = 50000, 1
    identity = plugin.dataset_identity
    work = tempfile.mkdtemp(prefix="vcf_identity_")
    try:
        dataset = FolderLikeDataset(
            make_samples(os.path.join(work, "train"), args.num_paths, args.real_files)
        )
        listed = os.path.join(work, "clusterfit_images.txt")
        rows = [
            dict(
                step="write",
                **measure(
                    lambda: identity.write_sample_list(listed, dataset), args.repeats
                ),
            ),
            dict(
                step="check",
                **measure(
                    lambda: identity.lines_sha256(identity.sample_lines(dataset)),
                    args.repeats,
                ),
            ),
        ]
        # worst case for the message: the last sample differs
        last = dataset.data_objs[0].image_dataset.samples
        last[-1] = (last[0][0], 0)
        rows.append(
            dict(
                step="locate (last differs)",
                **measure(
                    lambda: identity.first_difference(listed, dataset), args.repeats
                ),
            )
        )
        list_mib = mib(os.path.getsize(listed))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extraction_s = args.num_paths / IMAGES_PER_S
    for r in rows:
        r["share_of_extraction_pct"] = 100.0 * r["time_s"] / extraction_s
    columns = ["step", "time_s", "peak_rss_mib", "share_of_extraction_pct"]
    table = {
        "title": f"{args.num_paths:,} paths (extraction at {IMAGES_PER_S:.0f} img/s: "
        f"{extraction_s:.0f} s; budget {100 * BUDGET:.0f}% = {BUDGET * extraction_s:.1f} s)",
        "columns": columns,
        "rows": rows,
    }
    print_table(table["rows"], columns, title=table["title"])
    name = "dataset_identity" + ("_quick" if args.quick else "")
    paths = common.write_results(
        name,
        common.machine_info(),
        [table],
        {
            "args": vars(args),
            "list_file_mib": list_mib,
            "command": common.command_line(),
            "commit": common.git_commit(),
        },
        notes=[
            f"stat() on {args.real_files:,} real files cycled (warm cache); the "
            f"images list file is {list_mib:.0f} MiB",
            "the sample list of VISSL's ImageFolder is built before timing (VISSL "
            "holds it anyway); peak_rss_mib is the rise of VmHWM during the call",
        ],
    )
    print(paths)


if __name__ == "__main__":
    main()
