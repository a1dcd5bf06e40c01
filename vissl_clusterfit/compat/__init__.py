"""Compatibility of VISSL 0.1.6 with today's stack, in one room.

- ``patches``: the table of documented monkeypatches, applied once at import by
  ``vissl_clusterfit/__init__.py`` (each with a test in ``tests/compat/``).
- ``run_lifecycle``: the patches that wrap a VISSL run (checkpoint saving, process-group
  shutdown).
- ``crash_safe_checkpoints``: checkpoints written so that a killed run leaves either the
  old or the new complete file.
- ``patching``: ``once``, which applies a patch once per process.
- ``vissl_subset``: not a patch, the one adapter over VISSL's private DATA_LIMIT subset
  of a ``GenericSSLDataset`` (which source index each position serves).
"""
