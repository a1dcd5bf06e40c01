#!/usr/bin/env python3
"""k-NN evaluation with VISSL's benchmark/nearest_neighbor configs (the VISSL 0.1.6 wheel
has the configs but not the tool): VISSL's extract_features engine, then the weighted
k-NN vote; results in <CHECKPOINT.DIR>/knn.json. See vissl_clusterfit/launch/knn.py.

    python tools/nearest_neighbor_test.py \
        config=benchmark/nearest_neighbor/eval_resnet_8gpu_in1k_kNN \
        +vissl_clusterfit_defaults=knn_res5 \
        config.MODEL.WEIGHTS_INIT.PARAMS_FILE=./runs/in1k/ncf_rotnet/checkpoint.torch \
        config.CHECKPOINT.DIR=./runs/in1k/knn_ncf_rotnet
"""
import sys
from typing import Any, List

from vissl_clusterfit.config import compose_config


def main(args: Any, cfg: Any) -> None:
    from vissl_clusterfit.launch.knn import main as knn_main

    knn_main(args, cfg)


def hydra_main(overrides: List[str]) -> None:
    args, config = compose_config(overrides)
    main(args, config)


def invoke_main() -> None:
    hydra_main(sys.argv[1:])


if __name__ == "__main__":
    invoke_main()
