"""Entry point logic of ``python -m vissl_clusterfit.launch`` (console script
``vissl-clusterfit``; tools/run_distributed_engines.py runs it too): VISSL's own launcher
(``launch_distributed``: 1..N processes, N nodes; SLURM through
``vissl_clusterfit.launch.slurm``) with the plugin's hook generator.

Kept in the package (not in tools/) so that spawned workers can import it.
"""

import sys
from typing import Any, List, Optional

from vissl_clusterfit.config import compose_config


def main(args: Any, cfg: Any) -> None:
    """Run ``args.engine_name`` (train, extract_features, vcf_cluster...) with the
    plugin's hooks, on this node (``args.node_id``) or, with ``SLURM.USE_SLURM``, on
    ``DISTRIBUTED.NUM_NODES`` SLURM nodes."""
    from vissl.utils.distributed_launcher import launch_distributed

    import vissl_clusterfit  # noqa: F401  registers the plugin's components
    from vissl_clusterfit.compat.patches import shutdown_process_group
    from vissl_clusterfit.hooks import hook_generator
    from vissl_clusterfit.launch.slurm import launch_on_slurm

    if cfg.SLURM.USE_SLURM:
        launch_on_slurm(cfg, engine_name=args.engine_name)
        return
    try:
        launch_distributed(
            cfg,
            node_id=args.node_id,
            engine_name=args.engine_name,
            hook_generator=hook_generator,
        )
    finally:
        # with one process VISSL runs the engine in this process: its gloo group must
        # be gone before the interpreter finalizes (see shutdown_process_group)
        shutdown_process_group()


USAGE = """usage: vissl-clusterfit config=<name> [config.<KEY>=<value> ...] [engine_name=<engine>]
       (also: python -m vissl_clusterfit.launch ...)

One VISSL run with the plugin's hooks, with the arguments of VISSL's
tools/run_distributed_engines.py. <name> is a config under configs/config/, e.g.
vissl_clusterfit/pretrain/rotnet_fmnist_cpu; engine_name: train (default),
extract_features, vcf_cluster (only the cluster label files).
"""


def exit_if_help(argv: List[str], usage: str) -> None:
    """Print ``usage`` and exit 0 when ``argv`` asks for help (-h / --help): the
    entry points take Hydra-style overrides, which have no help of their own."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage, end="")
        sys.exit(0)


def hydra_main(overrides: List[str]) -> None:
    args, config = compose_config(overrides)
    main(args, config)


def invoke_main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    exit_if_help(argv, USAGE)
    hydra_main(argv)
