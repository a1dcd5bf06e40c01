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
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# the stages' subprocesses import this checkout (before any installed copy)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
if [ -z "${VCF_GIT_COMMIT:-}" ] && git rev-parse HEAD >/dev/null 2>&1; then
  export VCF_GIT_COMMIT="$(git rev-parse HEAD)"
fi
echo "[gpu_check $(date +%H:%M:%S)] $PYTHON $("$PYTHON" --version 2>&1), in $PWD"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PYTHON" -m benchmarks.gpu_check "$@"
