#!/usr/bin/env bash
# The GPU checks in one call (a lent CUDA machine: its own python3 with torch, no registry).
# Wheels the image lacks (soundfile, soxr, librosa 0.10.1 for the upstream baseline...) travel in
# .whl/ (pip download --only-binary=:all: --python-version 3.12 -d .whl soundfile soxr librosa==0.10.1 …
# on a machine with the registry; the folder is git-ignored). Logs and figures go to $OUT (or ./gpu_out).
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
grep -m1 'model name' /proc/cpuinfo | tee -a "$OUT/gpu.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
# the CUDA tests (skipped on every machine without a GPU, CI included); SKIP_TESTS=1 skips them here
[ "${SKIP_TESTS:-0}" = 1 ] || timeout 240 python3 -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_encoder.py tests/test_export.py \
  tests/test_performance_paths.py tests/test_hubert.py tests/test_stream.py tests/test_pool.py 2>&1 | tee "$OUT/cuda_tests.log"
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_gpu.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/bench_gpu.log"
