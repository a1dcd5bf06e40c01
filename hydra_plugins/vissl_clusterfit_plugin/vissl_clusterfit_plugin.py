"""Hydra search path for vissl_clusterfit's configs.

VISSL's own plugin PREPENDS ``pkg://configs``; we APPEND ours so that VISSL's config names
always win and ours live under ``config=vissl_clusterfit/...`` without shadowing anything.
"""

import logging

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class VisslClusterFitSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(
            provider="vissl_clusterfit", path="pkg://vissl_clusterfit.configs"
        )
        # Composing one of our configs means the run will need our registered data
        # sources, trunks, heads and losses: importing here makes them available to
        # VISSL's unmodified tools/run_distributed_engines.py (single process) too.
        try:
            import vissl_clusterfit  # noqa: F401
        except Exception as e:  # pragma: no cover - reported, never fatal to compose
            logging.warning(f"vissl_clusterfit could not be imported: {e}")
