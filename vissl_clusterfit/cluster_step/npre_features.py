"""The networks the cluster step extracts from: N_pre's trunks at their layers
(ClusterFit, Yan et al. 2020, Sec. 3.1; several for multi-task ClusterFit), N_pre's
head outputs for the distillation baseline (Sec. 4), and D_cf's pre-training labels
for the label-using baselines. Each network is freed as soon as its features exist.
"""

import copy
import gc
from typing import Any, List, Optional

import numpy as np
import torch

from vissl_clusterfit.cluster_step import (
    extraction,
    extraction_trunks,
    npre,
    runtime_checks,
)
from vissl_clusterfit.cluster_step.params import ClusterFitParams


def npre_trunks(params: ClusterFitParams) -> List[extraction_trunks.TrunkLayer]:
    return [
        (
            npre.build_npre_trunk(
                spec.checkpoint,
                spec.config,
                list(spec.overrides),
                spec.weights_init,
                spec.weights_key,
                spec.checkpoint_key,
            ),
            spec.feature_layer,
            spec.pooling,
        )
        for spec in params.npre
    ]


def extract_npre_features(
    params: ClusterFitParams, dataset: Any, device: torch.device, **kwargs: Any
) -> Optional[np.ndarray]:
    trunks = npre_trunks(params)
    for i, (trunk, layer, _) in enumerate(trunks):
        key = "FEATURE_LAYER" if i == 0 else f"EXTRA_NPRE[{i - 1}].FEATURE_LAYER"
        runtime_checks.check_layer(trunk, layer, f"config.VCF.CLUSTERFIT.{key}")
    feats = extraction.extract_features(
        trunks, dataset, params.batch_size, device, params.loader, **kwargs
    )
    del trunks  # free N_pre before N_cf trains
    gc.collect()
    return feats


def teacher_logits(
    params: ClusterFitParams, dataset: Any, device: torch.device
) -> Optional[np.ndarray]:
    """N_pre's head outputs on D_cf (distillation baseline, ClusterFit Sec. 4), on the
    deterministic extraction transforms."""
    spec = params.npre[0]
    model = npre.build_npre_model(spec.checkpoint, spec.config, list(spec.overrides))
    try:
        logits = extraction.extract_features(
            [(model, "logits", "flatten")], dataset, params.batch_size, device
        )
    except RuntimeError as e:
        raise ValueError(
            f"N_pre's heads cannot run on whole images ({e}): distillation needs a "
            "single-view classification head"
        ) from None
    del model
    gc.collect()
    return logits


def pretrain_labels(cfg: Any, params: ClusterFitParams, length: int) -> np.ndarray:
    """D_cf's pre-training labels (``PRETRAIN_LABELS``, noise included), one per
    position of the extraction dataset, for the label-using baselines."""
    from vissl.data import build_dataset

    from vissl_clusterfit.data.label_sources import served_labels

    lcfg = copy.deepcopy(cfg)
    lcfg.DATA.TRAIN.LABEL_SOURCES = list(params.pretrain_label_sources)
    lcfg.DATA.TRAIN.LABEL_PATHS = list(params.pretrain_label_paths)
    lcfg.DATA.TRAIN.LABEL_TYPE = "standard"
    labels = served_labels(build_dataset(lcfg, "TRAIN"))
    if len(labels) != length or labels.min() < 0:
        raise ValueError(
            f"config.VCF.CLUSTERFIT.PRETRAIN_LABELS gave {len(labels)} labels in "
            f"[{labels.min()}, {labels.max()}] for {length} images of DATA.TRAIN: it "
            "must label every image of D_cf"
        )
    return labels
