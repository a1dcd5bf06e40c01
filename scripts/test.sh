#!/usr/bin/env bash
# The README's test command: install (idempotent), VISSL's lint (black, isort, flake8;
# 'bash scripts/lint.sh --fix' formats), then the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
bash scripts/lint.sh
exec .venv/bin/python -m pytest -q "$@"
