"""k-means variants for the coarse quantizer: flat vs two-level, sample per centroid, on one collection.

For each variant the same documents are indexed (nbits 2, default nlist) and searched with the default
parameters; the k-means and build times, recall@10 against exact MaxSim over the uncompressed
embeddings (PLAID defaults and exhaustive over the index), and the single-query p50 are compared in one
run, so the ratios hold even on a noisy machine.

    .venv/bin/python benchmarks/bench_kmeans.py --ndocs 10000
    .venv/bin/python benchmarks/bench_kmeans.py --ndocs 1000000 --mean-len 32 --nq 100 \
        --variants flat-64,two-level-80 --seeds 0,1 --no-exhaustive      # 1M documents, two seeds each

Writes benchmarks/results/kmeans_synthetic_<ndocs>[_len<L>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402
from collection import RESULTS_DIR, exact_topk_cached, recall_at_k  # noqa: E402

import plaidx  # noqa: E402
import plaidx.engine.build as plaidx_index  # noqa: E402
from plaidx.engine import clustering  # noqa: E402


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return recall_at_k(ids, truth, truth.shape[1])


def run_variant(name: str, two_level: bool, per_centroid: int, refine, coll, truth, work: Path,
                seed: int = 0, exhaustive: bool = True) -> dict:
    """refine: False (none), True (the defaults) or (points per centroid, iterations) of the global pass."""
    kmeans_s = [0.0]

    def train(sample, nlist, niters, seed, verbose=False, method="auto"):
        t0 = time.perf_counter()
        saved = clustering.TWO_LEVEL_MIN_NLIST, clustering.REFINE_PER_CENTROID, clustering.REFINE_ITERS
        clustering.TWO_LEVEL_MIN_NLIST = saved[0] if two_level else 1 << 30
        clustering.REFINE_PER_CENTROID = saved[1] if refine else 0
        if isinstance(refine, tuple):
            clustering.REFINE_PER_CENTROID, clustering.REFINE_ITERS = refine
        try:
            return clustering.train_centroids(sample, nlist, niters, seed)
        finally:
            clustering.TWO_LEVEL_MIN_NLIST, clustering.REFINE_PER_CENTROID, clustering.REFINE_ITERS = saved
            kmeans_s[0] += time.perf_counter() - t0

    plaidx_index.train_centroids = train
    nlist = clustering.default_nlist(coll.n_tokens)
    path = work / name
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    sample = min(per_centroid * nlist, 1 << 20)  # the default sample's cap
    index = plaidx.Index.build(path, coll.iter_batches(), nbits=2, kmeans_sample=sample, seed=seed)
    build_s = time.perf_counter() - t0
    q = np.ascontiguousarray(coll.queries)
    _, ids = index.search(q, k=10)
    eids = index.search(q, k=10, exact=True)[1] if exhaustive else None
    lat = []
    for x in q[:150]:
        t1 = time.perf_counter()
        index.search(x, k=10)
        lat.append(1e3 * (time.perf_counter() - t1))
    counts = np.bincount(np.asarray(index._snap.a["codes"]), minlength=index.nlist)
    shutil.rmtree(path, ignore_errors=True)
    return {"variant": name, "two_level": two_level, "refine": refine, "sample_per_centroid": per_centroid,
            "nlist": index.nlist, "seed": seed, "sample": sample,
            "refine_per_centroid_iters": list(refine) if isinstance(refine, tuple) else None,
            "kmeans_s": kmeans_s[0], "build_s": build_s, "recall@10": recall(ids, truth),
            "exhaustive_recall@10": recall(eids, truth) if eids is not None else float("nan"),
            "p50_ms": float(np.median(lat)),
            "empty_cells": int((counts == 0).sum()), "cells_le_3_tokens": int((counts <= 3).sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--work", default="/tmp/plaidx-bench-kmeans")
    ap.add_argument("--mean-len", type=int, default=None, help="synthetic mean document length (default 100)")
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--variants", default=None, help="comma list of variant names (default: all)")
    ap.add_argument("--seeds", default="0", help="comma list of k-means seeds")
    ap.add_argument("--no-exhaustive", action="store_true", help="skip exact=True (slow at millions of docs)")
    args = ap.parse_args(argv)
    extra = {} if args.mean_len is None else {"mean_len": args.mean_len}
    coll = synthetic.ensure(n_docs=args.ndocs, nq=args.nq, **extra)
    _, truth = exact_topk_cached(coll, 10)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    variants = {"flat-40": (False, 40, False), "flat-64": (False, 64, False), "flat-80": (False, 80, False),
                "two-level-80-no-refine": (True, 80, False), "two-level-80": (True, 80, True),
                "two-level-120": (True, 120, True), "two-level-80-refine-full1": (True, 80, (80, 1)),
                "two-level-80-refine-full2": (True, 80, (80, 2)), "two-level-80-refine-40x2": (True, 80, (40, 2))}
    labels = {"two-level-80": "two-level-80 + refinement (default)", "two-level-120": "two-level-120 + refinement",
              "two-level-80-no-refine": "two-level-80, no refinement"}
    names = args.variants.split(",") if args.variants else ["flat-40", "flat-80", "two-level-80-no-refine",
                                                           "two-level-80", "two-level-120"]
    rows = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        for name in names:
            two, per, refine = variants[name]
            r = run_variant(name, two, per, refine, coll, truth, work, seed=seed, exhaustive=not args.no_exhaustive)
            r["variant"] = labels.get(name, name) + (f", seed {seed}" if args.seeds != "0" else "")
            rows.append(r)
            print(json.dumps(r), flush=True)
    report = {"collection": f"synthetic {args.ndocs} docs, {coll.n_tokens} tokens, d {coll.dim}, "
                            f"{len(coll.queries)} queries", "rows": rows,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    out = RESULTS_DIR / (f"kmeans_synthetic_{args.ndocs}" + (f"_len{args.mean_len}" if args.mean_len else ""))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [f"# k-means variants: {report['collection']}, nbits 2, default search parameters, k 10", "",
             f"One run, {report['date']}, 2 threads. Recall against exact MaxSim over the uncompressed embeddings.", "",
             "| variant | sample / centroid | k-means s | build s | recall@10 | exhaustive recall@10 | p50 ms | "
             "empty cells | cells <= 3 tokens |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['sample_per_centroid']} | {r['kmeans_s']:.1f} | {r['build_s']:.1f} | "
                     f"{r['recall@10']:.4f} | {r['exhaustive_recall@10']:.4f} | {r['p50_ms']:.2f} | "
                     f"{r['empty_cells']} | {r['cells_le_3_tokens']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
