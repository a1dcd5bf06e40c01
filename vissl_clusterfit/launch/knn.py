"""k-NN evaluation of a checkpoint with VISSL's ``benchmark/nearest_neighbor`` configs.

VISSL 0.1.6 ships the k-NN configs (``NEAREST_NEIGHBOR.TOPK``, ``SIGMA``,
``L2_NORM_FEATS``) but not the code that runs them: its repository's
tools/nearest_neighbor_test.py (and vissl/utils/knn_utils.py of later versions) is not
in the wheel. This module does the same two steps: VISSL's ``extract_features`` engine
writes the features of DATA.TRAIN and DATA.TEST (all processes, our hooks and compat
fixes, CPU or GPU), then every test sample votes over its TOPK most similar training
samples with weights exp(similarity / SIGMA) (the weighted k-NN of Wu et al., CVPR 2018,
that VISSL's tool implements). Top-1 and top-5 per extracted layer are logged and
written to ``<output>/knn.json``.

Config params: VISSL's (NEAREST_NEIGHBOR.*, EXTRACT_FEATURES.OUTPUT_DIR, MODEL.*);
``+vissl_clusterfit_defaults=knn_res5`` probes the average-pooled res5 trunk features
(what ClusterFit clusters) instead of the config's SimCLR-style heads.
"""

import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from vissl_clusterfit.config import compose_config
from vissl_clusterfit.launch.launcher import exit_if_help


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    topk: int,
    sigma: float,
    l2_norm: bool,
    device: torch.device = torch.device("cpu"),
    chunk: int = 1024,
) -> Tuple[float, float]:
    """(top-1 %, top-5 %) of the exp(sim / sigma)-weighted vote of the ``topk`` most
    similar training samples (dot product, after L2 normalisation if ``l2_norm``)."""
    train = torch.as_tensor(train_x.reshape(len(train_x), -1), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(train_y).reshape(-1), dtype=torch.long)
    train, labels = train.to(device), labels.to(device)
    if l2_norm:
        train = torch.nn.functional.normalize(train, dim=1)
    num_classes = int(labels.max()) + 1
    k = min(topk, len(train))
    top1 = top5 = 0
    for start in range(0, len(test_x), chunk):
        x = torch.as_tensor(
            test_x[start : start + chunk].reshape(-1, train.shape[1]),
            dtype=torch.float32,
        ).to(device)
        y = torch.as_tensor(
            np.asarray(test_y[start : start + chunk]).reshape(-1), dtype=torch.long
        ).to(device)
        if l2_norm:
            x = torch.nn.functional.normalize(x, dim=1)
        sim, idx = (x @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(x), num_classes, device=device)
        votes.scatter_add_(1, labels[idx], (sim / sigma).exp())
        ranked = votes.argsort(dim=1, descending=True)
        correct = ranked[:, : min(5, num_classes)] == y[:, None]
        top1 += int(correct[:, 0].sum())
        top5 += int(correct.any(dim=1).sum())
    n = max(1, len(test_x))
    return 100.0 * top1 / n, 100.0 * top5 / n


def feature_folder(cfg: Any) -> str:
    return cfg.EXTRACT_FEATURES.OUTPUT_DIR or os.path.join(
        cfg.CHECKPOINT.DIR, "features"
    )


def evaluate(cfg: Any) -> Dict[str, Dict[str, float]]:
    """k-NN top-1/top-5 per layer from the features the extract engine wrote."""
    from vissl.models.model_helpers import get_trunk_output_feature_names
    from vissl.utils.extract_features_utils import ExtractedFeaturesLoader

    folder = feature_folder(cfg)
    layers = get_trunk_output_feature_names(cfg.MODEL) or ["heads"]
    nn_cfg = cfg.NEAREST_NEIGHBOR
    use_gpu = cfg.MACHINE.DEVICE == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    results: Dict[str, Dict[str, float]] = {}
    for layer in layers:
        train = ExtractedFeaturesLoader.load_features(folder, "train", layer, True)
        test = ExtractedFeaturesLoader.load_features(folder, "test", layer, True)
        top1, top5 = knn_accuracy(
            train["features"],
            train["targets"],
            test["features"],
            test["targets"],
            int(nn_cfg.TOPK),
            float(nn_cfg.SIGMA),
            bool(nn_cfg.L2_NORM_FEATS),
            device,
        )
        results[layer] = {"top_1": round(top1, 4), "top_5": round(top5, 4)}
        logging.info(f"[vcf] k-NN {layer}: top-1 {top1:.2f}, top-5 {top5:.2f}")
    return results


def main(args: Any, cfg: Any) -> Dict[str, Dict[str, float]]:
    """Extract with VISSL's engine (this node's processes), then run the k-NN on node 0."""
    from vissl.utils.distributed_launcher import launch_distributed

    from vissl_clusterfit.hooks import hook_generator

    cfg.EXTRACT_FEATURES.OUTPUT_DIR = feature_folder(cfg)
    os.makedirs(cfg.EXTRACT_FEATURES.OUTPUT_DIR, exist_ok=True)
    launch_distributed(
        cfg,
        node_id=args.node_id,
        engine_name="extract_features",
        hook_generator=hook_generator,
    )
    if args.node_id != 0:
        return {}
    results = evaluate(cfg)
    out = os.path.join(cfg.CHECKPOINT.DIR, "knn.json")
    with open(out, "w") as f:
        json.dump({"top_k": int(cfg.NEAREST_NEIGHBOR.TOPK), "layers": results}, f)
    print(f"k-NN accuracy (%): {json.dumps(results)} -> {out}", flush=True)
    return results


USAGE = """usage: vissl-clusterfit-knn config=benchmark/nearest_neighbor/<config> \\
           +vissl_clusterfit_defaults=knn_res5 config.MODEL.WEIGHTS_INIT.PARAMS_FILE=<ckpt> \\
           config.CHECKPOINT.DIR=<folder>

k-NN evaluation with VISSL's benchmark/nearest_neighbor configs: VISSL's
extract_features engine, then the weighted k-NN vote; results in
<CHECKPOINT.DIR>/knn.json.
"""


def invoke_main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    exit_if_help(argv, USAGE)
    main(*compose_config(argv))
