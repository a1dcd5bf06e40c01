#!/usr/bin/env bash
# The README's test command: install (idempotent), VISSL's lint (black, isort, flake8;
# 'bash scripts/lint.sh --fix' formats), then the test suite on CPU without the tests
# marked slow (the long end-to-end runs; about 10 min on 2 cores). CI (.ci/run) runs the
# slow ones after it. Arguments go to pytest and come last, so `-m slow` runs only the
# slow tests and `-m ""` runs everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
bash scripts/lint.sh
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
