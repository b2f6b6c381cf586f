"""How well the search's middle stage ranks its candidates, and what a cheaper exact ranking would give.

Between the probes and the exact stage, PLAID ranks the candidates by centroid scores alone (stage 4: per query
token the best cell score among a document's tokens, summed), and only the best ``n_exact`` (or the tier's
``rerank``) are scored exactly. Where a cell's centroid stands for several topics (manytopics), that ranking
loses true neighbours before the exact stage sees them. This benchmark measures, for each collection, nprobe and
threshold, the share of each query's exact top-k found among the first N candidates when they are ranked

- by centroid scores (``centroids``: stage 4 as it runs today),
- by exact scores over the tokens whose cell passes the threshold, the others at their centroid score
  (``kept-cell exact``: a candidate ranking that decodes only those tokens; ``kept token share`` is the share of
  the candidates' tokens it scores, its cost against a full exact pass),
- by exact scores over the decompressed tokens (``exact``: what the exact stage itself would rank),

and the share reached by the probes at all. Pure numpy over the index's own codes (nothing timed). Queries: the
first ``--queries`` of each collection.

    .venv/bin/python benchmarks/stage_ranking.py --collections lowrank,manytopics --nprobe 2,8,32 --threshold 0.4

Writes ``results/stage_ranking_<tag>.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import indexes  # noqa: E402
from bench_engine import write_stamped_report  # noqa: E402

import plaidx  # noqa: E402

RANKINGS = ("centroids", "kept-cell exact", "exact")
CHUNK_TOKENS = 1 << 16


def candidate_scores(snap, q: np.ndarray, cand: np.ndarray, keep: np.ndarray, S: np.ndarray) -> dict:
    """The three scores of each candidate (ascending positions) for one query, and the kept token count."""
    a, offsets = snap.a, np.asarray(snap.a["doc_offsets"])
    out = {r: np.empty(len(cand), np.float32) for r in RANKINGS}
    kept = total = 0
    lo = 0
    while lo < len(cand):  # documents in chunks of about CHUNK_TOKENS tokens
        hi = lo + 1
        while hi < len(cand) and offsets[cand[hi]] - offsets[cand[lo]] < CHUNK_TOKENS:
            hi += 1
        docs = cand[lo:hi]
        tok = np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in docs])
        codes = np.asarray(a["codes"][tok]).astype(np.intp)
        exact = q @ snap.codec.decompress(np.asarray(a["codes"][tok]), np.asarray(a["residuals"][tok])).T
        cell = S[:, codes]
        mask = keep[codes]
        kept, total = kept + int(mask.sum()), total + len(tok)
        starts = np.concatenate([[0], np.cumsum(np.diff(offsets)[docs])[:-1]])
        for r, m in (("centroids", cell), ("kept-cell exact", np.where(mask[None, :], exact, cell)), ("exact", exact)):
            out[r][lo:hi] = np.maximum.reduceat(m, starts, axis=1).sum(axis=0)
        lo = hi
    return {**out, "kept": kept, "tokens": total}


def measure(index, queries: np.ndarray, truth: np.ndarray, nprobe: int, threshold: float, depths: list[int]) -> dict:
    snap = index._snap
    cents = np.asarray(snap.codec.centroids, np.float32)
    ivf, ivf_offsets = snap.ivf()
    k = truth.shape[1]
    reached, kept, tokens = [], 0, 0
    within = {r: [] for r in RANKINGS}
    for q, t in zip(queries, truth):
        S = q @ cents.T
        cells = np.unique(np.argpartition(-S, min(nprobe, len(cents)) - 1, axis=1)[:, :nprobe])
        cand = np.unique(np.concatenate([ivf[ivf_offsets[c]:ivf_offsets[c + 1]] for c in cells])).astype(np.int64)
        positions = set(snap.positions(t[t >= 0], live_only=False, what="truth").tolist())
        reached.append(len(positions & set(cand.tolist())) / k)
        sc = candidate_scores(snap, q, cand, S.max(axis=0) >= threshold, S)
        kept, tokens = kept + sc["kept"], tokens + sc["tokens"]
        for r in RANKINGS:
            order = cand[np.lexsort((cand, -sc[r]))]
            within[r].append([len(positions & set(order[:n].tolist())) / k for n in depths])
    return {"nprobe": nprobe, "threshold": threshold, "truth_reached": float(np.mean(reached)),
            "kept_token_share": kept / max(tokens, 1), "candidate_tokens_per_query": tokens / len(queries),
            "within": {r: dict(zip(map(str, depths), np.mean(within[r], axis=0).tolist())) for r in RANKINGS}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collections", default="fewtopics,neardup,lowrank,manytopics,heavytail,scifact,cranfield,cisi")
    ap.add_argument("--ndocs", type=int, default=10_000, help="documents per synthetic family")
    ap.add_argument("--nprobe", default="2,8,32", help="comma list")
    ap.add_argument("--threshold", default="0.4", help="comma list of cell-score thresholds (the default is 0.4)")
    ap.add_argument("--depths", default="10,128,512,1024", help="comma list of N: the first N candidates")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="families")
    args = ap.parse_args(argv)
    nprobes = [int(x) for x in args.nprobe.split(",")]
    thresholds = [float(x) for x in args.threshold.split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    if min(nprobes) < 1 or min(depths) < 1 or args.queries < 1 or args.k < 1:
        raise SystemExit("--nprobe, --depths, --queries and --k take positive numbers")
    load_start = list(os.getloadavg())
    found = SimpleNamespace(collections=args.collections, ndocs=args.ndocs, threads=args.threads, nbits=2, index=[],
                            collection_dir=[], filter=None)
    rows = []
    for bench in indexes(found, args.k):
        index = plaidx.Index.open(bench.path)
        n = min(args.queries, len(bench.queries))
        for nprobe in nprobes:
            for threshold in thresholds:
                row = {"collection": bench.name, "tokens": int(index.info()["tokens"]),
                       **measure(index, bench.queries[:n], bench.truth[:n, :args.k], nprobe, threshold, depths)}
                rows.append(row)
                print(f"[stage_ranking] {row}", flush=True)
    head = " | ".join(f"first {d}: {' / '.join(('centroid', 'kept-cell', 'exact'))}" for d in depths)
    body = [f"Share of each query's exact top-{args.k} among the first N candidates of the probes, ranked by centroid "
            "scores (stage 4 today), by exact scores over the tokens whose cell's best score reaches the threshold "
            "(the others at their centroid score), and by exact scores over every decompressed token; the default "
            f"nbits-2 index of each collection, its first {args.queries} queries. Kept token share: the share of the "
            "candidates' tokens the kept-cell ranking decodes.", "",
            f"| collection | nprobe | threshold | reached | kept token share | {head} |",
            "|---|---:|---:|---:|---:|" + "---|" * len(depths)]
    for r in rows:
        cells = " | ".join(" / ".join(f"{r['within'][g][str(d)]:.3f}" for g in RANKINGS) for d in depths)
        body.append(f"| {r['collection']} | {r['nprobe']} | {r['threshold']:g} | {r['truth_reached']:.3f} | "
                    f"{r['kept_token_share']:.3f} | {cells} |")
    write_stamped_report(f"stage_ranking_{args.tag}", "How the middle stage ranks the candidates", body,
                         {"rows": rows, "k": args.k, "queries": args.queries, "depths": depths}, args.threads,
                         load_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
