#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and nvcc: build plaidx in place with its CUDA kernels, run
# the GPU tests (tests/test_cuda.py compares every CUDA kernel, search and build, with the CPU path), then
# the benchmarks: the GPU build against the machine's CPU cores (benchmarks/bench_gpu_build.py) and GPU vs
# CPU search (benchmarks/bench_gpu.py).
# Uses the interpreter it is given (PYTHON, default python3) with numpy, torch, faiss-cpu, pybind11, pytest
# and hypothesis installed; installs nothing. Every phase has its own time limit. Expected on one H200 with
# 16 cores: build 2-3 min, tests 1-2 min, build benchmark 5-7 min (10M tokens on GPU and CPU, 100M on the
# GPU, SciFact on both). For 10-minute calls run it twice: PHASES=build,test then PHASES=bench-build (the
# in-place build is kept between calls on a warm machine).
#
#   OUT=results bash scripts/gpu_check.sh                           # build, tests, build benchmark
#   PHASES=bench-build BUILD_TOKENS=10M,100M OUT=r bash scripts/gpu_check.sh
#   PHASES=bench-search BENCH_NDOCS=10000,100000 bash scripts/gpu_check.sh
#
# SciFact text (BUILD_SCIFACT=1, the default) is read from $PLAIDX_DATA/scifact/corpus.jsonl; when that is
# missing, from benchmarks/results/cache/data (an ignored folder: copy /work/shared/data/scifact there and
# carry it to the GPU machine). It needs the bundled model's package and transformers; without them that
# run is logged as failed and the synthetic results still come out.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
PHASES=${PHASES:-build,test,bench-build}
export PLAIDX_CUDA_ARCHS=${PLAIDX_CUDA_ARCHS:-90}
export PLAIDX_BUILD_JOBS=${PLAIDX_BUILD_JOBS:-0}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f "${PLAIDX_DATA:-/work/shared/data}/scifact/corpus.jsonl" ] && [ -f benchmarks/results/cache/data/scifact/corpus.jsonl ]; then
  export PLAIDX_DATA="$PWD/benchmarks/results/cache/data"
fi
mkdir -p "$OUT"
has() { case ",$PHASES," in *",$1,"*) return 0;; *) return 1;; esac; }
nvidia-smi -L || true
start=$(date +%s)
rc=0
if has build; then
  if ! timeout "${BUILD_TIMEOUT:-300}" $PY setup.py -q build_ext --inplace > "$OUT/gpu_build.log" 2>&1; then
    tail -40 "$OUT/gpu_build.log"; exit 1
  fi
  echo "[gpu_check] built in $(( $(date +%s) - start )) s"
fi
$PY -c "import plaidx, json; i = plaidx.build_info(); print(json.dumps({k: v for k, v in i.items() if 'cuda' in k or k in ('backend', 'simd_dispatch', 'max_threads')}))"
if has test; then
  timeout "${TEST_TIMEOUT:-300}" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 \
    | tee "$OUT/gpu_tests.log" | tail -40
  rc=${PIPESTATUS[0]}
  echo "[gpu_check] tests exit $rc after $(( $(date +%s) - start )) s"
fi
if has bench-build && { [ "$rc" = 0 ] || [ "${BENCH_ON_FAIL:-1}" = 1 ]; }; then  # timings are worth having anyway
  scifact=()
  [ "${BUILD_SCIFACT:-1}" = 1 ] && scifact=(--scifact)
  timeout "${BUILD_BENCH_TIMEOUT:-420}" $PY benchmarks/bench_gpu_build.py --tokens "${BUILD_TOKENS:-10M,100M}" \
    --cpu-max-tokens "${BUILD_CPU_MAX_TOKENS:-10M}" "${scifact[@]}" --out "$OUT" --timeout-s 400 2>&1 | tail -80
  echo "[gpu_check] build benchmark exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
fi
if has bench-search && { [ "$rc" = 0 ] || [ "${BENCH_ON_FAIL:-1}" = 1 ]; }; then
  timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/bench_gpu.py --ndocs "${BENCH_NDOCS:-10000}" --out "$OUT" \
    --budget-s "${BENCH_BUDGET_S:-150}" 2>&1 | tail -40
fi
echo "[gpu_check] done after $(( $(date +%s) - start )) s"
exit "$rc"
