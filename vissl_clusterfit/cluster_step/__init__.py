"""The cluster step as a library: parameters read once from the config, N_pre loading,
sharded feature extraction, the two k-means routes and the label files. The hooks
(``vissl_clusterfit.hooks``) and the ``vcf_cluster`` engine are thin adapters to it.

    config.VCF.CLUSTERFIT --ClusterFitParams.from_config--> run_cluster_step
        -> npre.build_npre_trunk -> extraction.extract_features
        -> routes.cluster_on_rank0 | routes.cluster_sharded  (clustering/)
        -> data.cluster_labels.write_label_files -> <OUTPUT_DIR>/<NAME>_labels.npy
    data.label_sources (vcf_cluster_labels) -> DATA.TRAIN targets -> N_cf's loss
"""

from vissl_clusterfit.cluster_step.deepcluster import recluster
from vissl_clusterfit.cluster_step.deepcluster_params import DeepClusterParams
from vissl_clusterfit.cluster_step.npre_spec import NpreSpec
from vissl_clusterfit.cluster_step.params import ClusterFitParams
from vissl_clusterfit.cluster_step.step import run_cluster_step


__all__ = [
    "ClusterFitParams",
    "DeepClusterParams",
    "NpreSpec",
    "recluster",
    "run_cluster_step",
]
