# Prepares a bare GPU machine with no package index for the project's GPU checks.
# Source it from the repository root:  source scripts/gpu_env.sh
#
# Expects, carried beside the checkout (both git-ignored, see ../shared/GPU.md):
#   .whl/     the VISSL stack as --no-deps wheels (made with ../shared/gpu/fetch_wheels.sh)
#   .fmnist/  the four Fashion-MNIST IDX files
# Installs the wheels into /tmp/site, puts the IDX files where the configs look, compiles
# everything once (the image sets PYTHONDONTWRITEBYTECODE, so every worker process would
# compile again) and exports PYTHONPATH=/tmp/site:<root>. The copy sent to the machine
# may lack .git: set VCF_GIT_COMMIT=<hash> before sourcing, so results name the commit.
# Where the checkout has a .venv (the CPU machine), it installs nothing
# but export PYTHONPATH.
_vcf_root="$(pwd)"
if [ ! -x .venv/bin/python ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$_vcf_root"
  unset PYTHONDONTWRITEBYTECODE
  python3 -m compileall -q -j 0 /tmp/site "$_vcf_root/vissl_clusterfit" \
    "$_vcf_root/benchmarks" >/dev/null 2>&1 || true
else
  export PYTHONPATH="$_vcf_root${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .fmnist ] && [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  mkdir -p /usr/share/datasets/fashion-mnist && cp .fmnist/* /usr/share/datasets/fashion-mnist/
fi
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
unset _vcf_root
echo "[gpu_env] PYTHONPATH=$PYTHONPATH commit=${VCF_GIT_COMMIT:-unset}"
