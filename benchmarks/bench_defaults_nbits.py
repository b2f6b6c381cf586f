"""The search defaults against the base table they widen, on the same index, per collection, nbits and k.

The plain search's defaults (``SearchParams.for_k``) widen a base table (``SearchParams.base``, Stanford
PLAID's shape: the defaults at every nbits and k before the widenings) by the index's bits a dimension
(from ``FINE_NBITS``) and by k (10 < k <= ``WIDE_K`` below 4M tokens twice the probes and candidates; above
``DEEP_K`` at least 2k candidates scored exactly). For each collection this measures, on its index at
``--nbits``:

- recall@k against exact MaxSim of the defaults (``{}``) and of the base table's values (passed explicitly);
- their single-query p50, the two settings alternating query by query (``sweep_family_params.timed_interleaved``),
  so that load on this shared machine hits both alike; the cost is the ratio of the two p50s;
- with ``--exhaustive``, the codes' ceiling (``exact=True``; minutes per query set at 10M tokens and up).

Collections: the families and real sets of ``--collections`` (1M-token families; their index is built at
``--nbits`` into ``results/cache/runs/<name>_<docs>_d<dim>/plaidx_nb<nbits>_t2/index`` when missing) and
stored indexes given as ``--index NAME=RUN --collection-dir DIR`` (as in ``bench_ab.py``).

    nice -n 5 .venv/bin/python benchmarks/bench_defaults_nbits.py --nbits 4 --exhaustive \\
        --index synthetic_1m=synthetic_10000_d128_values_dtypefloat16/plaidx_nb4_t2 \\
        --collection-dir synthetic_n10000_d128_q100_s0_values_dtypefloat16

Writes ``results/defaults_nbits<nbits>_<tag>.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families  # noqa: E402
from bench_ab import indexes  # noqa: E402
from bench_engine import write_stamped_report  # noqa: E402
from bench_families import REAL  # noqa: E402
from collection import recall_at_k  # noqa: E402
from sweep_family_params import timed_interleaved  # noqa: E402

import plaidx  # noqa: E402
from plaidx.engine.params import SearchParams  # noqa: E402

KNOBS = ("nprobe", "centroid_score_threshold", "ndocs", "n_exact")


def measure(index, queries: np.ndarray, truth: np.ndarray, k: int, args) -> dict:
    """Both settings' recall@k (one batched call each) and single-query p50s, interleaved; the ceiling if asked."""
    before = SearchParams.base(k, n_tokens=index.n_tokens)
    now = SearchParams().resolve(k, n_tokens=index.n_tokens, nbits=index.nbits)
    settings = {"now": {}, "before": {f: getattr(before, f) for f in KNOBS}}
    out = {"before": settings["before"], "now": {f: getattr(now, f) for f in KNOBS}}
    for label, s in settings.items():
        _, ids = index.search(queries, k=k, **s)
        out[f"{label}_recall"] = recall_at_k(ids, truth[:, :k], k)
    timed = timed_interleaved(index, queries, list(settings.values()), k, args.timed_queries)
    for label, t in zip(settings, timed):
        out[f"{label}_p50_ms"], out[f"{label}_cpu_p50_ms"] = t["p50_ms"], t["cpu_p50_ms"]
    out["p50_ratio"] = out["now_p50_ms"] / out["before_p50_ms"]
    out["cpu_ratio"] = out["now_cpu_p50_ms"] / out["before_cpu_p50_ms"]
    if args.exhaustive:
        _, ids = index.search(queries, k=k, exact=True)
        out["exhaustive_recall"] = recall_at_k(ids, truth[:, :k], k)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nbits", type=int, default=4)
    ap.add_argument("--collections", default=",".join(families.FAMILIES + REAL),
                    help="comma list of families and real sets ('' for none)")
    ap.add_argument("--ndocs", type=int, default=10_000, help="documents per family (~100 tokens each)")
    ap.add_argument("--index", action="append", default=[], metavar="NAME=RUN",
                    help="a stored index: its run folder under results/cache/runs (repeatable)")
    ap.add_argument("--collection-dir", action="append", default=[],
                    help="the collection folder under results/cache of each --index, same order")
    ap.add_argument("--k", default="10,100", help="comma list")
    ap.add_argument("--exhaustive", action="store_true", help="also the codes' ceiling (exact=True)")
    ap.add_argument("--timed-queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="families")
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.k.split(",")]
    if any(k < 1 for k in ks):
        raise SystemExit("--k: positive values")

    from threadpoolctl import threadpool_limits

    load_start, rows = list(os.getloadavg()), []
    with threadpool_limits(args.threads):
        for name, path, truth, queries, _ in indexes(args, max(ks)):
            index = plaidx.Index.open(path)
            if index.nbits != args.nbits:
                raise SystemExit(f"{name}: the index at {path} has nbits {index.nbits}, not --nbits {args.nbits}")
            index.warm()
            for k in ks:
                r = measure(index, queries, truth, k, args)
                rows.append({"collection": name, "k": k, "n_tokens": int(index.n_tokens), "nlist": int(index.nlist),
                             "nq": int(len(queries)), **r})
                print(f"[defaults {time.strftime('%H:%M:%S')}] {name} k {k}: recall {r['before_recall']:.3f} -> "
                      f"{r['now_recall']:.3f}, p50 {r['before_p50_ms']:.2f} -> {r['now_p50_ms']:.2f} ms "
                      f"({r['p50_ratio']:.2f}x)", flush=True)
    write(args, rows, load_start)
    return 0


def write(args, rows: list[dict], load_start: list[float]) -> None:
    fmt = lambda s: "/".join(str(s[f]) for f in ("nprobe", "ndocs", "n_exact"))  # noqa: E731
    body = ["recall@k against exact MaxSim over the uncompressed embeddings (one batched call per setting). p50: "
            f"single-query wall ms over {args.timed_queries} queries, the two settings alternating query by query; "
            "ratio: the defaults' p50 over the base table's (wall; process CPU in brackets). Settings as "
            "nprobe/ndocs/n_exact, centroid_score_threshold the base table's in both (no centroid pruned; 0.4, 0.35 above k 100, until the release that dropped the pruned pass). "
            "The base table (`SearchParams.base`) was the default at every nbits and k before the nbits and k "
            "widenings.", "",
            "| collection | tokens | k | base table | recall | p50 ms | defaults | recall | p50 ms | gain | "
            "p50 ratio | exhaustive |", "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ex = f"{r['exhaustive_recall']:.3f}" if "exhaustive_recall" in r else "-"
        body.append(f"| {r['collection']} | {r['n_tokens']:,} | {r['k']} | {fmt(r['before'])} | {r['before_recall']:.3f} | "
                    f"{r['before_p50_ms']:.2f} | {fmt(r['now'])} | {r['now_recall']:.3f} | {r['now_p50_ms']:.2f} | "
                    f"{r['now_recall'] - r['before_recall']:+.3f} | {r['p50_ratio']:.2f} ({r['cpu_ratio']:.2f}) | {ex} |")
    write_stamped_report(f"defaults_nbits{args.nbits}_{args.tag}",
                         f"Search defaults at nbits {args.nbits} against the base table", body,
                         {"nbits": args.nbits, "rows": rows}, args.threads, load_start)


if __name__ == "__main__":
    sys.exit(main())
