"""``python -m vissl_clusterfit.launch config=<name> [config.X=Y ...] [engine_name=...]``:
one VISSL run (train, extract_features, vcf_cluster, ...) with the plugin's hooks, as
VISSL's ``tools/run_distributed_engines.py`` takes it. Runs from an installed copy, without
the repository around it."""

from vissl_clusterfit.launch.launcher import invoke_main


if __name__ == "__main__":
    invoke_main()
