"""Multi-node runs on SLURM (through submitit) with the plugin's hooks and engines.

VISSL's ``launch_distributed_on_slurm`` submits its ``_ResumableSlurmJob``, which calls
``launch_distributed`` with VISSL's ``default_hook_generator``: on that path the
ClusterFit and DeepCluster hooks are never added (an N_cf run trains on no cluster
labels, DeepCluster never re-clusters), and only the ``train`` engine is accepted.
``launch_on_slurm`` submits ``VcfSlurmJob`` instead: the same allocation (one task per
node, ``DISTRIBUTED.NUM_PROC_PER_NODE`` GPUs per node) and the same rendezvous, with
``vissl_clusterfit.hooks.hook_generator``; ``vcf_cluster`` runs there too.

Config params (VISSL's ``SLURM`` section): ``USE_SLURM``, ``PARTITION`` (required),
``LOG_FOLDER``, ``NAME``, ``COMMENT``, ``TIME_HOURS``, ``TIME_MINUTES``, ``CONSTRAINT``,
``MEM_GB``, ``PORT_ID`` (rendezvous port on the first node), ``NUM_CPU_PER_PROC``,
``ADDITIONAL_PARAMETERS``; ``DISTRIBUTED.NUM_NODES`` and ``NUM_PROC_PER_NODE``.
"""

from typing import Any, Tuple


SLURM_ENGINES: Tuple[str, ...] = ("train", "vcf_cluster")


class VcfSlurmJob:
    """What submitit runs on every node: VISSL's ``launch_distributed`` with the
    plugin's hook generator. On preemption or time-out submitit calls ``checkpoint``
    and requeues the job, which resumes from the last checkpoint that loads.

    Pickled by submitit: a module-level class whose unpickling imports the plugin.
    """

    def __init__(self, engine_name: str, config: Any) -> None:
        self.engine_name = engine_name
        self.config = config

    def __call__(self) -> None:
        import submitit
        from vissl.utils.distributed_launcher import launch_distributed

        import vissl_clusterfit  # noqa: F401  registers engines, hooks; applies compat
        from vissl_clusterfit.compat.patches import shutdown_process_group
        from vissl_clusterfit.hooks import hook_generator

        environment = submitit.JobEnvironment()
        master = environment.hostnames[0]
        # every node rendezvous on the first node of the allocation (as VISSL's job)
        self.config.DISTRIBUTED.INIT_METHOD = "tcp"
        self.config.DISTRIBUTED.RUN_ID = f"{master}:{self.config.SLURM.PORT_ID}"
        try:
            launch_distributed(
                cfg=self.config,
                node_id=environment.global_rank,
                engine_name=self.engine_name,
                hook_generator=hook_generator,
            )
        finally:
            shutdown_process_group()

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(
            VcfSlurmJob(self.engine_name, self.config)
        )


def launch_on_slurm(cfg: Any, engine_name: str) -> Any:
    """Submit ``engine_name`` on ``DISTRIBUTED.NUM_NODES`` SLURM nodes; returns the
    submitit job. Same executor settings as VISSL's ``launch_distributed_on_slurm``
    (no GPU request when ``MACHINE.DEVICE`` is ``cpu``)."""
    if engine_name not in SLURM_ENGINES:
        raise ValueError(
            f"engine_name={engine_name} cannot run on SLURM here: use one of "
            f"{', '.join(SLURM_ENGINES)}, or config.SLURM.USE_SLURM=false"
        )
    if not cfg.SLURM.PARTITION:
        raise ValueError(
            "config.SLURM.USE_SLURM=true needs config.SLURM.PARTITION=<partition>"
        )
    import submitit
    from vissl.utils.io import makedir

    log_folder = cfg.SLURM.LOG_FOLDER
    makedir(log_folder)
    executor = submitit.AutoExecutor(folder=log_folder)
    procs = cfg.DISTRIBUTED.NUM_PROC_PER_NODE
    params = dict(
        name=cfg.SLURM.NAME,
        slurm_comment=cfg.SLURM.COMMENT,
        slurm_partition=cfg.SLURM.PARTITION,
        slurm_constraint=cfg.SLURM.CONSTRAINT,
        timeout_min=cfg.SLURM.TIME_HOURS * 60 + cfg.SLURM.TIME_MINUTES,
        nodes=cfg.DISTRIBUTED.NUM_NODES,
        cpus_per_task=cfg.SLURM.NUM_CPU_PER_PROC * procs,
        tasks_per_node=1,
        mem_gb=cfg.SLURM.MEM_GB,
        slurm_additional_parameters=cfg.SLURM.ADDITIONAL_PARAMETERS,
    )
    if cfg.MACHINE.DEVICE == "gpu":
        params["gpus_per_node"] = procs
    executor.update_parameters(**params)
    job = executor.submit(VcfSlurmJob(engine_name, cfg))
    print(f"SUBMITTED: {job.job_id}")
    return job
