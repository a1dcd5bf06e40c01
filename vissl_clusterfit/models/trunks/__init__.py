from vissl_clusterfit.models.trunks import vcf_resnet  # noqa: F401
