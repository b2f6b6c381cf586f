"""The pq residual codec (format 5) against the scalar one (formats 3-4) on the same centroids.

For each collection, nbits and seed, two indexes are built with plaidx's defaults and that seed (so the same
k-means, centroids and codes: only how each residual is coded differs), one per ``residual_codec``. Both
are searched with all queries: recall@10 against exact MaxSim over the uncompressed embeddings, at the
default search parameters and exhaustively (``exact=True``, the codec's ceiling); nDCG@10 on the real sets;
and single-query p50 of the default search, the two indexes interleaved query by query. Bytes per token
are the whole index folder's. The seed moves the k-means and the pq training, and with them recall@10 by a
few thousandths: ``--seeds 0,1,2`` reports each seed and the mean gain over them. ``--format2`` builds a third
index per row with the codec issue 15 measures against, format 2's: the scalar codec with PLAID's nlist rule
(16 * sqrt(tokens): 8192 centroids at 1M tokens) and an int8 centroid table, which today's engine still builds
below 2**18 tokens (``format2_codec``), so the pq codec's gain over it includes the doubled nlist that the
4-bit table pays for.

    .venv/bin/python benchmarks/bench_pq.py --collections fewtopics,heavytail,lowrank,manytopics,neardup
    .venv/bin/python benchmarks/bench_pq.py --collections cranfield,cisi,scifact --tag real --seeds 0,1,2

Writes ``results/pq_codec_<tag>.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import ndcg_at_k, write_stamped_report  # noqa: E402
from bench_families import with_truth  # noqa: E402
from collection import recall_at_k  # noqa: E402

import plaidx  # noqa: E402
from plaidx.engine import clustering, codec  # noqa: E402

CODECS = ("scalar", "pq")


@contextlib.contextmanager
def format2_codec():
    """Builds inside take format 2's codec at any size: PLAID's nlist rule and int8 centroid rows (what today's
    engine builds below ``codec.COMPACT_TABLE_MIN_TOKENS``), with the scalar residual codec passed by the caller."""
    saved = codec.COMPACT_TABLE_MIN_TOKENS, clustering.WIDE_NLIST_MIN_TOKENS
    codec.COMPACT_TABLE_MIN_TOKENS = clustering.WIDE_NLIST_MIN_TOKENS = 1 << 62
    try:
        yield
    finally:
        codec.COMPACT_TABLE_MIN_TOKENS, clustering.WIDE_NLIST_MIN_TOKENS = saved


def timed_pair(indexes: list, queries: np.ndarray, k: int, n_queries: int, threads: int, warmup: int = 5) -> list:
    """p50 ms of single-query default searches of each index, the indexes interleaved query by query."""
    for ix in indexes:
        for i in range(warmup):
            ix.search(queries[i], k=k, num_threads=threads)
    picks = range(0, len(queries), max(1, len(queries) // n_queries))
    wall = np.empty((len(indexes), len(picks)))
    for j, i in enumerate(picks):
        for n, ix in enumerate(indexes):
            t = time.perf_counter()
            ix.search(queries[i], k=k, num_threads=threads)
            wall[n, j] = time.perf_counter() - t
    return [float(np.median(w) * 1e3) for w in wall]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collections", default="fewtopics,heavytail,lowrank,manytopics,neardup")
    ap.add_argument("--nbits", default="2")
    ap.add_argument("--ndocs", type=int, default=10_000, help="documents per synthetic family")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-queries", type=int, default=150, help="single-query searches timed (0: no timing)")
    ap.add_argument("--seeds", default="0", help="comma list: every collection built and searched once per seed")
    ap.add_argument("--format2", action="store_true",
                    help="also build format 2's codec (8192 centroids at 1M tokens, int8 table, scalar) per row")
    ap.add_argument("--tag", default="families")
    args = ap.parse_args(argv)
    builds = (("format2",) if args.format2 else ()) + CODECS
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    load_start = list(os.getloadavg())
    rows = []
    for name, coll, truth, queries in with_truth(args.collections, args.ndocs, args.threads):
        for nbits, seed in [(int(b), int(s)) for b in args.nbits.split(",") for s in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                indexes, row = [], {"collection": name, "tokens": coll.n_tokens, "dim": coll.dim, "nbits": nbits,
                                    "seed": seed}
                for name_c in builds:
                    t0 = time.perf_counter()
                    with format2_codec() if name_c == "format2" else contextlib.nullcontext():
                        ix = plaidx.Index.build(Path(tmp) / name_c, coll.lazy_docs(), nbits=nbits, seed=seed,
                                                residual_codec="scalar" if name_c == "format2" else name_c)
                    row[f"build_s_{name_c}"] = time.perf_counter() - t0
                    row["nlist_format2" if name_c == "format2" else "nlist"] = ix.nlist
                    row[f"bytes_per_token_{name_c}"] = folder_bytes(Path(tmp) / name_c) / coll.n_tokens
                    _, ids = ix.search(queries, k=10, num_threads=args.threads)
                    row[f"recall_{name_c}"] = recall_at_k(ids, truth, 10)
                    row[f"ndcg_{name_c}"] = ndcg_at_k(ids, coll, 10)
                    _, ids = ix.search(queries, k=10, exact=True, num_threads=args.threads)
                    row[f"exhaustive_{name_c}"] = recall_at_k(ids, truth, 10)
                    row[f"ndcg_exhaustive_{name_c}"] = ndcg_at_k(ids, coll, 10)
                    if name_c != "format2":
                        indexes.append(ix)
                if args.timed_queries:
                    for codec, p50 in zip(CODECS, timed_pair(indexes, queries, 10, args.timed_queries, args.threads)):
                        row[f"p50_ms_{codec}"] = p50
                del indexes, ix
            rows.append(row)
            print(f"[pq] {row}", flush=True)

    lines = ["Two indexes per row, built with plaidx's defaults and the row's seed (the same centroids and codes), the residuals "
             "coded per dimension (`residual_codec=\"scalar\"`) or product-quantised with a per-token scale "
             "(`\"pq\"`, format 5). recall@10 against exact MaxSim over the uncompressed embeddings (all queries, one "
             "batched call) at the default search parameters and exhaustively (`exact=True`: the codec's ceiling); "
             "p50: single-query default searches, the two indexes interleaved query by query; bytes/token: the whole "
             "index folder.", "",
             "| collection | d | nbits | seed | nlist | exhaustive scalar | exhaustive pq | gain | defaults scalar | "
             "defaults pq | gain | p50 ms scalar | p50 ms pq | ratio | bytes/token scalar | pq |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        timed = (f"{r['p50_ms_scalar']:.2f} | {r['p50_ms_pq']:.2f} | {r['p50_ms_pq'] / r['p50_ms_scalar']:.2f}"
                 if "p50_ms_pq" in r else "- | - | -")
        lines.append(
            f"| {r['collection']} | {r['dim']} | {r['nbits']} | {r['seed']} | {r['nlist']:,} | "
            f"{r['exhaustive_scalar']:.4f} | {r['exhaustive_pq']:.4f} | {r['exhaustive_pq'] - r['exhaustive_scalar']:+.4f} | "
            f"{r['recall_scalar']:.4f} | {r['recall_pq']:.4f} | {r['recall_pq'] - r['recall_scalar']:+.4f} | "
            f"{timed} | {r['bytes_per_token_scalar']:.2f} | {r['bytes_per_token_pq']:.2f} |")
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["collection"], r["nbits"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        lines += ["", "Over the seeds (mean, and the smallest and largest gain):", "",
                  "| collection | nbits | seeds | exhaustive scalar | exhaustive pq | gain | min | max | "
                  "defaults scalar | defaults pq | gain |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (name, nbits), g in groups.items():
            m = {key: np.array([r[key] for r in g]) for key in
                 ("exhaustive_scalar", "exhaustive_pq", "recall_scalar", "recall_pq")}
            ex = m["exhaustive_pq"] - m["exhaustive_scalar"]
            lines.append(f"| {name} | {nbits} | {len(g)} | {m['exhaustive_scalar'].mean():.4f} | "
                         f"{m['exhaustive_pq'].mean():.4f} | {ex.mean():+.4f} | {ex.min():+.4f} | {ex.max():+.4f} | "
                         f"{m['recall_scalar'].mean():.4f} | {m['recall_pq'].mean():.4f} | "
                         f"{(m['recall_pq'] - m['recall_scalar']).mean():+.4f} |")
    if any("exhaustive_format2" in r for r in rows):
        lines += ["", "Against format 2's codec, issue 15's baseline (`--format2`: the scalar codec with PLAID's nlist rule and "
                  "an int8 centroid table), per row:", "",
                  "| collection | nbits | seed | nlist format 2 / pq | exhaustive format 2 | exhaustive pq | gain | "
                  "defaults format 2 | defaults pq | gain | bytes/token format 2 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['collection']} | {r['nbits']} | {r['seed']} | {r['nlist_format2']:,} / {r['nlist']:,} | "
                         f"{r['exhaustive_format2']:.4f} | {r['exhaustive_pq']:.4f} | "
                         f"{r['exhaustive_pq'] - r['exhaustive_format2']:+.4f} | {r['recall_format2']:.4f} | "
                         f"{r['recall_pq']:.4f} | {r['recall_pq'] - r['recall_format2']:+.4f} | "
                         f"{r['bytes_per_token_format2']:.2f} |")
        lines += ["", "| collection | nbits | seeds | exhaustive format 2 | exhaustive pq | gain | min | max |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for (name, nbits), g in groups.items():
            f2, pq = (np.array([r[key] for r in g]) for key in ("exhaustive_format2", "exhaustive_pq"))
            lines.append(f"| {name} | {nbits} | {len(g)} | {f2.mean():.4f} | {pq.mean():.4f} | {(pq - f2).mean():+.4f} | "
                         f"{(pq - f2).min():+.4f} | {(pq - f2).max():+.4f} |")
    if any(r["ndcg_scalar"] is not None for r in rows):
        lines += ["", "nDCG@10 against the qrels (real sets):", "",
                  "| collection | nbits | scalar defaults | pq defaults | scalar exhaustive | pq exhaustive |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r["ndcg_scalar"] is not None:
                lines.append(f"| {r['collection']} s{r['seed']} | {r['nbits']} | {r['ndcg_scalar']:.4f} | {r['ndcg_pq']:.4f} | "
                             f"{r['ndcg_exhaustive_scalar']:.4f} | {r['ndcg_exhaustive_pq']:.4f} |")
    lines += ["", f"Build seconds ({' / '.join(builds)}): " + ", ".join(
        f"{r['collection']} nb{r['nbits']} s{r['seed']} " + " / ".join(f"{r['build_s_' + b]:.0f}" for b in builds)
        for r in rows) + "."]
    title = "The pq residual codec against the scalar one, same centroids"
    write_stamped_report(f"pq_codec_{args.tag}", title + (", and against format 2's codec" if args.format2 else ""),
                         lines, {"rows": rows}, args.threads, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
