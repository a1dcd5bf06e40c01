"""vissl_clusterfit: ClusterFit, DeepCluster and DeeperCluster for VISSL.

Importing the package applies the compat patches (``vissl_clusterfit.compat.patches``) and
registers every component with VISSL under ``vcf_``-prefixed names. Importing it twice is
harmless: Python caches the modules and each patch runs once.
"""

from vissl_clusterfit.compat.patches import apply_all


apply_all()

from vissl_clusterfit import data, engines, hooks, losses, models  # noqa: E402,F401


__version__ = "0.1.0"
