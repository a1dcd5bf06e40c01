from vissl_clusterfit.models import heads, trunks  # noqa: F401
