from vissl_clusterfit.models.trunks import vcf_resnet, vcf_sobel_resnet  # noqa: F401
