"""What a generation's first search derives: the inverted file and each document's cells, two builds alternating.

An index stores its codes, not its inverted file: the first search of each generation derives the inverted file
(``kernels.build_ivf``) and its transpose (``kernels.doc_cells``) from the codes, and so does
:meth:`plaidx.Index.warm`. This times both on a stored index's codes with this checkout's kernels and, with
``--base`` (a checkout whose native module is built), with another build's, the two alternating round by round
in one process, and checks that both give the same arrays.

    .venv/bin/python benchmarks/bench_derive.py --base /tmp/base --tag parts \\
        --index 100M=rerank_synthetic_1000000_tierscale_d128/plaidx_int8_nb2_t2

Writes ``results/derive_<tag>.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import commit_of, load_base, stored_index  # noqa: E402
from bench_engine import write_stamped_report  # noqa: E402
from collection import CACHE_DIR  # noqa: E402

import plaidx  # noqa: E402
from plaidx.engine import kernels  # noqa: E402


def derive(k, codes: np.ndarray, offsets: np.ndarray, nlist: int, ndocs: int, threads: int) -> tuple:
    """(seconds of build_ivf, seconds of doc_cells, the four arrays) with the kernels module k."""
    t0 = time.perf_counter()
    ivf, ivf_offsets = k.build_ivf(codes, offsets, nlist, **({"num_threads": threads} if threads else {}))
    t1 = time.perf_counter()
    cells, cell_offsets = k.doc_cells(ivf, ivf_offsets, ndocs, **({"num_threads": threads} if threads else {}))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, (ivf, ivf_offsets, cells, cell_offsets)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", action="append", default=[], metavar="NAME=DIR", required=True,
                    help="a stored index: DIR is a benchmark run's plaidx_* folder under results/cache/runs")
    ap.add_argument("--base", default=None, help="a second plaidx checkout with its native module built")
    ap.add_argument("--base-threads-arg", action="store_true",
                    help="pass num_threads to the base's kernels too (builds from before they took it do not)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", required=True, help="output name: results/derive_<tag>.json/.md")
    args = ap.parse_args(argv)
    if kernels.BACKEND_NAME != "native":
        raise SystemExit("this checkout's native module does not import: build it first")
    load_start = list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_kernels = (load_base(Path(args.base).resolve(), Path(tmp)).kernels if args.base else None)
        for spec in args.index:
            name, path = stored_index(spec, CACHE_DIR)
            snap = plaidx.Index.open(path)._snap
            codes = np.ascontiguousarray(snap.a["codes"])
            offsets = np.ascontiguousarray(snap.a["doc_offsets"])
            sides = [("new", kernels, args.threads)]
            if base_kernels is not None:
                sides.append(("base", base_kernels, args.threads if args.base_threads_arg else 0))
            times: dict[str, list[tuple[float, float]]] = {s: [] for s, _, _ in sides}
            arrays = {}
            for r in range(args.rounds):
                for side, k, threads in (sides if r % 2 == 0 else sides[::-1]):
                    t_ivf, t_cells, out = derive(k, codes, offsets, snap.nlist, snap.n_docs, threads)
                    times[side].append((t_ivf, t_cells))
                    arrays.setdefault(side, out)
            row = {"index": name, "tokens": snap.n_tokens, "nlist": snap.nlist, "documents": snap.n_docs,
                   "pairs": int(arrays["new"][0].shape[0])}
            for side in times:
                t = np.array(times[side])
                row[side] = {"ivf_s": float(np.median(t[:, 0])), "doc_cells_s": float(np.median(t[:, 1])),
                             "total_s": float(np.median(t.sum(axis=1)))}
            if base_kernels is not None:
                row["same_arrays"] = all(np.array_equal(a, b) for a, b in zip(arrays["new"], arrays["base"]))
                row["total_ratio"] = row["new"]["total_s"] / row["base"]["total_s"]
            rows.append(row)
            print(f"[derive] {row}", flush=True)
    base_note = (f" against {Path(args.base).name} at {commit_of(Path(args.base))} (base), alternating round by "
                 "round in one process" if args.base else "")
    body = [f"This checkout (new){base_note}: medians over {args.rounds} rounds of deriving the inverted file "
            f"(build_ivf) and each document's cells (doc_cells) from a stored index's codes, {args.threads} threads.",
            "", "| index | tokens | centroids | documents | pairs | build | build_ivf s | doc_cells s | total s |"
            + (" ratio | same arrays |" if args.base else ""),
            "|---|---:|---:|---:|---:|---|---:|---:|---:|" + ("---:|---|" if args.base else "")]
    for r in rows:
        for side in ("new", "base") if args.base else ("new",):
            s = r[side]
            line = (f"| {r['index']} | {r['tokens']:,} | {r['nlist']:,} | {r['documents']:,} | {r['pairs']:,} | {side} "
                    f"| {s['ivf_s']:.2f} | {s['doc_cells_s']:.2f} | {s['total_s']:.2f} |")
            if args.base:
                line += (f" {r['total_ratio']:.2f} | {'yes' if r['same_arrays'] else 'no'} |" if side == "new" else " | |")
            body.append(line)
    write_stamped_report(f"derive_{args.tag}", "Deriving the inverted file and each document's cells", body,
                         {"rows": rows, "base": args.base, "base_commit": commit_of(Path(args.base)) if args.base
                          else None}, args.threads, load_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
