#!/usr/bin/env bash
# The README's demo: install (idempotent), then ClusterFit end to end on a Fashion-MNIST
# subset (RotNet N_pre -> k-means K=50 -> N_cf -> layer-wise linear probes, plus a
# random-init baseline). About 12 minutes on 2 idle CPU cores (measured), plus the first install. Extra arguments are passed on
# (pipeline.<key>=<value>, config.<KEY>=<value>).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec .venv/bin/python tools/clusterfit_pipeline.py pipeline.output_dir=./runs/demo \
  pipeline.with_random=true "$@"
