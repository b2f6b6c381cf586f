#!/usr/bin/env bash
# Create the peer engines' virtual environments, outside the project venv (idempotent).
#
#   bash benchmarks/peers/setup_peers.sh [plaid] [fastplaid]     (default: both)
#
#   .bench-venv-plaid      torch==2.13.0 (CPU) + colbert-ai[faiss-cpu]==0.2.22 (Stanford PLAID)
#   .bench-venv-fastplaid  fast-plaid==1.7.0.2110, which pins torch 2.11.0 (several GB); given up
#                          gracefully when it fails or runs past FASTPLAID_TIMEOUT seconds (default 1800).
#
# Each venv gets a stamp file (.ok) once its import check passed; the harness skips a peer without it.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1
FASTPLAID_TIMEOUT=${FASTPLAID_TIMEOUT:-1800}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(plaid fastplaid)

setup_plaid() {
  local venv=.bench-venv-plaid
  if [ -f "$venv/.ok" ]; then echo "[peers] $venv ready"; return 0; fi
  echo "[peers] creating $venv (torch 2.13.0 CPU + colbert-ai 0.2.22)"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel || return 1
  "$venv/bin/python" -m pip install -q "torch==2.13.0" || return 1
  # ninja compiles colbert-ai's C++ extensions on first use; psutil measures RSS.
  "$venv/bin/python" -m pip install -q "colbert-ai[faiss-cpu]==0.2.22" ninja psutil numpy || return 1
  "$venv/bin/python" -c "import colbert, torch, faiss; print('[peers] plaid ok: torch', torch.__version__)" \
    || return 1
  touch "$venv/.ok"
}

setup_fastplaid() {
  local venv=.bench-venv-fastplaid
  if [ -f "$venv/.ok" ]; then echo "[peers] $venv ready"; return 0; fi
  echo "[peers] creating $venv (fast-plaid 1.7.0.2110 + torch 2.11.0; may take long, timeout ${FASTPLAID_TIMEOUT}s)"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel || return 1
  timeout "$FASTPLAID_TIMEOUT" "$venv/bin/python" -m pip install -q "fast-plaid==1.7.0.2110" psutil numpy \
    || { echo "[peers] fast-plaid install failed or timed out: skipped"; return 1; }
  "$venv/bin/python" -c "import fast_plaid, torch; print('[peers] fastplaid ok: torch', torch.__version__)" \
    || return 1
  touch "$venv/.ok"
}

rc=0
for t in "${targets[@]}"; do
  case "$t" in
    plaid) setup_plaid || { echo "[peers] plaid setup FAILED"; rc=1; } ;;
    fastplaid) setup_fastplaid || { echo "[peers] fastplaid setup FAILED"; rc=1; } ;;
    *) echo "[peers] unknown peer: $t"; rc=2 ;;
  esac
done
exit $rc
