#!/usr/bin/env python3
"""Run a VISSL engine (train, extract_features, vcf_cluster) with the plugin's hooks
(the same as ``python -m vissl_clusterfit.launch`` and the console script
``vissl-clusterfit``).

Same arguments as VISSL's tools/run_distributed_engines.py:

    python tools/run_distributed_engines.py \
        config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu \
        config.CHECKPOINT.DIR=./runs/rotnet config.DISTRIBUTED.NUM_PROC_PER_NODE=2

    # only the cluster label files, for clustering once and training many times
    python tools/run_distributed_engines.py engine_name=vcf_cluster \
        config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_cpu \
        config.VCF.CLUSTERFIT.NPRE_CHECKPOINT=./runs/rotnet/model_final_checkpoint_phase9.torch
"""
from vissl_clusterfit.launch.launcher import invoke_main


if __name__ == "__main__":
    invoke_main()
