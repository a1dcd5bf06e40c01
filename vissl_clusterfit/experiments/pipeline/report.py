"""report.json, report.md and plots of a ClusterFit pipeline run.

Plots: top-1 per layer per model (as ClusterFit Fig. 4), the cluster size histogram, and
a grid of sample images for a few clusters (for our in-memory data sources).
"""

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from vissl_clusterfit.experiments.markdown import markdown_table


LAYERS = ["conv1", "res2", "res3", "res4", "res5"]


def accuracy_table(results: Dict[str, Dict[str, float]]) -> str:
    layers = [l for l in LAYERS if any(l in r for r in results.values())]
    rows = []
    for model, top1 in results.items():
        best = max(top1.get(l, float("-inf")) for l in layers)
        cells = [
            (
                (f"**{top1[l]:.2f}**" if top1[l] == best else f"{top1[l]:.2f}")
                if l in top1
                else "-"
            )
            for l in layers
        ]
        rows.append([model, *cells])
    lines = markdown_table(["model", *layers], rows, "l" + "r" * len(layers))
    return "\n".join(lines)


def _plot_accuracy(path: str, title: str, results: Dict[str, Dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model, top1 in results.items():
        layers = [l for l in LAYERS if l in top1]
        ax.plot(layers, [top1[l] for l in layers], marker="o", label=model)
    ax.set_xlabel("layer")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_sizes(path: str, labels: np.ndarray, k: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.bincount(labels, minlength=k)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(sizes, bins=min(30, max(5, k // 2)))
    ax.set_xlabel("cluster size (images)")
    ax.set_ylabel("clusters")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dataset_images(dataset_settings: Dict[str, Any]) -> Optional[np.ndarray]:
    """D_cf's images (N, H, W) in dataset order, for our in-memory data sources."""
    from vissl_clusterfit.data.array_source import select_subset

    source = dataset_settings["sources"][0]
    if source == "vcf_fashion_mnist":
        from vissl_clusterfit.data.fashion_mnist import load_fashion_mnist

        images, _ = load_fashion_mnist(dataset_settings["paths"][0], "train")
    elif source == "vcf_digits":
        from vissl_clusterfit.data.digits import load_digits_split

        images, _ = load_digits_split("train")
    else:
        return None
    sampling = dataset_settings.get("limit_sampling", {}) or {}
    idx = select_subset(
        len(images),
        int(dataset_settings["limit"]),
        seed=int(sampling.get("SEED", 0)),
        skip=int(sampling.get("SKIP_NUM_SAMPLES", 0)),
    )
    return images[idx]


def _plot_cluster_samples(
    path: str,
    images: np.ndarray,
    labels: np.ndarray,
    num_clusters: int = 8,
    per_cluster: int = 10,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.bincount(labels)
    shown = np.argsort(-sizes)[:num_clusters]  # the largest clusters
    rng = np.random.RandomState(0)
    fig, axes = plt.subplots(
        len(shown), per_cluster, figsize=(per_cluster, len(shown) * 1.05)
    )
    axes = np.atleast_2d(axes)
    for row, c in enumerate(shown):
        members = np.flatnonzero(labels == c)
        pick = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
        for col in range(per_cluster):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(pick):
                ax.imshow(images[pick[col]], cmap="gray")
        axes[row, 0].set_title(f"cluster {c} (n={sizes[c]})", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out_dir: str, report: Dict[str, Any]) -> None:
    plots: List[str] = []
    for target, results in report["linear_top1"].items():
        name = f"accuracy_per_layer_{target}.png"
        _plot_accuracy(
            os.path.join(out_dir, name), f"Linear probes on {target}", results
        )
        plots.append(name)
    for pretext, info in report.get("clusters", {}).items():
        labels = np.load(info["files"]["labels"])
        with open(info["files"]["meta"]) as f:
            meta = json.load(f)
        k = int(meta["num_clusters"])
        name = f"cluster_sizes_{pretext}.png"
        _plot_sizes(
            os.path.join(out_dir, name), labels, k, f"{pretext} N_pre features, K={k}"
        )
        plots.append(name)
        images = dataset_images(meta["settings"]["dataset"])
        if images is not None and len(images) == len(labels):
            name = f"cluster_samples_{pretext}.png"
            _plot_cluster_samples(os.path.join(out_dir, name), images, labels)
            plots.append(name)
    report["plots"] = plots
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(render_markdown(report))


def render_markdown(report: Dict[str, Any]) -> str:
    s = report["settings"]
    out = [
        "# ClusterFit pipeline report",
        "",
        f"Pretexts: {s['pretexts']}; K={s['num_clusters']}; D_cf = {s['data_limit']} "
        f"{report.get('data', 'Fashion-MNIST')} train images (no labels); "
        f"{s['epochs']} epochs for N_pre and N_cf; "
        f"scale={s['scale']}; processes={s['num_proc']}; seed={s['seed']}.",
        "",
    ]
    for target, results in report["linear_top1"].items():
        out += [
            f"## Linear probe top-1 (%) on {target}, per layer",
            "",
            accuracy_table(results),
            "",
        ]
    if report.get("clusters"):
        out += [
            "## Clusters",
            "",
        ]
        rows = []
        for pretext, info in report["clusters"].items():
            m, t = info["metrics"], info["time_s"]
            rows.append(
                [
                    pretext,
                    int(m["num_clusters"]),
                    int(m["num_empty"]),
                    int(m.get("n_empty_reseeded", 0)),
                    f"{m['size_min']:.0f} / {m['size_mean']:.0f} / {m['size_max']:.0f}",
                    *(
                        f"{m.get(k, float('nan')):.3f}"
                        for k in ("nmi", "ami", "purity")
                    ),
                    f"{t['extract']:.1f}",
                    f"{t['cluster']:.1f}",
                ]
            )
        header = ["N_pre", "K", "empty", "re-seeded", "size min / mean / max"]
        header += ["NMI", "AMI", "purity", "extract s", "cluster s"]
        out += markdown_table(header, rows, "lrrrlrrrrr") + [""]
    out += ["## Time per stage (s)", ""]
    times = [[k, f"{v:.0f}"] for k, v in report["stage_time_s"].items()]
    out += markdown_table(["stage", "s"], times, "lr")
    out += ["", f"Total: {report['total_time_s']:.0f} s", ""]
    out += [f"![{p}]({p})" for p in report.get("plots", [])]
    return "\n".join(out) + "\n"
