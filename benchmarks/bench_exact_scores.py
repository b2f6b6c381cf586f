"""The int8 exact stage against the float32 one at nbits 1, 2 and 4: recall@10 and single-query p50.

``SearchParams.exact_scores`` picks how the last stage scores the decompressed candidates: int8 (each decoded
token quantised as its unit vector, the default on CPUs with AVX-512 VNNI) or float32. ``search_stages.py``
compares them on the default (nbits 2) indexes; this benchmark checks that the choice holds where the decoded
tokens are coarser (nbits 1) or closer to the originals (nbits 4, where int8 rounding is relatively larger).
For each collection and nbits it builds an index in a temporary folder (plaidx's defaults otherwise), then
searches all queries with both settings (recall@10 against exact MaxSim over the uncompressed embeddings,
and exhaustive search over the codes, the codec's ceiling) and times single-query calls of both, interleaved.

    .venv/bin/python benchmarks/bench_exact_scores.py --collections lowrank,manytopics,cranfield

Writes ``results/exact_scores_nbits.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import write_stamped_report  # noqa: E402
from bench_families import with_truth  # noqa: E402
from collection import recall_at_k  # noqa: E402
from sweep_family_params import timed_interleaved  # noqa: E402

import plaidx  # noqa: E402

MODES = ("int8", "float32")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collections", default="lowrank,manytopics,cranfield")
    ap.add_argument("--nbits", default="1,2,4")
    ap.add_argument("--ndocs", type=int, default=10_000, help="documents per synthetic family")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-queries", type=int, default=100)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    load_start = list(os.getloadavg())
    rows = []
    for name, coll, truth, queries in with_truth(args.collections, args.ndocs, args.threads):
        docs = [np.asarray(coll.values[coll.offsets[i]:coll.offsets[i + 1]], dtype=np.float32)
                for i in range(coll.n_docs)]
        for nbits in [int(b) for b in args.nbits.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                index = plaidx.Index.build(Path(tmp) / "index", docs, nbits=nbits, seed=0)
                row = {"collection": name, "tokens": coll.n_tokens, "dim": coll.dim, "nbits": nbits,
                       "nlist": index.nlist}
                for m in MODES:
                    _, ids = index.search(queries, k=10, params=plaidx.SearchParams(exact_scores=m),
                                          num_threads=args.threads)
                    row[f"recall_{m}"] = recall_at_k(ids, truth, 10)
                _, ids = index.search(queries, k=10, exact=True, num_threads=args.threads)
                row["recall_exhaustive"] = recall_at_k(ids, truth, 10)
                settings = [{"params": plaidx.SearchParams(exact_scores=m), "num_threads": args.threads}
                            for m in MODES]
                for m, t in zip(MODES, timed_interleaved(index, queries, settings, 10, args.timed_queries)):
                    row[f"p50_ms_{m}"] = t["p50_ms"]
                del index
            rows.append(row)
            print(f"[exact_scores] {row}", flush=True)

    lines = ["Each index built at the given nbits with plaidx's other defaults and searched at its default search "
             "parameters with `exact_scores=\"int8\"` and `\"float32\"`: recall@10 against exact MaxSim over the "
             "uncompressed embeddings (all queries, one batched call), single-query p50 (settings interleaved query "
             "by query). Exhaustive: `exact=True` over the codes (float32), the codec's ceiling.", "",
             "| collection | d | nbits | nlist | recall@10 int8 | recall@10 float32 | difference | exhaustive | "
             "p50 ms int8 | p50 ms float32 | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['collection']} | {r['dim']} | {r['nbits']} | {r['nlist']:,} | {r['recall_int8']:.4f} | "
                     f"{r['recall_float32']:.4f} | {r['recall_int8'] - r['recall_float32']:+.4f} | "
                     f"{r['recall_exhaustive']:.4f} | {r['p50_ms_int8']:.2f} | {r['p50_ms_float32']:.2f} | "
                     f"{r['p50_ms_int8'] / r['p50_ms_float32']:.2f} |")
    write_stamped_report("exact_scores_nbits", "The int8 exact stage against float32 at nbits 1, 2 and 4", lines,
                         {"rows": rows}, args.threads, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
