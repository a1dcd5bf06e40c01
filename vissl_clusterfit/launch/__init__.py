"""The launch path: one VISSL run with the plugin's hooks.

``python -m vissl_clusterfit.launch config=... engine_name=...`` (console script
``vissl-clusterfit``) is what ``tools/run_distributed_engines.py`` runs and what the
experiment drivers start each stage with; ``launcher`` (local / multi-process),
``slurm`` (submitit) and ``knn`` (VISSL's k-NN evaluation with our hooks).
"""
