#!/usr/bin/env bash
# One-step install of vissl_clusterfit and its stack into .venv/ (Python 3.11).
#
#   bash scripts/install.sh          # idempotent: a second run only checks and exits
#
# VISSL 0.1.6 and classy-vision 0.7.0 are installed with --no-deps: their pinned
# dependencies (numpy 1.19, scikit-learn 0.24, hydra 1.0.7) have no Python 3.11 wheels.
# Everything else is pinned in requirements/constraints.txt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
PYTHON=${PYTHON:-python3}
venv="$root/.venv"
stamp="$venv/.vissl_clusterfit_installed"
want=$(cat requirements/constraints.txt requirements/lint.txt setup.cfg scripts/install.sh | sha1sum | cut -d' ' -f1)

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[install] Fashion-MNIST: installing the Debian package dataset-fashion-mnist"
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
      (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) ||
      echo "[install] WARNING: apt-get could not install dataset-fashion-mnist"
  else
    echo "[install] NOTE: Fashion-MNIST is not in $fmnist. Install it with" \
         "'sudo apt-get install dataset-fashion-mnist', or point the data source at" \
         "a folder with the four IDX files (DATA.TRAIN.DATA_PATHS). The scikit-learn" \
         "digits data source needs nothing."
  fi
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[install] .venv is up to date"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating $venv with $($PYTHON --version)"
  "$PYTHON" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
echo "[install] torch 2.14.1 + torchvision 0.29.1"
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
echo "[install] vissl 0.1.6 + classy-vision 0.7.0 (--no-deps)"
"${pip[@]}" --no-deps vissl==0.1.6 classy-vision==0.7.0
echo "[install] pinned requirements"
echo "[install] (pip will report that vissl's own pins are not met: expected, they have no Python 3.11 wheels)"
"${pip[@]}" -r requirements/constraints.txt
echo "[install] lint tools (VISSL's black / isort / flake8 settings)"
"${pip[@]}" -r requirements/lint.txt
echo "[install] vissl_clusterfit (editable)"
# compat mode puts the project root on sys.path, so hydra finds our hydra_plugins/
# namespace package next to VISSL's.
"${pip[@]}" --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
echo "$want" > "$stamp"
echo "[install] done"
