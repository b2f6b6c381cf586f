#!/usr/bin/env bash
# Create .bench-venv-ragatouille: RAGatouille 0.0.9.post2 on colbert-ai 0.2.22, CPU only (idempotent).
#
#   bash benchmarks/peers/setup_ragatouille.sh
#
# RAGatouille 0.0.9.post2 imports only with older neighbours (transformers >= 4.50 dropped AdamW, which
# colbert-ai imports; langchain 0.4 moved its retriever classes), so they are pinned here. torch is pinned to
# the 2.13.0 CPU wheel: an unpinned torch pulls a multi-GB CUDA build. The venv gets a stamp file (.ok) once
# its import check passed; benchmarks/bench_ragatouille.py and make_ragatouille_fixture.py need it.
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1
venv=.bench-venv-ragatouille
if [ -f "$venv/.ok" ]; then echo "[ragatouille] $venv ready"; exit 0; fi
echo "[ragatouille] creating $venv (RAGatouille 0.0.9.post2 + colbert-ai 0.2.22 + torch 2.13.0 CPU)"
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv" || exit 1
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel || exit 1
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) where no local CPU wheel is on pip's find-links.
"$venv/bin/python" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} || exit 1
# ninja compiles colbert-ai's C++ extensions on first use; psutil measures RSS (and RAGatouille imports it).
"$venv/bin/python" -m pip install -q "torch==2.13.0" "ragatouille==0.0.9.post2" "colbert-ai[faiss-cpu]==0.2.22" \
  "langchain<0.4" "langchain-core<0.4" "transformers==4.49.0" "sentence-transformers==3.4.1" "datasets<3.4" \
  psutil ninja numpy threadpoolctl || exit 1
"$venv/bin/python" - <<'PY' || exit 1
import torch, transformers, colbert  # noqa: F401
from ragatouille import RAGPretrainedModel  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.version.cuda, "a CUDA build of torch was installed; expected the CPU wheel"
print("[ragatouille] ok: torch", torch.__version__, "transformers", transformers.__version__)
PY
touch "$venv/.ok"
