"""The pieces of ``benchmarks.cluster_step_speed`` (the script is the entry point):

- ``specs``: feature specs (trunk, layer, pooling), N_pre checkpoints, the configs of ours
  and of VISSL's engine;
- ``ours``: the floor, our cluster step (phase times from its meta file), k-means alone;
- ``vissl_route``: VISSL's extract_features engine and its cluster_features tool;
- ``summary``: one row per (N, spec, K), the tables, notes and results files.
"""
