"""How crowded the exact ranking is near its k-th score, per collection: why recall@10 falls with size at a fixed codec.

recall@k against exact MaxSim counts a document as missed when the index's scores order it below one that the
exact scores put after it. How often that happens at a given score error depends on how far apart the exact
scores around the k-th are, and a larger collection of the same family puts more documents near each query's
k-th score. This reads each cached collection's exact top-100 (``gt_top100.npz``, written by the benchmarks that
measure recall) and reports, over its queries, the median gap between the k-th exact score and the (k+1)-th and
(2k)-th, relative to the k-th, and the median number of documents scoring at least 99% of the k-th score.

    .venv/bin/python benchmarks/score_density.py --collections synthetic_n10000_d128_q100_s0_values_dtypefloat16,\\
        synthetic_n100000_d128_q100_s0,synthetic_n1000000_d128_q100_s0_values_dtypefloat16 --tag synthetic

Writes ``results/score_density_<tag>.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import write_stamped_report  # noqa: E402
from collection import CACHE_DIR  # noqa: E402


def density(scores: np.ndarray, k: int) -> dict:
    """Medians over queries of the exact scores' spacing around the k-th (scores (nq, >= 2k), best first)."""
    if scores.shape[1] < 2 * k:
        raise SystemExit(f"the cached exact top-{scores.shape[1]} is too short for k {k}: ask for k <= "
                         f"{scores.shape[1] // 2}")
    kth = scores[:, k - 1].astype(np.float64)
    return {"kth_score": float(np.median(kth)),
            "gap_next": float(np.median((kth - scores[:, k]) / np.abs(kth))),
            "gap_2k": float(np.median((kth - scores[:, 2 * k - 1]) / np.abs(kth))),
            "within_1pct": float(np.median((scores >= (kth - 0.01 * np.abs(kth))[:, None]).sum(axis=1))),
            "queries": int(len(kth))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collections", required=True, help="comma list of cached collection folders")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tag", required=True, help="output name: results/score_density_<tag>.json/.md")
    args = ap.parse_args(argv)
    load_start = list(os.getloadavg())
    rows = []
    for name in args.collections.split(","):
        folder = CACHE_DIR / name
        gt, meta = folder / "gt_top100.npz", folder / "meta.json"
        if not gt.exists():
            raise SystemExit(f"{name}: no gt_top100.npz in {folder}; a benchmark that measures recall on it writes it")
        info = json.loads(meta.read_text()) if meta.exists() else {}
        row = {"collection": name, "n_docs": info.get("n_docs"), "n_tokens": info.get("n_tokens"),
               **density(np.load(gt)["scores"], args.k)}
        rows.append(row)
        print(f"[density] {row}", flush=True)
    k = args.k
    body = [f"Over each collection's queries, medians of: the {k}-th exact MaxSim score; its gap to the {k + 1}-th "
            f"and to the {2 * k}-th score, relative to it; and how many documents score at least 99% of it "
            f"(the top {k} included; at most the 100 cached).", "",
            f"| collection | documents | tokens | {k}-th score | gap to {k + 1}-th | gap to {2 * k}-th | "
            ">= 99% of it | queries |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tokens = f"{r['n_tokens']:,}" if r["n_tokens"] else "?"
        docs = f"{r['n_docs']:,}" if r["n_docs"] else "?"
        body.append(f"| {r['collection']} | {docs} | {tokens} | {r['kth_score']:.2f} | {r['gap_next']:.4%} | "
                    f"{r['gap_2k']:.3%} | {r['within_1pct']:.0f} | {r['queries']} |")
    write_stamped_report(f"score_density_{args.tag}", "How crowded the exact ranking is near the k-th score", body,
                         {"rows": rows, "k": k}, 1, load_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
