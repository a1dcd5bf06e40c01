"""Experiments over the plugin, each a sub-package with its driver, settings and report:
``pipeline`` (ClusterFit end to end, Yan et al. 2020 Sec. 3.1 and 4.2) and ``control``
(the control experiment of Sec. 3.2 / Fig. 3). ``cli`` is the one ``prefix.key=value``
parser both use; ``checkpoints`` reads and writes VISSL's checkpoint layout. Each stage
is started as ``python -m vissl_clusterfit.launch`` in a subprocess."""
