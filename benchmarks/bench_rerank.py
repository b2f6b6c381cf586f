"""Rerank tier benchmark: recall@10 against exact MaxSim and latency with kept vectors, side by side with PLAID.

One run builds a plaidx index with ``keep_vectors`` (int8 by default) and searches it with the tier off
(``rerank=0``: the very same codes and pipeline as an index without the tier) and with 128..1024 of the
centroid stage's best candidates scored by their kept vectors (the tier's other defaults: nprobe 8, ndocs
4096 at k 10), plus both exhaustive searches (the codec's ceiling and the kept vectors'). Stanford PLAID runs
in the same invocation on the same embeddings (its defaults and a wide setting). It also measures which
int8 scale serves the tier better: one scale per token or one per dimension (re-scoring each query's
exact top-100 with each, so only the quantization differs).

    .venv/bin/python benchmarks/bench_rerank.py --dataset synthetic --ndocs 10000 --peers plaid
    .venv/bin/python benchmarks/bench_rerank.py --family heavytail --ndocs 10000 --peers plaid
    .venv/bin/python benchmarks/bench_rerank.py --dataset scifact --peers plaid
    .venv/bin/python benchmarks/bench_rerank.py --family manytopics --ndocs 10000 --by-topic --coverage 4,8,16,32

``--by-topic`` (families only) splits recall@k into the exact neighbours that share a topic with the document each
query was drawn from and the others, whose MaxSim is a sum of chance similarities; ``--coverage`` adds what the
first stage reaches at each nprobe.

Writes benchmarks/results/rerank_<dataset>_<ndocs>[_<tag>].json and .md. Engines run in subprocesses
(``run_child`` of bench_engine.py) with the same thread count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_engine as be  # noqa: E402
import procstats  # noqa: E402
from collection import (  # noqa: E402
    CACHE_DIR,
    RESULTS_DIR,
    Collection,
    exact_topk_cached,
    load_collection,
    split_recall_at_k,
    tie_recall_at_k,
)

RERANKS = (0, 128, 256, 512, 1024)
PLAID_CONFIGS = "1,0.5,256;4,0.4,4096"  # its k <= 10 defaults; the wide setting of issue 15


# ------------------------------------------------------------------------------------------ child
def child_build(args) -> dict:
    import plaidx

    coll = load_collection(args.coll)
    rss0 = procstats.rss_mb()
    t0, c0 = time.perf_counter(), procstats.cpu_s()
    index = plaidx.Index.build(args.index, coll.lazy_docs(), nbits=args.nbits, seed=args.seed,
                               keep_vectors=args.keep or None)
    build_s, cpu_s = time.perf_counter() - t0, procstats.cpu_s() - c0
    m = index._snap.manifest["arrays"]
    tier = sum((Path(args.index) / m[n]["file"]).stat().st_size for n in ("vectors", "vector_scales") if n in m)
    return {"engine": "plaidx", "phase": "build", "build_s": round(build_s, 2), "build_cpu_s": round(cpu_s, 2),
            "rss_before_build_mb": round(rss0, 1), "peak_rss_mb": round(procstats.peak_rss_mb(), 1),
            "index_bytes": procstats.dir_bytes(Path(args.index)), "tier_bytes": tier, "nlist": index.nlist,
            "n_tokens": coll.n_tokens, "keep_vectors": index.keep_vectors}


def child_search(args) -> dict:
    import run_plaidx as rp

    import plaidx

    coll = load_collection(args.coll)
    queries = np.ascontiguousarray(coll.queries, dtype=np.float32)
    rss0 = procstats.rss_mb()
    index = plaidx.Index.open(args.index)
    rss_open = procstats.rss_mb()
    runs = []
    for params in json.loads(args.grid):
        runs.append(_batched_run(index, queries, args.k, params) if params.get("exact")
                    else rp._search_run(index, queries, args.k, params, 10))
        r = runs[-1]
        print(f"[plaidx] {params}: p50 {r['latency_ms']['p50']:.2f} ms", flush=True)
    coverage = probe_coverage(index, queries, exact_topk_cached(coll, args.k, threads=args.threads)[1],
                              [int(x) for x in args.coverage.split(",") if x]) if args.coverage else None
    return {"engine": "plaidx", "phase": "search", "rss_before_open_mb": round(rss0, 1),
            "rss_after_open_mb": round(rss_open, 1), "peak_rss_mb": round(procstats.peak_rss_mb(), 1), "runs": runs,
            "paired": _paired(index, queries, args.k, json.loads(args.paired)), "coverage": coverage}


def probe_coverage(index, queries: np.ndarray, truth: np.ndarray, nprobes: list[int]) -> list[dict]:
    """What the first stage can hand on at each nprobe: the share of all documents with a token in a probed cell
    (each query token's ``nprobe`` best cells by float32 score), and the share of each query's exact top-k among
    them, the most any later stage can recall. Documents are the index's positions, built in collection order."""
    snap = index._snap
    cents = np.asarray(snap.codec.centroids, np.float32)
    codes = np.asarray(snap.a["codes"]).astype(np.intp)
    offsets = np.asarray(snap.a["doc_offsets"])
    token_doc = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    widest = min(max(nprobes), len(cents))
    reached = np.zeros((len(nprobes), len(queries)))
    found = np.zeros_like(reached)
    for i, (q, t) in enumerate(zip(queries, truth)):
        sc = q @ cents.T  # each query's cell scores once, its cells ranked once for the widest nprobe
        top = np.argpartition(-sc, widest - 1, axis=1)[:, :widest]
        ranked = np.take_along_axis(top, np.argsort(-np.take_along_axis(sc, top, axis=1), axis=1), axis=1)
        for j, nprobe in enumerate(nprobes):
            cells = np.zeros(len(cents), bool)
            cells[ranked[:, :nprobe]] = True
            docs = np.zeros(len(offsets) - 1, bool)
            docs[token_doc[cells[codes]]] = True
            reached[j, i] = docs.mean()
            found[j, i] = docs[t[t >= 0]].mean()
    return [{"nprobe": nprobe, "documents_reached": float(reached[j].mean()), "truth_reached": float(found[j].mean())}
            for j, nprobe in enumerate(nprobes)]


def _paired(index, queries: np.ndarray, k: int, configs: list[dict]) -> dict:
    """Latency of ``configs`` interleaved: every query runs each config in turn, so on a busy, shared
    machine all of them meet the same load (the grid's rows run minutes apart)."""
    for i in range(min(10, len(queries))):
        for c in configs:
            index.search(queries[i:i + 1], k=k, **c)
    wall = np.zeros((len(configs), len(queries)))
    cpu = np.zeros_like(wall)
    for i in range(len(queries)):
        for j, c in enumerate(configs):
            t, p = time.perf_counter(), time.process_time()
            index.search(queries[i:i + 1], k=k, **c)
            wall[j, i], cpu[j, i] = time.perf_counter() - t, time.process_time() - p
    return {"configs": configs, "p50_ms": (np.median(wall, axis=1) * 1e3).tolist(),
            "cpu_p50_ms": (np.median(cpu, axis=1) * 1e3).tolist(),
            "median_ratio_to_first": np.median(wall / wall[:1], axis=1).tolist(),
            "median_cpu_ratio_to_first": np.median(cpu / np.maximum(cpu[:1], 1e-9), axis=1).tolist()}


def _batched_run(index, queries: np.ndarray, k: int, params: dict) -> dict:
    """An exhaustive search (seconds per query at 1M tokens): all queries in one call, the mean time per
    query reported as its latency (marked ``batched_only``)."""
    t, c = time.perf_counter(), time.process_time()
    _s, ids = index.search(queries, k=k, **params)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    per = wall / len(queries) * 1e3
    return {"params": params, "batched_only": True,
            "latency_ms": {"mean": per, "p50": per, "p95": per, "max": per},
            "cpu_ms": {"mean": cpu / len(queries) * 1e3, "p50": cpu / len(queries) * 1e3},
            "qps_batched": len(queries) / wall, "batch_s": wall, "ids": np.asarray(ids).tolist()}


# ------------------------------------------------------------------------------- int8 scale study
def scale_study(coll: Collection, truth100: np.ndarray, k: int, n_queries: int = 100) -> dict:
    """Re-score each query's exact top-100 with float32, int8 per-token and int8 per-dimension vectors.

    Returns recall@k of each against the exact top-k, and the mean absolute MaxSim error per document.
    """
    from plaidx.engine.vectors import quantize_int8

    offs = coll.offsets
    peak = np.zeros(coll.dim, np.float32)
    for lo in range(0, coll.n_tokens, 1 << 18):
        peak = np.maximum(peak, np.abs(coll.read_rows(lo, min(coll.n_tokens, lo + (1 << 18)))).max(axis=0))
    dim_scale = np.maximum(peak, 1e-30) / 127

    def per_dim(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x / dim_scale), -127, 127) * dim_scale

    def per_token(x: np.ndarray) -> np.ndarray:
        q, s = quantize_int8(x)
        return q.astype(np.float32) * s[:, None]

    out = {}
    nq = min(n_queries, len(coll.queries))
    for name, fn in (("float32", None), ("int8 per token", per_token), ("int8 per dimension", per_dim)):
        hits, err = [], []
        for qi in range(nq):
            q = coll.queries[qi]
            cand = truth100[qi]
            exact, approx = [], []
            for d in cand:
                x = np.asarray(coll.values[offs[d]:offs[d + 1]], dtype=np.float32)
                exact.append(float((q @ x.T).max(axis=1).sum()))
                approx.append(exact[-1] if fn is None else float((q @ fn(x).T).max(axis=1).sum()))
            order = np.lexsort((cand, -np.array(approx)))[:k]
            hits.append(len(set(cand[order].tolist()) & set(truth100[qi][:k].tolist())) / k)
            err.append(np.mean(np.abs(np.array(approx) - np.array(exact))))
        out[name] = {"recall_at_k": float(np.mean(hits)), "mean_abs_score_error": float(np.mean(err))}
    out["queries"] = nq
    return out


