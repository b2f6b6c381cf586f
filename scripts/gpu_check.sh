#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and nvcc: build plaidx in place with its CUDA kernels, run
# the GPU tests (tests/test_cuda.py compares every CUDA kernel with the CPU kernels), then the GPU vs CPU
# benchmark. Uses the interpreter it is given (PYTHON, default python3) with numpy, torch, faiss-cpu,
# pybind11, pytest and hypothesis installed; installs nothing.
#
#   OUT=results PLAIDX_CUDA_ARCHS=90 BENCH_NDOCS=10000,100000 bash scripts/gpu_check.sh
#   BENCH_NDOCS= bash scripts/gpu_check.sh          # build and tests only
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
export PLAIDX_CUDA_ARCHS=${PLAIDX_CUDA_ARCHS:-90}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
nvidia-smi -L || true
start=$(date +%s)
if ! $PY setup.py -q build_ext --inplace > "$OUT/gpu_build.log" 2>&1; then
  tail -40 "$OUT/gpu_build.log"; exit 1
fi
echo "[gpu_check] built in $(( $(date +%s) - start )) s"
$PY -c "import plaidx, json; i = plaidx.build_info(); print(json.dumps({k: v for k, v in i.items() if 'cuda' in k or k in ('backend', 'simd_dispatch', 'max_threads')}))"
timeout "${TEST_TIMEOUT:-240}" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
tests_rc=${PIPESTATUS[0]}
echo "[gpu_check] tests exit $tests_rc after $(( $(date +%s) - start )) s"
if [ "$tests_rc" = 0 ] && [ -n "${BENCH_NDOCS-10000}" ]; then
  timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/bench_gpu.py --ndocs "${BENCH_NDOCS-10000}" --out "$OUT" \
    --budget-s "${BENCH_BUDGET_S:-150}" 2>&1 | tail -40
fi
echo "[gpu_check] done after $(( $(date +%s) - start )) s"
exit "$tests_rc"
