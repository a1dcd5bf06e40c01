"""``engine_name=vcf_cluster``: only the extract-and-cluster step, for users who cluster
once and train many N_cf (or inspect the clusters first). Same config as an N_cf run;
writes the label files to ``VCF.CLUSTERFIT.OUTPUT_DIR`` (default
``<CHECKPOINT.DIR>/clusterfit``) and, with ``VCF.CLUSTERFIT.ASSIGN_TEST=true``, the test
split assigned to the train centroids. Runs on VISSL's launcher like extract_features.
"""

import logging
import os
from typing import Any, Callable, List

from vissl.engines.engine_registry import Engine, register_engine
from vissl.utils.env import set_env_vars
from vissl.utils.logger import setup_logging, shutdown_logging

from vissl_clusterfit.cluster_step import ClusterFitParams, run_cluster_step
from vissl_clusterfit.compat.patches import shutdown_process_group


@register_engine("vcf_cluster")
class ClusterEngine(Engine):
    def run_engine(
        self,
        cfg: Any,
        dist_run_id: str,
        checkpoint_path: str,
        checkpoint_folder: str,
        local_rank: int = 0,
        node_id: int = 0,
        hook_generator: Callable[[Any], List[Any]] = None,
    ) -> None:
        from vissl.trainer import SelfSupervisionTrainer

        set_env_vars(local_rank, node_id, cfg)
        setup_logging(
            __name__, output_dir=checkpoint_folder, rank=int(os.environ["RANK"])
        )
        params = ClusterFitParams.from_config(cfg)
        # VISSL's trainer sets up torch.distributed and the device exactly as for training
        trainer = SelfSupervisionTrainer(cfg, dist_run_id)
        meta = run_cluster_step(cfg, params, device=trainer.task.device)
        logging.info(f"[vcf] cluster label files: {meta['files']}")
        # join gloo's worker threads before interpreter shutdown (exit 134 otherwise;
        # success path only: destroying a group other ranks still use can hang)
        shutdown_process_group()
        shutdown_logging()
