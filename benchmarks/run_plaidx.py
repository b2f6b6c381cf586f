"""plaidx engine runner for bench_engine.py: build or search one index in its own process, JSON out.

    .venv/bin/python benchmarks/run_plaidx.py build  --coll DIR --index DIR --out build.json [--nbits 2] \
        [--keep-vectors int8]
    .venv/bin/python benchmarks/run_plaidx.py search --coll DIR --index DIR --out search.json \
        [--k 10] [--grid '[{"nprobe": 2, "centroid_score_threshold": 0.45, "ndocs": 1024}, {"exact": true}]']

Build streams the collection from its memory map as an iterable of batches into ``plaidx.Index.build``
(bounded memory), so the peak RSS is the engine's own. Search records the RSS right after
``Index.open``, then per parameter set: single-query latency over every query (after warm-up) and one
batched call over all queries (QPS). ``--stub`` swaps in a brute-force stand-in (float16 storage, exact
MaxSim with torch) to test the harness while plaidx is not ready; its results are labelled STUB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from collection import load_collection  # noqa: E402
from procstats import cpu_s, dir_bytes, peak_rss_mb, rss_mb  # noqa: E402


class StubIndex:
    """Brute-force stand-in with plaidx's API (float16 storage, exact MaxSim). For harness tests only."""

    def __init__(self, path: Path):
        self.values = np.load(path / "values16.npy", mmap_mode="r")
        self.offsets = np.load(path / "offsets.npy")

    @classmethod
    def build(cls, path, documents, nbits=2, nlist=None, kmeans_niters=4, seed=0):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        parts, lens = [], []
        for batch in documents:
            for d in batch if isinstance(batch, list) else [batch]:
                parts.append(np.asarray(d, np.float16))
                lens.append(len(d))
        np.save(path / "values16.npy", np.concatenate(parts))
        np.save(path / "offsets.npy", np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
        return cls(path)

    @classmethod
    def open(cls, path):
        return cls(Path(path))

    def search(self, queries, k=10, **_params):
        from collection import exact_scores, topk_from_scores

        q = np.asarray(queries, np.float32)
        scores = exact_scores(q, self.values, self.offsets, log=False)
        return topk_from_scores(scores, k)


def _engine(stub: bool):
    if stub:
        return StubIndex, "plaidx-STUB", None
    import plaidx

    return plaidx.Index, "plaidx", getattr(plaidx, "__version__", None)


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info

        keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer", "prefix")
        return [{k: d.get(k) for k in keep} for d in threadpool_info()]
    except Exception as e:  # noqa: BLE001
        return [{"error": str(e)}]


def build(args) -> dict:
    Index, name, version = _engine(args.stub)
    coll = load_collection(args.coll)
    rss0 = rss_mb()
    kw = {"nbits": args.nbits, "nlist": args.nlist, "kmeans_niters": args.kmeans_niters, "seed": args.seed}
    if args.keep_vectors:  # the rerank tier (plaidx only; the stub has none)
        kw["keep_vectors"] = args.keep_vectors
    t0, c0 = time.perf_counter(), cpu_s()
    # a sequence whose documents are read on use: no spill of the input, whatever the collection's size
    Index.build(args.index, coll.lazy_docs() if not args.stub else coll.iter_batches(args.batch_docs), **kw)
    build_s, build_cpu = time.perf_counter() - t0, cpu_s() - c0
    out = {"engine": name, "version": version, "phase": "build", "build_s": round(build_s, 2),
           "build_cpu_s": round(build_cpu, 2),
           "rss_before_build_mb": round(rss0, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
           "index_bytes": dir_bytes(Path(args.index)), "n_docs": coll.n_docs, "n_tokens": coll.n_tokens,
           "dim": coll.dim, "params": kw}
    if not args.stub:
        try:
            idx = Index.open(args.index)
            out["nlist"] = int(idx.nlist)
        except Exception:  # noqa: BLE001 - nlist is informative only
            pass
    return out


def _search_run(index, queries: np.ndarray, k: int, params: dict, warmup: int) -> dict:
    nq = len(queries)
    for i in range(min(warmup, nq)):
        index.search(queries[i:i + 1], k=k, **params)
    lat, cpu = np.empty(nq), np.empty(nq)
    ids = np.full((nq, k), -1, np.int64)
    for i in range(nq):
        t, c = time.perf_counter(), time.process_time()
        _s, found = index.search(queries[i:i + 1], k=k, **params)
        lat[i] = time.perf_counter() - t
        cpu[i] = time.process_time() - c
        found = np.asarray(found).reshape(-1)[:k]
        ids[i, :len(found)] = found
    t = time.perf_counter()
    _s, batch_ids = index.search(queries, k=k, **params)
    batch_s = time.perf_counter() - t
    batch_ids = np.asarray(batch_ids)
    ms = lat * 1e3
    return {"params": params,
            "latency_ms": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                           "p95": float(np.percentile(ms, 95)), "max": float(ms.max())},
            "cpu_ms": {"mean": float(cpu.mean() * 1e3), "p50": float(np.percentile(cpu, 50) * 1e3)},
                     "qps_sequential": float(nq / lat.sum()), "qps_batched": float(nq / batch_s), "batch_s": batch_s,
            "batch_equals_single": bool(np.array_equal(batch_ids[:, :k], ids)),
            "ids": ids.tolist()}


def search(args) -> dict:
    Index, name, version = _engine(args.stub)
    coll = load_collection(args.coll)
    queries = np.ascontiguousarray(coll.queries, dtype=np.float32)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = Index.open(args.index)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb()
    runs = []
    for params in json.loads(args.grid):
        try:
            runs.append(_search_run(index, queries, args.k, params, args.warmup))
            r = runs[-1]
            print(f"[{name}] {params}: p50 {r['latency_ms']['p50']:.2f} ms, p95 {r['latency_ms']['p95']:.2f} ms, "
                  f"batched {r['qps_batched']:.1f} QPS", flush=True)
        except Exception as e:  # noqa: BLE001 - one bad parameter set must not lose the others
            runs.append({"params": params, "error": f"{type(e).__name__}: {e}"})
            print(f"[{name}] {params}: FAILED {e}", flush=True)
    return {"engine": name, "version": version, "phase": "search", "open_s": round(open_s, 4),
            "rss_before_open_mb": round(rss0, 1), "rss_after_open_mb": round(rss_open, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "nq": len(queries), "k": args.k, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="plaidx runner")
    ap.add_argument("phase", choices=["build", "search"])
    ap.add_argument("--coll", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--kmeans-niters", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-vectors", default=None, help="build with this rerank tier (int8 or float16)")
    ap.add_argument("--batch-docs", type=int, default=2048)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--grid", default="[{}]", help="JSON list of search keyword sets ({} = plaidx defaults)")
    ap.add_argument("--stub", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        res = build(args) if args.phase == "build" else search(args)
        res["blas"] = _blas_info()
    res.update({"threads": args.threads, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "numpy": np.__version__, "python": platform.python_version(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    Path(args.out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
