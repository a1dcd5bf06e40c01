#!/usr/bin/env bash
# The next GPU session's one device call (issues 21 and 22), about 9 minutes on one H200,
# inside the device tool's 600 s per call. From the repository root of the device machine,
# with .whl/ and .fmnist/ carried (../shared/GPU.md):
#   VCF_GIT_COMMIT=<hash> bash scripts/gpu_session.sh "$OUT"      # timeout_s 590
#   bash scripts/gpu_session.sh /tmp/gpu_session --dry             # the same on the CPU, tiny
# In order of value, each held to a hard timeout so one cannot eat the next one's time:
#   1. scripts/gpu_loop_check.sh: where VISSL's train step loses time (issue 21 item 3),
#      OUTDIR/train_loop_h200_{bf16_cl,fp32}.*  (~3 min, killed at 250 s)
#   2. benchmarks.cluster_step_scale: the whole cluster step from float16 shards on the GPU
#      at the paper's size, N = 1,281,167, D = 2048, K = 16,000 (issue 22; settings fixed in
#      benchmarks/README.md before running), OUTDIR/cluster_step_scale_gpu.*  (killed at 290 s)
# A killed part keeps what it wrote (both rewrite their results after every part).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_session.sh OUTDIR [--dry]}"
DRY="${2:-}"
mkdir -p "$OUT"
say() { echo "[gpu_session $(date +%H:%M:%S)] $*"; }
# shellcheck source=/dev/null
source scripts/gpu_env.sh
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python

say "1/2 gpu_loop_check"
if [ "$DRY" = "--dry" ]; then
  timeout 400 bash scripts/gpu_loop_check.sh "$OUT" --dry
else
  timeout 250 env PYTHON="$PY" bash scripts/gpu_loop_check.sh "$OUT"
fi
say "gpu_loop_check exit $?"

say "2/2 cluster_step_scale"
if [ "$DRY" = "--dry" ]; then
  SIZE=(--quick --backend torch --device cpu --worlds 1 --max-s 120
        --name cluster_step_scale_cpu_dry)
else
  SIZE=(--backend torch --device cuda --n 1281167 --k 16000 --rows-per-centroid 64
        --niter 20 --pca-dim 256 --dtype float16 --worlds 1 --max-s 240
        --name cluster_step_scale_gpu)
fi
timeout 290 "$PY" -m benchmarks.cluster_step_scale "${SIZE[@]}" --out "$OUT" \
  --workdir /tmp/css_work
say "cluster_step_scale exit $?"
ls -la "$OUT"
