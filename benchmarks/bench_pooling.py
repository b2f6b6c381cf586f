"""Token pooling benchmark: index size and nDCG@10 at pool factors 1, 2, 3 on a real collection.

Pools every document's token vectors of a cached collection (encoded once with the bundled model by
benchmarks/real_embeddings.py) with ``plaidx.encoder.pooling.pool_tokens``, exactly what
``ColBERT.encode_documents(..., pool_factor=f)`` returns, then per factor: builds a plaidx index
(nbits 2, defaults otherwise), searches it with its defaults, and scores exact MaxSim over the pooled
float vectors too, so the loss from pooling and the loss from the codec are told apart.

    .venv/bin/python benchmarks/bench_pooling.py --dataset scifact [--factors 1,2,3] [--threads 2]
    PLAIDX_DATA=plaidx/data .venv/bin/python benchmarks/bench_pooling.py --dataset sample   # the bundled
        300-document SciFact slice (50 queries): minutes to encode instead of an hour on a busy machine

Writes benchmarks/results/pooling_<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_engine as be  # noqa: E402
from collection import CACHE_DIR, RESULTS_DIR, exact_scores, topk_from_scores  # noqa: E402


def run_factor(coll, factor: int, args, work: Path) -> dict:
    import plaidx
    from plaidx.encoder.pooling import pool_tokens

    t0 = time.perf_counter()
    docs = [pool_tokens(np.asarray(coll.doc(i), dtype=np.float32), factor) for i in range(coll.n_docs)]
    pool_s = time.perf_counter() - t0
    lengths = np.array([d.shape[0] for d in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(docs)
    q = np.ascontiguousarray(coll.queries, dtype=np.float32)
    _, exact_ids = topk_from_scores(exact_scores(q, values, offsets, threads=args.threads, log=False), args.k)
    path = work / f"pool{factor}"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    index = plaidx.Index.build(path, docs, nbits=args.nbits, seed=args.seed)
    build_s = time.perf_counter() - t0
    for i in range(min(10, len(q))):
        index.search(q[i:i + 1], k=args.k)
    lat = []
    ids = np.full((len(q), args.k), -1, np.int64)
    for i in range(len(q)):
        t = time.perf_counter()
        _, found = index.search(q[i:i + 1], k=args.k)
        lat.append((time.perf_counter() - t) * 1e3)
        ids[i] = found[0]
    info = index.info()
    tier = {}
    if args.keep_vectors:  # the same pooled vectors with a rerank tier: its default search re-scores with them
        tpath = work / f"pool{factor}_{args.keep_vectors}"
        shutil.rmtree(tpath, ignore_errors=True)
        tindex = plaidx.Index.build(tpath, docs, nbits=args.nbits, seed=args.seed, keep_vectors=args.keep_vectors)
        _, tids = tindex.search(q, k=args.k)
        tier = {"ndcg_at_k_tier": be.ndcg_at_k(tids, coll, args.k),
                "recall_vs_exact_pooled_tier": float(np.mean([len(set(a) & set(b)) / args.k
                                                              for a, b in zip(tids.tolist(), exact_ids.tolist())])),
                "index_bytes_tier": int(tindex.info()["bytes_on_disk"])}
    return {**tier, "pool_factor": factor, "tokens": int(offsets[-1]), "mean_tokens_per_doc": float(lengths.mean()),
            "index_bytes": int(info["bytes_on_disk"]), "bytes_per_token": float(info["bytes_per_token"]),
            "bytes_per_doc": float(info["bytes_on_disk"] / coll.n_docs), "nlist": int(index.nlist),
            "ndcg_at_k": be.ndcg_at_k(ids, coll, args.k), "ndcg_at_k_exact_pooled": be.ndcg_at_k(exact_ids, coll, args.k),
            "recall_vs_exact_pooled": float(np.mean([len(set(a) & set(b)) / args.k
                                                     for a, b in zip(ids.tolist(), exact_ids.tolist())])),
            "p50_ms": float(np.percentile(lat, 50)), "pool_s": round(pool_s, 2), "build_s": round(build_s, 2)}


def markdown(report: dict) -> str:
    c, m = report["collection"], report["machine"]
    rows = report["rows"]
    base = rows[0]
    lines = [f"# Token pooling: {c['dataset']} ({c['n_docs']:,} docs, {c['n_tokens']:,} tokens, d {c['dim']}, "
             f"{c['nq']} queries)", "",
             f"{report['created']} | git {report['git'].get('commit', '?')[:10]}"
             f"{' (local changes)' if report['git'].get('plaidx_dirty') else ''} | encoder {c.get('encoder')} | "
             f"nbits {report['nbits']} | k {report['k']} | threads {report['threads']} | {m.get('cpu')} "
             f"({m.get('cpu_count')} cores) | OPENBLAS_CORETYPE={m.get('env', {}).get('OPENBLAS_CORETYPE')} | "
             f"load {m.get('loadavg_at_start')} -> {m.get('loadavg_1_5_15')}", "",
             f"Command: `{report['command']}`", "",
             "nDCG@k against the qrels: of the plaidx index (default search) and of exact MaxSim over the pooled "
             "float vectors (the pooling's own loss). recall: plaidx top-k against that exact top-k. Size: the "
             "index folder (p50: one query per call on a shared, busy machine: indicative only).", "",
             "| pool factor | tokens | tokens/doc | index MiB | size vs 1 | bytes/token | nDCG@k plaidx | nDCG@k exact "
             "(pooled) | recall vs exact | p50 ms | pooling s | build s | nDCG@k with int8 tier | recall vs exact, "
             "tier | index MiB with tier |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pool_factor']} | {r['tokens']:,} | {r['mean_tokens_per_doc']:.1f} "
                     f"| {r['index_bytes'] / 2**20:.1f} | {r['index_bytes'] / base['index_bytes']:.2f} "
                     f"| {r['bytes_per_token']:.1f} | {be._f(r['ndcg_at_k'], '{:.4f}')} "
                     f"| {be._f(r['ndcg_at_k_exact_pooled'], '{:.4f}')} | {r['recall_vs_exact_pooled']:.3f} "
                     f"| {r['p50_ms']:.2f} | {r['pool_s']} | {r['build_s']} "
                     f"| {be._f(r.get('ndcg_at_k_tier'), '{:.4f}')} | {be._f(r.get('recall_vs_exact_pooled_tier'), '{:.3f}')} "
                     f"| {be._f(r['index_bytes_tier'] / 2**20 if r.get('index_bytes_tier') else None)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--collection", default=None, help="a cached collection folder (default: encode the dataset)")
    ap.add_argument("--factors", default="1,2,3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-vectors", default="int8", help="also build with this rerank tier ('' for none)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    git = be.git_info()
    load_start = list(os.getloadavg())
    ns = argparse.Namespace(dataset=args.dataset, collection=args.collection, threads=args.threads)
    coll = be.get_collection(ns)
    work = CACHE_DIR / "runs" / f"pooling_{args.dataset}"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in [int(x) for x in args.factors.split(",")]:
        rows.append(run_factor(coll, f, args, work))
        be.log(f"pool_factor {f}: {rows[-1]}")
    report = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": git,
              "nbits": args.nbits, "k": args.k, "threads": args.threads,
              "command": " ".join([*([f"PLAIDX_DATA={os.environ['PLAIDX_DATA']}"] if "PLAIDX_DATA" in os.environ else []),
                                   ".venv/bin/python", "benchmarks/bench_pooling.py", *(argv or sys.argv[1:])]),
              "collection": {"dataset": args.dataset, "path": str(coll.path), "n_docs": coll.n_docs,
                             "n_tokens": coll.n_tokens, "dim": coll.dim, "nq": int(len(coll.queries)),
                             "encoder": coll.meta.get("encoder")},
              "machine": dict(be.machine_info(args.threads), loadavg_at_start=load_start), "rows": rows}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"pooling_{args.dataset}.json").write_text(json.dumps(report, indent=1, default=float))
    (RESULTS_DIR / f"pooling_{args.dataset}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
