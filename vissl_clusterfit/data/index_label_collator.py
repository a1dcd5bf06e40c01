"""``vcf_index_label_collator``: targets that carry both the sample index and the label.

The distillation baseline (ClusterFit Sec. 4, "Baselines") needs, per sample, N_pre's
cached logits (looked up by the sample's position in the dataset) and the sample's
(noisy) pre-training label. VISSL passes the loss only ``sample["label"]``, and its
train step accepts one target tensor per batch (one data source, one label source), so
this collator packs both into one ``(B, 2)`` long tensor::

    label[:, 0] = data_idx   (GenericSSLDataset's position of the sample: the row of
                              <NAME>_teacher_logits.npy, which the cluster step computes
                              on the same split with the same DATA_LIMIT)
    label[:, 1] = label      (the split's label source, e.g. vcf_noisy:vcf_fashion_mnist)

``vcf_distillation_loss`` unpacks it. Accuracy meters cannot read this target: use
``METERS.names: []`` with it.

Config: ``DATA.TRAIN.COLLATE_FUNCTION: vcf_index_label_collator`` and one entry in
``LABEL_SOURCES``.
"""

from typing import Any, Dict, List

import torch
from torch.utils.data.dataloader import default_collate
from vissl.data.collators import register_collator


COLLATOR_NAME = "vcf_index_label_collator"
INDEX_COLUMN, LABEL_COLUMN = 0, 1


@register_collator(COLLATOR_NAME)
def index_label_collator(batch: List[Dict[str, Any]]) -> Dict[str, Any]:
    if not batch or "label" not in batch[0]:
        raise ValueError(
            f"{COLLATOR_NAME} needs samples with labels: set LABEL_SOURCES"
        )
    if len(batch[0]["label"]) != 1 or len(batch[0]["data"]) != 1:
        raise ValueError(
            f"{COLLATOR_NAME} needs one data source and one label source, got "
            f"{len(batch[0]['data'])} and {len(batch[0]['label'])}"
        )
    out = default_collate(batch)
    index = torch.as_tensor(out["data_idx"][0]).long().reshape(-1)
    label = torch.as_tensor(out["label"][0]).long().reshape(-1)
    out["label"] = [torch.stack([index, label], dim=1)]
    return out
