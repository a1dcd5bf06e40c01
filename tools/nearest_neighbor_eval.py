#!/usr/bin/env python3
"""k-NN evaluation with VISSL's benchmark/nearest_neighbor configs (the VISSL 0.1.6 wheel
has the configs but not VISSL's tools/nearest_neighbor_test.py; named otherwise here so
pytest does not collect it). The same as the console script ``vissl-clusterfit-knn``;
the logic is ``vissl_clusterfit/launch/knn.py``.

    python tools/nearest_neighbor_eval.py \
        config=benchmark/nearest_neighbor/eval_resnet_8gpu_in1k_kNN \
        +vissl_clusterfit_defaults=knn_res5 \
        config.MODEL.WEIGHTS_INIT.PARAMS_FILE=./runs/in1k/ncf_rotnet/checkpoint.torch \
        config.CHECKPOINT.DIR=./runs/in1k/knn_ncf_rotnet
"""

from vissl_clusterfit.launch.knn import invoke_main


if __name__ == "__main__":
    invoke_main()
