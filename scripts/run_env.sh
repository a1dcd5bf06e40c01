# The interpreter and environment of the GPU check scripts (gpu_check.sh,
# gpu_loop_check.sh); sourced by them from the repository root. PYTHON: $PYTHON, else
# .venv/bin/python, else python3; this checkout first on PYTHONPATH (the stages'
# subprocesses import it before any installed copy); VCF_GIT_COMMIT from git when
# unset (scripts/gpu_env.sh: the copy on the device machine may lack .git). Prints the
# interpreter and the GPU, prefixed with "[$1 time]".
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
if [ -z "${VCF_GIT_COMMIT:-}" ] && git rev-parse HEAD >/dev/null 2>&1; then
  export VCF_GIT_COMMIT="$(git rev-parse HEAD)"
fi
echo "[$1 $(date +%H:%M:%S)] $PYTHON $("$PYTHON" --version 2>&1), in $PWD, commit ${VCF_GIT_COMMIT:-unknown}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
