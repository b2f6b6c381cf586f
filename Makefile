# The two commands of the README. Both set everything up first (idempotent) and work offline after the
# first run. PLAIDX_TORCH_SPEC=skip keeps a torch you installed yourself (see scripts/bootstrap.sh).
.PHONY: setup demo test lint bench

setup:
	@bash scripts/bootstrap.sh

demo: setup
	@HF_HUB_OFFLINE=1 .venv/bin/python -m plaidx.demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m wheel tests/test_wheel.py

lint: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python benchmarks/bench_engine.py --dataset synthetic --ndocs 10000
