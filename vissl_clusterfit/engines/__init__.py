from vissl_clusterfit.engines import cluster_engine  # noqa: F401
