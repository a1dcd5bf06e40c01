"""Losses; each registers with VISSL (classy_vision's loss registry) on import."""

from vissl_clusterfit.losses import (  # noqa: F401
    vcf_distillation_loss,
    vcf_hierarchical_loss,
)
