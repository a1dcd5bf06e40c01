"""Frozen-feature probes on feature matrices: k-NN and logistic regression on few or all
labels (pure numpy / torch / scikit-learn; ``probes`` extracts the features).

ClusterFit (Yan et al. 2020, Sec. 4.1, Fig. 4) compares representations by linear probes
per layer. On Fashion-MNIST a linear probe trained on every label saturates and can hide
differences between models, so next to VISSL's linear probes we measure what the
features give with few or no trained parameters:

- k-NN: k=20 nearest train images by cosine similarity of the L2-normalised features,
  majority vote (ties: larger summed similarity), accuracy on the test split;
- few-label: logistic regression (scikit-learn, L2, C=1, lbfgs) on ``n`` labelled train
  images per class (10 and 100), drawn with a seed; mean (and spread) over several draws;
- full-label (optional): the same logistic regression on every train image.

For logistic regression the features are standardised with statistics of the whole
train subset (no labels needed for that). Accuracies are in percent.
"""

import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch


def knn_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    k: int = 20,
    chunk: int = 2048,
) -> float:
    """Top-1 (%) of a k-NN majority vote with cosine similarity on L2-normalised features."""
    train = torch.nn.functional.normalize(
        torch.from_numpy(np.ascontiguousarray(x_train)).float(), dim=1
    )
    test = torch.nn.functional.normalize(
        torch.from_numpy(np.ascontiguousarray(x_test)).float(), dim=1
    )
    labels = torch.from_numpy(y_train)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    k = min(k, len(train))
    correct = 0
    for s in range(0, len(test), chunk):
        sims = test[s : s + chunk] @ train.T
        top_sim, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(top_idx), num_classes)
        votes.scatter_add_(1, labels[top_idx], torch.ones_like(top_sim))
        # ties between counts: the class with the larger summed similarity wins
        sim_sum = torch.zeros(len(top_idx), num_classes)
        sim_sum.scatter_add_(1, labels[top_idx], top_sim)
        pred = (votes + 1e-3 * sim_sum / k).argmax(1).numpy()
        correct += int((pred == y_test[s : s + chunk]).sum())
    return 100.0 * correct / len(test)


def logreg_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    max_iter: int,
    C: float,
) -> Tuple[float, bool]:
    """Top-1 (%) of a logistic regression on standardised features, and whether lbfgs
    converged within ``max_iter``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit((x_train - mean) / std, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    acc = 100.0 * float((clf.predict((x_test - mean) / std) == y_test).mean())
    return acc, converged


def few_label_draws(
    y_train: np.ndarray, per_class: int, draws: int, seed: int
) -> Optional[List[np.ndarray]]:
    """``draws`` index sets with ``per_class`` train images of every class (seeded);
    None when a class has fewer images than that."""
    classes = np.unique(y_train)
    counts = np.bincount(y_train)
    if counts[classes].min() < per_class:
        return None
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(draws):
        idx = [
            rng.choice(np.flatnonzero(y_train == c), per_class, replace=False)
            for c in classes
        ]
        out.append(np.sort(np.concatenate(idx)))
    return out


def _few_label(
    feats: Dict[str, Any],
    result: Dict[str, Any],
    n: int,
    draws: int,
    seed: int,
    max_iter: int,
    C: float,
) -> None:
    name = f"few{n}"
    y_train, y_test = feats["y_train"], feats["y_test"]
    index_sets = few_label_draws(y_train, n, draws, seed)
    result[name], result[name + "_std"] = {}, {}
    if index_sets is None:
        result[name] = None  # a class has fewer than n train images
        return
    for layer, sl in feats["slices"].items():
        x_tr, x_te = feats["train"][:, sl], feats["test"][:, sl]
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
        accs = []
        for idx in index_sets:
            acc, ok = logreg_accuracy(
                x_tr[idx], y_train[idx], x_te, y_test, mean, std, max_iter, C
            )
            accs.append(acc)
            key = f"{name}/{layer}"
            result["converged"][key] = result["converged"].get(key, True) and ok
        result[name][layer] = round(float(np.mean(accs)), 2)
        result[name + "_std"][layer] = round(float(np.std(accs)), 2)


def _full_label(
    feats: Dict[str, Any], result: Dict[str, Any], max_iter: int, C: float
) -> None:
    result["full"] = {}
    for layer, sl in feats["slices"].items():
        x_tr, x_te = feats["train"][:, sl], feats["test"][:, sl]
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
        acc, ok = logreg_accuracy(
            x_tr, feats["y_train"], x_te, feats["y_test"], mean, std, max_iter, C
        )
        result["full"][layer] = round(acc, 2)
        result["converged"][f"full/{layer}"] = ok


def run_probes(
    feats: Dict[str, Any],
    seed: int = 0,
    knn_k: int = 20,
    shots: Sequence[int] = (10, 100),
    draws: int = 5,
    full_label: bool = False,
    max_iter: int = 1000,
    C: float = 1.0,
) -> Dict[str, Any]:
    """All probes on extracted features (``{"train", "test", "y_train", "y_test",
    "slices": {layer: column slice}}``): ``{probe: {layer: accuracy %}}`` plus
    ``<probe>_std`` (spread over few-label draws), ``converged`` and timings."""
    result: Dict[str, Any] = {"knn": {}, "converged": {}, "time_s": {}}
    y_train, y_test = feats["y_train"], feats["y_test"]
    t0 = time.time()
    for layer, sl in feats["slices"].items():
        result["knn"][layer] = round(
            knn_accuracy(
                feats["train"][:, sl], y_train, feats["test"][:, sl], y_test, knn_k
            ),
            2,
        )
    result["time_s"]["knn"] = round(time.time() - t0, 2)
    for n in shots:
        t0 = time.time()
        _few_label(feats, result, n, draws, seed, max_iter, C)
        if result[f"few{n}"] is not None:
            result["time_s"][f"few{n}"] = round(time.time() - t0, 2)
    if full_label:
        t0 = time.time()
        _full_label(feats, result, max_iter, C)
        result["time_s"]["full"] = round(time.time() - t0, 2)
    return result
