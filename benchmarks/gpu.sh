#!/usr/bin/env bash
# Every GPU measurement of issue 15 in one command (see benchmarks/gpu.py and docs/performance.md, "On a GPU").
#
#   bash benchmarks/gpu.sh             # on a GPU machine, ~8 min; files in $OUT, else ./gpu-results
#   bash benchmarks/gpu.sh --dry-run   # on the CPU at tiny sizes (also FEDCORE_GPU_DRY_RUN=1)
#   bash benchmarks/gpu.sh --help
#
# Wheels carried in .whl/ (packages the GPU machine lacks) are installed first, into /tmp/fedcore-site.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fedcore-site .whl/*.whl \
    || { echo "gpu.sh: installing the carried wheels in .whl/ failed (one version of each package?)" >&2; exit 3; }
  export PYTHONPATH=/tmp/fedcore-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu.py "$@"
