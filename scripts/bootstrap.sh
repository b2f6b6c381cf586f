#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment and build the native core. Idempotent: a second
# run only checks a stamp and returns within seconds.
#
#   PYTHON=python3.11     interpreter used to create the venv (default: python3)
#   PLAIDX_VENV=.venv     where the venv lives
#   PLAIDX_TORCH_SPEC=... torch requirement installed first (default: torch==2.13.0, the CPU wheel on this
#                         kind of machine). Set it to "skip" to keep a torch you installed yourself (GPU
#                         builds included); the package itself only asks for torch>=2.1.
#   PLAIDX_EXTRAS=dev     extras of the package to install
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${PLAIDX_VENV:-.venv}
TORCH_SPEC=${PLAIDX_TORCH_SPEC:-torch==2.13.0}
EXTRAS=${PLAIDX_EXTRAS:-dev}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[plaidx] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp_src=$(cat pyproject.toml setup.py $(find csrc -type f | sort) 2>/dev/null | sha1sum | cut -d' ' -f1)
stamp="$stamp_src-$TORCH_SPEC-$EXTRAS"
if [ -f "$VENV/.plaidx-stamp" ] && [ "$(cat "$VENV/.plaidx-stamp")" = "$stamp" ] \
   && "$PY" -c "import plaidx._core" 2>/dev/null; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q --upgrade "pip>=23" "setuptools>=64" wheel "pybind11>=2.12" "numpy>=1.23"
if [ "$TORCH_SPEC" != "skip" ] && ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[plaidx] installing $TORCH_SPEC (set PLAIDX_TORCH_SPEC=skip to bring your own torch)"
  "$PY" -m pip install -q "$TORCH_SPEC"
fi
echo "[plaidx] installing plaidx[$EXTRAS] and building the native core"
"$PY" -m pip install -q --no-build-isolation -e ".[$EXTRAS]"
"$PY" -c "import plaidx; i = plaidx.build_info(); print('[plaidx] backend:', i['backend'], '| openmp:', i.get('openmp'), '| simd:', i.get('simd'))"
echo "$stamp" > "$VENV/.plaidx-stamp"
