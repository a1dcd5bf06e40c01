"""Entry point logic of tools/run_distributed_engines.py: VISSL's own launcher
(``launch_distributed``: 1..N processes, N nodes; SLURM through VISSL's
``launch_distributed_on_slurm``) with the plugin's hook generator.

Kept in the package (not in tools/) so that spawned workers can import it.
"""

import sys
from typing import Any, List

from vissl_clusterfit.config import compose_config  # noqa: F401  (re-exported)


def main(args: Any, cfg: Any) -> None:
    from vissl.utils.distributed_launcher import (
        launch_distributed,
        launch_distributed_on_slurm,
    )

    import vissl_clusterfit  # noqa: F401  registers the plugin's components
    from vissl_clusterfit.hooks import hook_generator

    if cfg.SLURM.USE_SLURM:
        assert args.engine_name == "train", "SLURM launch supports the train engine"
        launch_distributed_on_slurm(engine_name=args.engine_name, cfg=cfg)
    else:
        launch_distributed(
            cfg,
            node_id=args.node_id,
            engine_name=args.engine_name,
            hook_generator=hook_generator,
        )


def hydra_main(overrides: List[str]) -> None:
    args, config = compose_config(overrides)
    main(args, config)


def invoke_main() -> None:
    hydra_main(sys.argv[1:])
