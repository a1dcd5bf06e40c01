#!/usr/bin/env bash
# The README's test command: install (idempotent), then the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