# ------------------------------------------------------------------------------------------ report
def grid(reranks: list[int], keep: str, exhaustive: bool = True) -> list[dict]:
    """The plaidx settings of a run; ``exhaustive``: with the two exhaustive searches (17 and 4 minutes at 100M
    tokens)."""
    g: list[dict] = [{}]  # plaidx defaults (the default rerank when the index keeps vectors)
    g += [{"rerank": r} for r in reranks]
    if exhaustive:
        g += [{"exact": True, "rerank": 0}]  # the codec's ceiling
        if keep:
            g += [{"exact": True}]  # exhaustive over the kept vectors
    return g


def markdown(report: dict) -> str:
    c, m = report["collection"], report["machine"]
    base = next((r for r in report["rows"] if r["engine"].startswith("plaidx") and (r.get("params") or {}) == {"rerank": 0}),
                None)
    base_p50 = base.get("p50_ms") if base else None
    lines = [f"# Rerank tier: {c['dataset']} ({c['n_docs']:,} docs, {c['n_tokens']:,} tokens, d {c['dim']})", "",
             f"{report['created']} | git {report['git'].get('commit', '?')[:10]}"
             f"{' (local changes)' if report['git'].get('plaidx_dirty') else ''} | k {report['k']} | nbits "
             f"{report['nbits']} | threads {report['threads']} | {c['nq']} queries | {m.get('cpu')} "
             f"({m.get('cpu_count')} cores) | OPENBLAS_CORETYPE={m.get('env', {}).get('OPENBLAS_CORETYPE')} | "
             f"load {m.get('loadavg_at_start')} -> {m.get('loadavg_1_5_15')}", "",
             f"Command: `{report['command']}`", "",
             "recall@k against exact MaxSim over the float32 embeddings; latency one query per call after "
             "warm-up; p50 ratio: to the same plaidx index searched with `rerank=0` (its codes and pipeline "
             "are those of an index built without the tier). bytes/token: the whole index folder; tier: the "
             "kept vectors' files alone. Exhaustive rows (`exact`) run all queries in one call: their latency "
             "is the mean time per query of that call." + (
                 f" Ties within {report['tie_eps']:.0%}: recall@k counting a found document as a hit when its exact "
                 f"MaxSim is within {report['tie_eps']:.0%} of the exact k-th score (ann-benchmarks' epsilon recall)."
                 if report.get("tie_eps") else ""), "",
             f"| engine | search params | recall@k | ties within {report.get('tie_eps') or 0:.0%} | nDCG@k | p50 ms "
             "| p95 ms | p50 ratio | CPU ms p50 | build s | RSS after open MiB | bytes/token | tier bytes/token |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r.get("recall_at_k") is None:
            lines.append(f"| {r['engine']} | {json.dumps(r.get('params'))} | FAILED: {r.get('error')} |" + " |" * 10)
            continue
        ratio = r["p50_ms"] / base_p50 if (base_p50 and r["engine"].startswith("plaidx")) else None
        tier = r.get("tier_bytes")
        lines.append(f"| {r['engine']} | {json.dumps(r['params']) if r['params'] else 'defaults'} "
                     f"| {r['recall_at_k']:.3f} | {be._f(r.get('tie_recall_at_k'), '{:.3f}')} "
                     f"| {be._f(r.get('ndcg_at_k'), '{:.3f}')} | {r['p50_ms']:.2f} "
                     f"| {r['p95_ms']:.2f} | {be._f(ratio, '{:.2f}')} | {be._f(r.get('cpu_p50_ms'), '{:.2f}')} "
                     f"| {be._f(r['build_s'])} | {be._f(r['rss_after_open_mb'], '{:.0f}')} "
                     f"| {be._f(r['bytes_per_token'])} | {be._f(tier / c['n_tokens'] if tier else None)} |")
    pr = ((report.get("engines") or {}).get("plaidx") or {}).get("paired")
    if pr:
        lines += ["", "Interleaved latency (every query runs each setting in turn, so all meet the same load; "
                      "ratios are medians of per-query ratios to the first setting):", "",
                  "| plaidx search params | p50 ms | CPU ms p50 | p50 ratio | CPU ratio |", "|---|---|---|---|---|"]
        for c, p50, cp, r, cr in zip(pr["configs"], pr["p50_ms"], pr["cpu_p50_ms"], pr["median_ratio_to_first"],
                                     pr["median_cpu_ratio_to_first"]):
            lines.append(f"| {json.dumps(c) if c else 'defaults'} | {p50:.2f} | {cp:.2f} | {r:.2f} | {cr:.2f} |")
    cov = ((report.get("engines") or {}).get("plaidx") or {}).get("coverage")
    if cov:
        lines += ["", "What the first stage reaches (`--coverage`): the share of all documents with a token in a probed cell, "
                      "and of each query's exact top-k among them (the most any later stage, the tier included, can "
                      "recall at that nprobe):", "", "| nprobe | documents reached | exact top-k reached |",
                  "|---|---|---|"]
        lines += [f"| {c['nprobe']} | {c['documents_reached']:.3f} | {c['truth_reached']:.3f} |" for c in cov]
    t = report.get("topics")
    if t:
        lines += ["", f"By topic (`--by-topic`): {t['truth_sharing_topic']:.1%} of the queries' exact top-k neighbours share "
                      "a topic with the document the query was drawn from (a median of "
                      f"{t['related_docs_median']:,.0f} documents in the collection do, that document included); the "
                      "others score by chance similarities alone. recall@k of each group:", "",
                  "| engine | search params | recall@k | neighbours sharing a topic | the others |", "|---|---|---|---|---|"]
        lines += [f"| {r['engine']} | {json.dumps(r['params']) if r['params'] else 'defaults'} | {r['recall_at_k']:.3f} "
                  f"| {be._f(r.get('recall_sharing_topic'), '{:.3f}')} | {be._f(r.get('recall_no_topic'), '{:.3f}')} |"
                  for r in report["rows"] if r.get("recall_at_k") is not None]
    s = report.get("scale_study")
    if s:
        lines += ["", f"int8 scale choice ({s['queries']} queries, each re-scoring its exact top-100 with the "
                      "quantized vectors):", "", "| vectors | recall@k | mean abs MaxSim error |", "|---|---|---|"]
        lines += [f"| {n} | {v['recall_at_k']:.3f} | {v['mean_abs_score_error']:.5f} |"
                  for n, v in s.items() if isinstance(v, dict)]
    for name, why in report["skipped"].items():
        lines.append(f"\nSkipped {name}: {why}")
    lines += ["", "BLAS (harness): " + ", ".join(
        f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} x{b.get('num_threads')}"
        for b in m.get("blas_harness", []))]
    return "\n".join(lines) + "\n"


