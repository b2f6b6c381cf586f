"""Grid of PLAID search parameters on one built index: recall@10 for every setting, latency for the good ones.

The search defaults (plaidx/search.py, README "Search parameters") come from these grids: the fastest
setting whose recall@10 is within 0.005 of the best setting that scores at most 128 documents exactly.

    .venv/bin/python benchmarks/grid_search_params.py \
        --collection benchmarks/results/cache/synthetic_n10000_d128_q300_s0 \
        --index benchmarks/results/cache/runs/synthetic_10000_d128/plaidx_nb2_t2/index --name synthetic_10000

Recall is measured with one batched call per setting over every query; latency (p50 of single-query
calls with the default thread count) only for settings within 0.03 of the best recall, on a third of the
queries (every query when there are at most 150). Writes benchmarks/results/search_params_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection import RESULTS_DIR, exact_topk_cached, load_collection, recall_at_k  # noqa: E402

import plaidx  # noqa: E402

NPROBE = (1, 2, 3)
THRESHOLD = (0.4, 0.45, 0.5)
NDOCS = (128, 256, 512, 1024)
N_EXACT = (16, 32, 64, 128, 256)
MAX_EXACT_FOR_DEFAULT = 128


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collection", required=True, help="cached collection folder (values, offsets, queries)")
    ap.add_argument("--index", required=True, help="a plaidx index built over that collection")
    ap.add_argument("--name", required=True, help="output name: search_params_<name>.json/.md")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", default=",".join(map(str, NPROBE)), help="comma list")
    ap.add_argument("--threshold", default=",".join(map(str, THRESHOLD)), help="comma list")
    ap.add_argument("--ndocs", default=",".join(map(str, NDOCS)), help="comma list")
    ap.add_argument("--n-exact", default=",".join(map(str, N_EXACT)), help="comma list")
    ap.add_argument("--max-exact", type=int, default=MAX_EXACT_FOR_DEFAULT,
                    help="the choice only considers settings scoring at most this many documents exactly")
    ap.add_argument("--out-dir", default=str(RESULTS_DIR))
    ap.add_argument("--exact-scores", default="default",
                    help="comma list of SearchParams.exact_scores to grid over too (default: the default only)")
    ap.add_argument("--no-exhaustive", action="store_true",
                    help="skip the exhaustive search (minutes at 100M tokens); its recall is then not reported")
    args = ap.parse_args(argv)

    coll = load_collection(args.collection)
    _, gt = exact_topk_cached(coll, args.k)
    index = plaidx.Index.open(args.index)
    Q = np.ascontiguousarray(coll.queries)
    index.search(Q[0], k=args.k)  # warm-up: derives the inverted file
    exhaustive = None
    if not args.no_exhaustive:
        _, ids = index.search(Q, k=args.k, exact=True)
        exhaustive = float(recall_at_k(ids, gt, args.k))
    rows = []
    grid = [[int(x) for x in args.nprobe.split(",")], [float(x) for x in args.threshold.split(",")],
            [int(x) for x in args.ndocs.split(",")], [int(x) for x in args.n_exact.split(",")],
            [None if x == "default" else x for x in args.exact_scores.split(",")]]

    def params_of(r: dict) -> plaidx.SearchParams:
        return plaidx.SearchParams(r["nprobe"], r["centroid_score_threshold"], r["ndocs"], r["n_exact"],
                                   exact_scores=r["exact_scores"])

    for nprobe, thr, ndocs, n_exact, exact_scores in itertools.product(*grid):
        if n_exact > ndocs:
            continue
        r = dict(nprobe=nprobe, centroid_score_threshold=thr, ndocs=ndocs, n_exact=n_exact, exact_scores=exact_scores)
        _, ids = index.search(Q, k=args.k, params=params_of(r))
        rows.append({**r, "recall": float(recall_at_k(ids, gt, args.k)), "p50_ms": None})
    best = max(r["recall"] for r in rows)
    for r in rows:
        if r["recall"] < best - 0.03:
            continue
        p = params_of(r)
        times = []
        for i in range(0, len(Q), 3 if len(Q) > 150 else 1):
            t0 = time.perf_counter()
            index.search(Q[i], k=args.k, params=p)
            times.append(time.perf_counter() - t0)
        r["p50_ms"] = float(np.median(times) * 1e3)
    eligible = [r for r in rows if r["n_exact"] <= args.max_exact]
    target = max(r["recall"] for r in eligible) - 0.005
    timed = [r for r in eligible if r["p50_ms"] is not None and r["recall"] >= target]
    choice = min(timed, key=lambda r: r["p50_ms"])
    report = {"collection": str(coll.path), "index": str(args.index), "k": args.k, "n_queries": len(Q),
              "n_docs": coll.n_docs, "n_tokens": coll.n_tokens, "dim": coll.dim, "exhaustive_recall": exhaustive,
              "load_average": os.getloadavg(), "plaidx": plaidx.build_info(), "rows": rows, "choice": choice,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(args.out_dir)
    (out / f"search_params_{args.name}.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Search-parameter grid: {args.name} ({coll.n_docs:,} docs, {coll.n_tokens:,} tokens, d {coll.dim})", "",
             f"{report['date']} | k {args.k} | {len(Q)} queries | load average {tuple(round(x, 2) for x in report['load_average'])}"
             + (f" | exhaustive recall@{args.k} over the index: {exhaustive:.3f}" if exhaustive is not None else
                "") + f" | plaidx kernels int8_amx {report['plaidx'].get('int8_amx')}, adc "
             f"{report['plaidx'].get('adc_copy')}",
             "",
             f"Choice (fastest within 0.005 of the best recall with n_exact <= {args.max_exact}): "
             f"nprobe {choice['nprobe']}, threshold {choice['centroid_score_threshold']}, ndocs {choice['ndocs']}, "
             f"n_exact {choice['n_exact']}, exact_scores {choice['exact_scores'] or 'default'}: recall "
             f"{choice['recall']:.3f}, p50 {choice['p50_ms']:.2f} ms", "",
             "| nprobe | threshold | ndocs | n_exact | exact_scores | recall@k | p50 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["recall"], r["p50_ms"] or 1e9)):
        p50 = f"{r['p50_ms']:.2f}" if r["p50_ms"] is not None else "-"
        lines.append(f"| {r['nprobe']} | {r['centroid_score_threshold']} | {r['ndocs']} | {r['n_exact']} | "
                     f"{r['exact_scores'] or 'default'} | {r['recall']:.3f} | {p50} |")
    (out / f"search_params_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
