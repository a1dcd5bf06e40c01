"""Model heads; each registers with VISSL's head registry on import."""

from vissl_clusterfit.models.heads import vcf_hierarchical_head  # noqa: F401