def by_topic(coll: Collection, truth: np.ndarray) -> tuple[dict, np.ndarray]:
    """Which of each query's exact top-k share a topic with its source document (``families.topic_share``), and a
    summary: that share, and the median number of documents in the collection that share one."""
    import families

    share, related, _ = families.topic_share(coll, truth)
    return {"truth_sharing_topic": float(share[truth >= 0].mean()), "related_docs_median": float(np.median(related)),
            "related_docs_mean": float(np.mean(related))}, share


def get_collection(args) -> Collection:
    if args.family:
        import families

        return families.ensure(args.family, n_docs=args.ndocs, dim=args.dim, nq=args.nq, seed=args.seed)
    return be.get_collection(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", nargs="?", default="run", choices=["run", "child-build", "child-search"])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--family", default=None, help="a collection family of benchmarks/families.py")
    ap.add_argument("--collection", default=None)
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=None, help="token dimension (default: the family's)")
    ap.add_argument("--mean-len", type=int, default=None)
    ap.add_argument("--synthetic", action="append", metavar="KEY=VALUE")
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--keep", default="int8", help="keep_vectors of the plaidx index ('' for none)")
    ap.add_argument("--reranks", default=",".join(map(str, RERANKS)))
    ap.add_argument("--extra", default="[]", help="JSON list of more plaidx search keyword sets")
    ap.add_argument("--paired", default='[{"rerank": 0}, {}]',
                    help="JSON list of plaidx settings timed interleaved, query by query (first: the reference)")
    ap.add_argument("--peers", default="plaid", help="comma list, or 'none'")
    ap.add_argument("--plaid-configs", default=PLAID_CONFIGS)
    ap.add_argument("--reuse", action="store_true", help="reuse earlier builds (search re-runs)")
    ap.add_argument("--coverage", default="", help="comma list of nprobe: documents and exact top-k the first "
                                                   "stage reaches at each")
    ap.add_argument("--by-topic", action="store_true",
                    help="with --family: split recall@k into the exact neighbours that share a topic with the "
                         "document each query was drawn from and the others")
    ap.add_argument("--no-scale-study", action="store_true")
    ap.add_argument("--no-exhaustive", action="store_true",
                    help="leave out the exhaustive searches over the codes and the kept vectors")
    ap.add_argument("--tie-eps", type=float, default=0.01,
                    help="also report recall@k counting as found any document within this fraction of the exact k-th "
                         "score (0: not reported)")
    ap.add_argument("--timeout", type=int, default=4 * 3600)
    ap.add_argument("--tag", default="")
    ap.add_argument("--coll"), ap.add_argument("--index"), ap.add_argument("--out"), ap.add_argument("--grid")
    args = ap.parse_args(argv)
    if args.by_topic and not args.family:
        ap.error("--by-topic needs --family: topics are known only for the collections of benchmarks/families.py")
    if args.phase != "run":
        res = child_build(args) if args.phase == "child-build" else child_search(args)
        Path(args.out).write_text(json.dumps(res))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    git = be.git_info()
    load_start = list(os.getloadavg())
    coll = get_collection(args)
    name = args.family and f"family_{args.family}" or args.dataset
    label = f"{name}_{coll.n_docs}" + (f"_{args.tag}" if args.tag else "")
    truth_scores, truth = exact_topk_cached(coll, args.k, threads=args.threads)
    runs_root = CACHE_DIR / "runs" / f"rerank_{label}_d{coll.dim}"
    work = runs_root / f"plaidx_{args.keep or 'none'}_nb{args.nbits}_t{args.threads}"
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index"
    io = ["--coll", str(coll.path), "--index", str(index), "--threads", str(args.threads), "--k", str(args.k)]
    me = [sys.executable, str(Path(__file__).resolve())]
    results, skipped = {}, {}
    build = json.loads((work / "build.json").read_text()) if args.reuse and (work / "build.json").exists() else None
    if build is None or "error" in build:
        import shutil

        shutil.rmtree(index, ignore_errors=True)
        be.log(f"plaidx: building with keep_vectors={args.keep or None} ({coll.n_tokens:,} tokens)")
        build = be.run_child(me + ["child-build", *io, "--nbits", str(args.nbits), "--seed", str(args.seed),
                                   "--keep", args.keep, "--out", str(work / "build.out.json")],
                             work / "build.out.json", work / "build.log", args.threads, args.timeout, 0)
        (work / "build.json").write_text(json.dumps(build))
    g = grid([int(x) for x in args.reranks.split(",") if x], args.keep, not args.no_exhaustive) + json.loads(args.extra)
    search = be.run_child(me + ["child-search", *io, "--grid", json.dumps(g), "--paired", args.paired,
                                "--coverage", args.coverage, "--out", str(work / "search.json")],
                          work / "search.json", work / "search.log", args.threads, args.timeout, 0)
    results["plaidx"] = {"build": build, "search": search}
    ns = argparse.Namespace(threads=args.threads, nbits=args.nbits, kmeans_niters=4, seed=args.seed, nlist=None,
                            k=args.k, plaid_configs=args.plaid_configs, fastplaid_configs=None, reuse=args.reuse,
                            timeout=args.timeout, nice=0, plaidx_stub=False)
    for peer in [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]:
        ok, why = be.peer_available(peer)
        if not ok:
            skipped[peer] = why
            continue
        results[peer] = be.run_engine(peer, ns, coll, runs_root / f"{peer}_nb{args.nbits}_t{args.threads}")
    topics, share = by_topic(coll, truth) if args.by_topic else (None, None)
    rows = []
    for eng, res in results.items():
        runs = (res.get("search") or {}).get("runs") or [{}]
        for run, row in zip(runs, be.summarise(eng, res, coll, truth, args.k)):
            row["tier_bytes"] = (res.get("build") or {}).get("tier_bytes")
            if "ids" in run and args.tie_eps:
                row["tie_recall_at_k"] = tie_recall_at_k(np.asarray(run["ids"], np.int64), coll, truth_scores[:, -1],
                                                         args.k, args.tie_eps)
            if "ids" in run and share is not None:
                row["recall_sharing_topic"], row["recall_no_topic"] = split_recall_at_k(
                    np.asarray(run["ids"], np.int64), truth, share, args.k)
            rows.append(row)
    study = None if args.no_scale_study else scale_study(coll, exact_topk_cached(coll, 100, threads=args.threads)[1],
                                                         args.k)
    report = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "k": args.k,
              "nbits": args.nbits, "threads": args.threads, "tie_eps": args.tie_eps, "git": git, "keep_vectors": args.keep or None,
              "command": " ".join([".venv/bin/python", "benchmarks/bench_rerank.py", *(argv or sys.argv[1:])]),
              "collection": {"dataset": name, "path": str(coll.path), "n_docs": coll.n_docs,
                             "n_tokens": coll.n_tokens, "dim": coll.dim, "nq": int(len(coll.queries))},
              "machine": dict(be.machine_info(args.threads), loadavg_at_start=load_start), "skipped": skipped,
              "rows": rows, "scale_study": study, "topics": topics,
              "engines": {"plaidx": {"paired": (results["plaidx"].get("search") or {}).get("paired"),
                                     "coverage": (results["plaidx"].get("search") or {}).get("coverage")}}}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"rerank_{label}.json").write_text(json.dumps(report, indent=1, default=float))
    (RESULTS_DIR / f"rerank_{label}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
