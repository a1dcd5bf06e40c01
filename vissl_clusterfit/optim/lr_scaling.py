"""The learning rate of a run scaled by its global batch, with the warm-up kept.

Goyal et al. 2017 ("Accurate, Large Minibatch SGD"), Sec. 2.1: when the minibatch is
multiplied by k, multiply the learning rate by k; Sec. 2.2: reach it by a gradual
(linear) warm-up, since a large learning rate from the first iterations diverges.
VISSL 0.1.6 implements the first rule (``OPTIMIZER.param_schedulers.lr.auto_lr_scaling``:
lr = base_value x BATCHSIZE_PER_REPLICA x NUM_PROC_PER_NODE x NUM_NODES /
base_lr_batch_size, ``vissl.utils.hydra_config.infer_learning_rate``), but its
``resolve_linear_schedule`` then restarts every linear warm-up of a composite schedule
at the learning rate of ONE NODE's batch and deletes the warm-up when that is not below
the peak, i.e. always on one node: Goyal's warm-up across nodes only. One GPU at a
learning rate meant for a large global batch is exactly the case that needs it (the
Fashion-MNIST ``*_gpu`` N_pre: lr 0.4 at 128 images on one H200, loss 1.47 -> 9.94
within 5 iterations), so the plugin's ``*_gpu`` configs compute the scaled values with
the ``${vcf_linear_lr:...}`` resolver (registered in ``vissl_clusterfit.config``) and
keep ``auto_scale: False``; ``tests/optim/test_lr_scaling.py`` shows VISSL dropping
the warm-up.

In YAML, ``${vcf_linear_lr:<lr at base_lr_batch_size images>}``: the resolver reads the
keys VISSL's rule reads, from the config being composed (``vissl_clusterfit_defaults/
warmup_cosine.yaml``, ``clusterfit/ncf_rotnet_resnet50_in1k_gpu.yaml``).
"""

from typing import Any

from omegaconf import OmegaConf


RESOLVER = "vcf_linear_lr"
BASE_BATCH_KEY = "OPTIMIZER.param_schedulers.lr.auto_lr_scaling.base_lr_batch_size"
_SIZE_KEYS = (
    "DATA.TRAIN.BATCHSIZE_PER_REPLICA",
    "DISTRIBUTED.NUM_PROC_PER_NODE",
    "DISTRIBUTED.NUM_NODES",
)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"config.{key}={value!r}: the learning rate is scaled by the global batch "
            "(vissl_clusterfit/optim/lr_scaling.py); set it to a positive integer"
        )
    return value


def linear_scaled_lr(
    value: float,
    base_batch: int,
    batch_per_replica: int,
    procs_per_node: int,
    nodes: int,
) -> float:
    """``value`` (the learning rate at ``base_batch`` images) x global batch /
    ``base_batch``, global batch = batch per process x processes per node x nodes."""
    sizes = (batch_per_replica, procs_per_node, nodes)
    for key, size in zip(_SIZE_KEYS, sizes):
        _positive_int(key, size)
    _positive_int(BASE_BATCH_KEY, base_batch)
    return round(
        float(value) * batch_per_replica * procs_per_node * nodes / base_batch, 10
    )


def resolve_linear_lr(value: float, _root_: Any) -> float:
    """The ``${vcf_linear_lr:value}`` resolver: ``linear_scaled_lr`` with the sizes of
    the config being composed (``_root_``: OmegaConf passes the root node)."""
    if "config" not in _root_:
        raise ValueError(
            f"${{{RESOLVER}:{value}}} is used outside a VISSL config (no config: root)"
        )
    cfg = _root_.config
    sizes = [OmegaConf.select(cfg, key) for key in (BASE_BATCH_KEY, *_SIZE_KEYS)]
    return linear_scaled_lr(value, *sizes)
