"""The pieces of ``benchmarks.imagenet_cost`` (the script is the entry point):

- ``model``: the time and memory models of the two k-means backends and their fits
  (pure: nothing is measured);
- ``extrapolation``: the fits of the measured grid, the checks of the fits and the rows of
  the extrapolated tables (pure);
- ``measure_grid``: the measurements on this machine (k-means grid, ResNet-50 forward,
  JPEG decode) and the thread settings;
- ``render``: the tables and the notes of the results files.

The pure API (``model`` and ``extrapolation``) is re-exported here.
"""

from benchmarks.cost.extrapolation import (
    GPU_IMG_PER_S,
    GPU_SOURCE,
    extraction_rows,
    extrapolate,
    fit_backends,
    fit_memory_backends,
    holdout_rows,
    quiet_run_rows,
)
from benchmarks.cost.model import (
    ASSIGN_BATCH,
    BLOCK_ELEMENTS,
    FAISS_BLAS_TILE,
    IMAGENET_TRAIN_IMAGES,
    MEMORY_TERMS,
    TIME_TERMS,
    GiB,
    LinearFit,
    Scale,
    allreduce_s,
    faiss_extra_bytes,
    faiss_gather_peak_bytes,
    faiss_kmeans_s,
    fit_memory,
    fit_nonneg_relative,
    fit_time,
    fit_time_nkd_only,
    lloyd_extra_bytes,
    lloyd_kmeans_s,
    time_features,
)
