"""Benchmarks of vissl_clusterfit: one script per question, run from the repository root
as modules, e.g. ``.venv/bin/python -m benchmarks.cluster_step_speed --quick``.

Scripts (each writes ``benchmarks/results/<name>.{json,md}``; see benchmarks/README.md):

- ``checkpoint_load``: VISSL's init-weights load path, upstream vs patched
  ``broadcast_object``;
- ``cluster_step_speed``: the ClusterFit cluster step, ours vs VISSL's route vs the floor;
- ``cluster_step_scale``: the cluster step from shards on disk at ImageNet size (CPU, or
  the GPU with --backend torch --device cuda), time and peak memory per phase, W = 1 and 2;
- ``clusterfit_reproduction``: N_cf vs N_pre layer by layer (the paper's claim at this
  machine's scale), with ``probes`` on every checkpoint;
- ``deepcluster_vs_random``: DeepCluster / DeeperCluster vs a random network;
- ``kmeans_gpu``: the torch k-means route on one GPU at N=1.28M, D=2048, K=16,000;
- ``probes``: k-NN and few-label probes of one checkpoint;
- ``training_throughput``: images per second of N_pre and N_cf training.
- ``train_loop``: where VISSL's train step loses time against a plain PyTorch step
  (same model, batch, precision; per-step extras one at a time; pieces in ``loop/``).

Shared pieces:

- ``common``: paths, machine description, git commit, the exact command, result files;
- ``measure``: timers and peak memory;
- ``report``: tables, statistics over seeds (paired differences with t intervals) and
  plots;
- ``plugin``: the one place the benchmarks import vissl_clusterfit's public names (and
  ``LAYERS``), so a package refactor is retargeted there.

Importing this package imports nothing heavy: ``common``, ``measure`` and ``report`` need
only the standard library at import time; ``plugin`` imports vissl_clusterfit.
"""
