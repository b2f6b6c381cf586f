"""Converting a colbert-ai index to plaidx: conversion speed, then both engines searching the same index.

One run: colbert-ai 0.2.22 builds an index of the cached 1M-token synthetic collection (in
.bench-venv-plaid, once; the index is cached), plaidx converts it (``convert_colbert``, three times, the
median is reported), then colbert-ai (its own search at k=10 defaults: ncells 1, threshold 0.5, ndocs 256)
and plaidx on the converted index (its defaults, and PLAID's settings) answer the same queries one at a
time with the same thread count. Recall@10 is against exact MaxSim over the original float32 vectors.

    .venv/bin/python benchmarks/bench_convert.py [--n-docs 10000 --threads 2 --nq 300]

Writes benchmarks/results/convert_synthetic_<n_docs>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import synthetic  # noqa: E402
from bench_engine import child_env, git_info, machine_info, run_child  # noqa: E402
from collection import CACHE_DIR, RESULTS_DIR, exact_topk_cached, recall_at_k  # noqa: E402

PLAID_VENV = REPO / ".bench-venv-plaid"


def _source_bytes(index: Path) -> int:
    """Bytes convert_colbert reads: chunks, centroids, buckets, avg_residual, doclens and metadata."""
    return sum(f.stat().st_size for f in index.iterdir()
               if f.is_file() and not f.name.startswith(("ivf", "plan", "sample")))


def _plaidx_search(index, queries: np.ndarray, params, warmup: int) -> dict:
    for i in range(min(warmup, len(queries))):
        index.search(queries[i], k=10, params=params)
    ids = np.full((len(queries), 10), -1, np.int64)
    lat = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, found = index.search(q, k=10, params=params)
        lat[i] = time.perf_counter() - t
        ids[i] = found[0]
    ms = lat * 1e3
    return {"ids": ids, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=10_000, help="synthetic collection size (10,000 = 1M tokens)")
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--timeout", type=int, default=3 * 3600)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    os.environ.update({k: v for k, v in child_env(args.threads).items() if k.endswith("NUM_THREADS")})
    from plaidx.engine.params import SearchParams
    from plaidx.interop.colbert import convert_colbert

    coll = synthetic.ensure(args.n_docs, 128, args.nq, 0)
    work = CACHE_DIR / f"convert_plaid_{coll.path.name}_nb{args.nbits}"
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index"
    logs = RESULTS_DIR / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    runner = [str(PLAID_VENV / "bin" / "python"), str(BENCH / "peers" / "run_plaid.py")]
    build = {}
    if not (index / "metadata.json").is_file():
        shutil.rmtree(index, ignore_errors=True)
        print(f"[convert] building the colbert-ai index of {coll.n_tokens} tokens (cached in {index})", flush=True)
        build = run_child([*runner, "build", "--coll", str(coll.path), "--index", str(index), "--out",
                           str(work / "build.json"), "--nbits", str(args.nbits), "--threads", str(args.threads)],
                          work / "build.json", logs / "convert_plaid_build.log", args.threads, args.timeout, 0)
        if "error" in build:
            raise SystemExit(f"colbert-ai build failed: {build}")
    elif (work / "build.json").is_file():
        build = json.loads((work / "build.json").read_text())

    src_bytes = _source_bytes(index)
    conv = []
    dst = work / "converted"
    for r in range(args.repeats):
        shutil.rmtree(dst, ignore_errors=True)
        t0 = time.perf_counter()
        converted = convert_colbert(index, dst)
        conv.append(time.perf_counter() - t0)
        print(f"[convert] run {r}: {conv[-1]:.2f}s ({src_bytes / 1e6 / conv[-1]:.1f} MB/s)", flush=True)
    conv_s = float(np.median(conv))

    truth_scores, truth = exact_topk_cached(coll, 10, threads=args.threads)
    queries = np.ascontiguousarray(coll.queries, np.float32)
    print("[convert] colbert-ai search", flush=True)
    peer = run_child([*runner, "search", "--coll", str(coll.path), "--index", str(index), "--out",
                      str(work / "search.json"), "--threads", str(args.threads), "--warmup", str(args.warmup)],
                     work / "search.json", logs / "convert_plaid_search.log", args.threads, args.timeout, 0)
    if "error" in peer:
        raise SystemExit(f"colbert-ai search failed: {peer}")
    prun = peer["runs"][0]
    peer_ids = np.asarray(prun["ids"], np.int64)
    print("[convert] plaidx search", flush=True)
    ours = {"defaults": _plaidx_search(converted, queries, SearchParams(), args.warmup),
            "plaid_settings": _plaidx_search(converted, queries, SearchParams(nprobe=1, centroid_score_threshold=0.5,
                                                                             ndocs=256, n_exact=64), args.warmup)}
    rows = [{"engine": "colbert-ai 0.2.22", "index": "its own", "params": prun["params"],
             "recall@10": recall_at_k(peer_ids, truth, 10), "p50_ms": prun["latency_ms"]["p50"],
             "p95_ms": prun["latency_ms"]["p95"], "overlap_with_colbert": 1.0}]
    for name, res in ours.items():
        rows.append({"engine": "plaidx", "index": "converted", "params": name,
                     "recall@10": recall_at_k(res["ids"], truth, 10), "p50_ms": res["p50_ms"], "p95_ms": res["p95_ms"],
                     "overlap_with_colbert": recall_at_k(res["ids"], peer_ids, 10)})
    info = converted.info()
    result = {
        "benchmark": "convert", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/bench_convert.py", *(argv or sys.argv[1:])]),
        "git": git_info(), "machine": machine_info(args.threads), "collection": coll.path.name,
        "n_docs": coll.n_docs, "n_tokens": coll.n_tokens, "nbits": args.nbits, "nq": int(len(queries)),
        "colbert_build": {k: build.get(k) for k in ("build_s", "nlist", "index_bytes", "peak_rss_mb")},
        "conversion": {"source_bytes": src_bytes, "seconds_runs": [round(c, 3) for c in conv],
                       "seconds_median": round(conv_s, 3), "mb_per_s": round(src_bytes / 1e6 / conv_s, 1),
                       "tokens_per_s": round(coll.n_tokens / conv_s), "plaidx_bytes": info["bytes_on_disk"],
                       "plaidx_bytes_per_token": round(info["bytes_per_token"], 2)},
        "search": rows, "colbert_open_s": peer.get("open_s"),
    }
    name = f"convert_synthetic_{args.n_docs}{'_' + args.tag if args.tag else ''}"
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=1))
    m = result["machine"]
    blas = [f"{b.get('internal_api')} {b.get('architecture')} ({b.get('num_threads')} threads)"
            for b in m.get("blas_harness", [])]
    c = result["conversion"]
    lines = [
        f"# colbert-ai index -> plaidx: conversion and search ({coll.n_tokens:,} tokens, nbits {args.nbits})", "",
        f"- date: {result['date']}; commit {result['git']['commit'][:12]}"
        f"{' (plaidx dirty)' if result['git']['plaidx_dirty'] else ''}",
        f"- machine: {m.get('cpu')}, {m.get('cpu_count')} cores, {args.threads} threads; BLAS: {', '.join(blas)}; "
        f"OPENBLAS_CORETYPE={m['env'].get('OPENBLAS_CORETYPE')}; load average {m.get('loadavg_1_5_15')}",
        f"- command: `{result['command']}`",
        f"- collection: {coll.path.name} ({coll.n_docs:,} documents, {coll.n_tokens:,} tokens, d 128), "
        f"{len(queries)} queries of 32 tokens; colbert-ai index built by colbert-ai 0.2.22 "
        f"({build.get('nlist')} centroids)", "",
        "## Conversion (`convert_colbert`, lossless)", "",
        "| source bytes read | seconds (median of runs) | MB/s | tokens/s | plaidx bytes/token |",
        "|---:|---:|---:|---:|---:|",
        f"| {c['source_bytes']:,} | {c['seconds_median']} ({', '.join(str(s) for s in c['seconds_runs'])}) | "
        f"{c['mb_per_s']} | {c['tokens_per_s']:,} | {c['plaidx_bytes_per_token']} |", "",
        "## Search, one query at a time, k = 10", "",
        "| engine | index | params | recall@10 vs exact MaxSim | p50 ms | p95 ms | top-10 overlap with colbert-ai |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['index']} | {r['params']} | {r['recall@10']:.3f} | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['overlap_with_colbert']:.3f} |")
    base = rows[0]["p50_ms"]
    lines += ["", "p50 ratio plaidx / colbert-ai: " + ", ".join(f"{r['params']} {r['p50_ms'] / base:.2f}"
                                                             for r in rows[1:]) + " (the machine is shared: "
              "compare ratios).", ""]
    (RESULTS_DIR / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
