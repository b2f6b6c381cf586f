"""fast-plaid (LightOn, fast-plaid 1.7.0.2110) from precomputed embeddings: build or search, JSON out.

Runs inside .bench-venv-fastplaid (see setup_peers.sh; it pins torch 2.11.0), one phase per process::

    python run_fastplaid.py build  --coll DIR --index DIR --out build.json [--nbits 2 --threads 2]
    python run_fastplaid.py search --coll DIR --index DIR --out search.json [--k 10 --configs "8,4096"]

``--coll`` holds the benchmark cache format (values.npy, offsets.npy, queries.npy). Build passes every
document as a torch tensor to ``FastPlaid.create`` (its API takes the whole list in memory). Search
measures single-query latency (one query per call, after warm-up) and one batched call over all
queries. ``--configs`` lists n_ivf_probe,n_full_scores pairs (default: its defaults 8,4096).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: procstats
from procstats import cpu_s, dir_bytes, open_values, peak_rss_mb, read_rows, rss_mb  # noqa: E402


def build(args) -> dict:
    import numpy as np
    import torch
    from fast_plaid import search as fp

    coll = Path(args.coll)
    offsets = np.load(coll / "offsets.npy")
    (_, dim), off = open_values(coll)
    n_docs = len(offsets) - 1
    rss0 = rss_mb()
    t0 = time.perf_counter()
    values = torch.from_numpy(read_rows(coll, off, dim, 0, int(offsets[-1])))  # its API wants all in memory
    docs = [values[offsets[i]:offsets[i + 1]] for i in range(n_docs)]
    load_s = time.perf_counter() - t0
    index = Path(args.index)
    t0, c0 = time.perf_counter(), cpu_s()
    engine = fp.FastPlaid(index=str(index), device="cpu")
    engine.create(documents_embeddings=docs, nbits=args.nbits, kmeans_niters=args.kmeans_niters, seed=args.seed)
    build_s, build_cpu = time.perf_counter() - t0, cpu_s() - c0
    return {"engine": "fastplaid", "phase": "build", "build_s": round(build_s, 2), "build_cpu_s": round(build_cpu, 2),
            "load_embeddings_s": round(load_s, 2), "rss_before_build_mb": round(rss0, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "index_bytes": dir_bytes(index), "n_docs": n_docs,
            "n_tokens": int(offsets[-1]), "dim": int(dim), "nbits": args.nbits,
            "kmeans_niters": args.kmeans_niters}


def _parse_configs(text: str) -> list[dict]:
    out = []
    for part in text.split(";"):
        if part.strip():
            probe, full = part.split(",")
            out.append({"n_ivf_probe": int(probe), "n_full_scores": int(full)})
    return out


def _ids(res, k: int):
    import numpy as np

    ids = np.full((len(res), k), -1, np.int64)
    for i, row in enumerate(res):
        got = [int(d) for d, _ in row[:k]]
        ids[i, :len(got)] = got
    return ids


def search(args) -> dict:
    import numpy as np
    import torch
    from fast_plaid import search as fp

    queries = np.load(Path(args.coll) / "queries.npy")
    Q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
    nq = Q.shape[0]
    rss0 = rss_mb()
    t0 = time.perf_counter()
    engine = fp.FastPlaid(index=str(args.index), device="cpu")
    engine.search(Q[:1], top_k=args.k, show_progress=False)  # loads the index lazily on first search
    open_s = time.perf_counter() - t0
    rss_open = rss_mb()
    runs = []
    for cfg in _parse_configs(args.configs):
        for i in range(min(args.warmup, nq)):
            engine.search(Q[i:i + 1], top_k=args.k, show_progress=False, **cfg)
        lat, cpu = np.empty(nq), np.empty(nq)
        single = []
        for i in range(nq):
            t, c = time.perf_counter(), time.process_time()
            single.extend(engine.search(Q[i:i + 1], top_k=args.k, show_progress=False, **cfg))
            lat[i] = time.perf_counter() - t
            cpu[i] = time.process_time() - c
        ids = _ids(single, args.k)
        t = time.perf_counter()
        batch = engine.search(Q, top_k=args.k, show_progress=False, **cfg)
        batch_s = time.perf_counter() - t
        ms = lat * 1e3
        runs.append({"params": cfg, "latency_ms": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                                                   "p95": float(np.percentile(ms, 95)), "max": float(ms.max())},
                     "cpu_ms": {"mean": float(cpu.mean() * 1e3), "p50": float(np.percentile(cpu, 50) * 1e3)},
                     "qps_sequential": float(nq / lat.sum()), "qps_batched": float(nq / batch_s),
                     "batch_equals_single": bool(np.array_equal(_ids(batch, args.k), ids)), "ids": ids.tolist()})
        print(f"[fastplaid] {cfg}: p50 {runs[-1]['latency_ms']['p50']:.1f} ms, "
              f"batched {runs[-1]['qps_batched']:.1f} QPS", flush=True)
    return {"engine": "fastplaid", "phase": "search", "open_s": round(open_s, 3),
            "open_note": "includes loading the index and one first query (fast-plaid loads lazily)",
            "rss_before_open_mb": round(rss0, 1), "rss_after_open_mb": round(rss_open, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "nq": int(nq), "k": args.k, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fast-plaid peer runner")
    ap.add_argument("phase", choices=["build", "search"])
    ap.add_argument("--coll", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--kmeans-niters", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--configs", default="8,4096", help="n_ivf_probe,n_full_scores;... (default: its defaults)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    res = build(args) if args.phase == "build" else search(args)
    try:
        from importlib.metadata import version

        fp_version = version("fast-plaid")
    except Exception:  # noqa: BLE001
        fp_version = None
    res.update({"threads": args.threads, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "fastplaid_version": fp_version, "python": platform.python_version(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    Path(args.out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
