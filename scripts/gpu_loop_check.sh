#!/usr/bin/env bash
# Where VISSL's train step loses time (issue 21, item 3): benchmarks/train_loop.py at
# batch 256 in bf16 + channels_last (every mode, and the loaders on a synthetic JPEG
# folder) and in fp32 (five modes), about 3 minutes on one H200. From the repository
# root of the device machine:
#   source scripts/gpu_env.sh && PYTHON=python3 bash scripts/gpu_loop_check.sh "$OUT"
#   bash scripts/gpu_loop_check.sh /tmp/loop --dry   # the same on the CPU, tiny sizes
# Writes OUTDIR/train_loop_h200_{bf16_cl,fp32}.{json,md} (--dry: train_loop_cpu_dry_*),
# rewritten after every mode, and each run's full log (VISSL's included) next to them;
# only the benchmark's own lines are printed. Each run is held to its --max-s (modes
# that would start later are skipped) and killed at a hard timeout; a failed or killed
# run does not stop the next. Scratch (the JPEG folder, VISSL's logs): $VCF_LOOP_WORK,
# default /tmp/vcf_loop_check, never under OUTDIR (its files are copied back).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_loop_check.sh OUTDIR [--dry]}"
DRY=""
[ "${2:-}" = "--dry" ] && DRY=1
source scripts/run_env.sh gpu_loop_check
WORK="${VCF_LOOP_WORK:-/tmp/vcf_loop_check}"
mkdir -p "$OUT" "$WORK"
say() { echo "[gpu_loop_check $(date +%H:%M:%S)] $*"; }
t0=$(date +%s)

# Sizes (the estimate: benchmarks/README.md, "Where VISSL's step loses time"). On the
# H200 of issue 21 a bf16 step of 256 takes 55 ms plain and at worst ~134 ms in VISSL's
# loop (~256 ms with a loader at 1,000 img/s); fp32 about 2.4x that. bf16: 11 modes x
# 37 steps ~ 55 s + ~3.5 s a mode (build, autotune, profile, checkpoint) + loaders ~ 100 s;
# fp32: 5 modes x 32 steps ~ 52 s; + ~15 s of imports each, ~3 s for the folder: ~3 min.
# --max-s cuts what runs past it (the least needed modes come last).
if [ -n "$DRY" ]; then
  NAME=train_loop_cpu_dry; SIZE=(--dry --device cpu); MAX_BF16=150; MAX_FP32=150
  FOLDER=(--classes 2 --train 16 --val 1 --size 64)
else
  NAME=train_loop_h200; SIZE=(--batch 256); MAX_BF16=95; MAX_FP32=50
  FOLDER=(--classes 10 --train 300 --val 1 --size 320)
fi
FP32_MODES=plain,vissl_cached,vissl_synthetic,vissl_cached_bare,plain_nobench

say "synthetic JPEG folder in $WORK/folder"
"$PYTHON" -m benchmarks.synthetic_folder "$WORK/folder" "${FOLDER[@]}" || say "folder failed"

run() {  # run <precision> <max-s> <extra args...>
  local precision=$1 max_s=$2; shift 2
  local name="${NAME}_${precision}" hard=$((max_s + 45))
  say "$name: --max-s $max_s (killed at $hard s)"
  timeout --kill-after=10 "$hard" "$PYTHON" -m benchmarks.train_loop "${SIZE[@]}" \
    --precision "$precision" --max-s "$max_s" --out "$OUT" --name "$name" \
    --work "$WORK/$precision" "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  # the benchmark's own lines (VISSL prints the model and more in every mode)
  tail -n +1 -f --pid=$pid "$OUT/$name.log" | grep --line-buffered '^\[train_loop' || true
  wait $pid
  local rc=$?
  say "$name: exit $rc; $(ls "$OUT/$name".{json,md} 2>/dev/null | tr '\n' ' ')"
}

folder_args=()
[ -d "$WORK/folder/train" ] && folder_args=(--phase-folder "$WORK/folder/train")
run bf16_cl "$MAX_BF16" --steps 25 "${folder_args[@]}"
run fp32 "$MAX_FP32" --steps 20 --modes "$FP32_MODES"
say "done in $(( $(date +%s) - t0 )) s; results in $OUT"
