#!/usr/bin/env bash
# The project's GPU check (issue 21): the Fashion-MNIST *_gpu pipeline, the
# resnet50_in1k(_1gpu) preset on a synthetic JPEG folder through every stage, and the
# plain-PyTorch ceilings, measured side by side in one run; each section with its own
# timeout; results in benchmarks/results/gpu_check.{json,md}. Under 6 minutes on one
# H200. Without a GPU it says so, checks what a CPU can at tiny sizes and exits 0.
#
#   PYTHON=python3 bash scripts/gpu_check.sh [benchmarks.gpu_check options]
#   e.g. --budget-s 300 --train-per-class 300 --timeouts in1k=200
#
# The interpreter: $PYTHON, else .venv/bin/python, else python3. Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/run_env.sh gpu_check
exec "$PYTHON" -m benchmarks.gpu_check "$@"
