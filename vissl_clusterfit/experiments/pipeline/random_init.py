"""The random-init baseline (Yan et al. 2020, Tables 2-3): an untrained trunk of N_pre's
architecture saved as a checkpoint, probed like the trained models."""

import os
from typing import List, Optional

from vissl_clusterfit.config import compose_config
from vissl_clusterfit.experiments.checkpoints import save_untrained_trunk
from vissl_clusterfit.experiments.pipeline.stages import StageRunner


def random_init_checkpoint(
    runner: StageRunner,
    extra_overrides: Optional[List[str]] = None,
    name: str = "random_init",
) -> str:
    """``<out>/<name>/random_init.torch`` with its train_config.yaml
    (``checkpoints.save_untrained_trunk``), made once. ``extra_overrides`` change the
    architecture (e.g. a Sobel stem) to match the models it is compared with; give each
    variant its own ``name``."""
    path = os.path.join(runner.out, name, "random_init.torch")
    if os.path.isfile(path):
        return path
    _, cfg = compose_config(
        [
            f"config={runner.config_name('npre', 'rotnet')}",
            "config.CHECKPOINT.DIR=/tmp",
            *(extra_overrides or []),
        ],
        dump_config=False,
    )
    return save_untrained_trunk(path, cfg.MODEL, runner.settings.seed)
