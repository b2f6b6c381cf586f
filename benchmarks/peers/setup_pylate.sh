#!/usr/bin/env bash
# PyLate 1.6.0 for tests/test_encoder_adapters.py, as an overlay over the project venv (idempotent).
#
#   bash benchmarks/peers/setup_pylate.sh
#   PYTHONPATH=.bench-venv-pylate .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_encoder_adapters.py
#
# PyLate 1.6.0 pins sentence-transformers 5.3.0 and transformers <= 5.3.0 (and a fast-plaid built for another
# torch), while .venv has sentence-transformers 6.x and a newer transformers, which break PyLate's Dense
# loading. So PyLate and the versions it needs go into a --target folder put first on PYTHONPATH, beside
# .venv's torch; fast-plaid is left out (only PyLate's index code uses it, the model does not).
set -uo pipefail
cd "$(dirname "$0")/../.."
dst=.bench-venv-pylate
if [ -f "$dst/.ok" ]; then echo "[pylate] $dst ready"; exit 0; fi
.venv/bin/python -m pip install -q --no-deps --target "$dst" "pylate==1.6.0" "sentence-transformers==5.3.0" \
  "transformers==5.3.0" "tokenizers==0.22.1" "huggingface-hub>=1.3,<2" "kernels>=0.10.2,<0.11" \
  datasets dill multiprocess ujson || exit 1
PYTHONPATH=$dst HF_HUB_OFFLINE=1 .venv/bin/python -c "from pylate import models; print('[pylate] ok', models.ColBERT)" \
  || exit 1
touch "$dst/.ok"
