#!/usr/bin/env bash
# VISSL's lint (black, isort, flake8 with VISSL's settings: setup.cfg, pyproject.toml).
#   bash scripts/lint.sh          # check (CI)
#   bash scripts/lint.sh --fix    # rewrite the files with black and isort, then check
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.venv/bin
if [ "${1:-}" = "--fix" ]; then
  "$bin/isort" -q . && "$bin/black" -q .
fi
status=0
"$bin/black" --check -q . || { echo "[lint] black would reformat the files above"; status=1; }
"$bin/isort" --check-only -q . || { echo "[lint] isort would reorder the imports above"; status=1; }
"$bin/flake8" . || { echo "[lint] flake8 found the problems above"; status=1; }
if [ "$status" != 0 ]; then
  echo "[lint] FAILED: run 'bash scripts/lint.sh --fix' to format, then fix what flake8 reports"
else
  echo "[lint] black, isort and flake8 are clean"
fi
exit "$status"
