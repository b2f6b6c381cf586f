"""Cold starts: a stored index evicted from the page cache, opened in a fresh process and searched query by query.

A search over a memory-mapped index reads its files through the page cache. Right after a reboot, or when the
index is larger than the memory left for the cache, the rows a query reads are not there and each is paged in
when first touched. This benchmark measures that case: before each cold start it drops every file of the index
folder from the page cache (posix_fadvise DONTNEED; nothing else has them mapped), then opens the index in a new
process and times ``--queries`` single-query searches, each round on the next queries, so that every cold start
meets rows that no earlier one read. With ``--base`` (a checkout whose native module is built) the two builds
alternate, cold start by cold start, on the same queries: a change to how the search reads its rows is timed
against the build before it on the same machine and disk.

    .venv/bin/python benchmarks/bench_cold.py --base /tmp/base --tag pagein --params-list '[{}, {"rerank": 0}]' \\
        --index 100M=rerank_synthetic_1000000_tierscale_d128/plaidx_int8_nb2_t2 \\
        --collection-dir synthetic_n1000000_d128_q100_s0_values_dtypefloat16

``--index NAME=DIR`` and ``--collection-dir`` name a stored index and its collection as for ``bench_ab.py``.
Writes ``results/cold_<tag>.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_ab import commit_of, stored_index  # noqa: E402
from bench_engine import write_stamped_report  # noqa: E402
from collection import CACHE_DIR  # noqa: E402

# Run in the worker process with the checkout first on sys.path: open the index, time the searches.
WORKER = r"""
import json, sys, time
checkout, index_dir, queries, start, count, params, threads = sys.argv[1:8]
sys.path.insert(0, checkout)
import numpy as np
import plaidx
if not plaidx.__file__.startswith(checkout):
    raise SystemExit(f"imported plaidx from {plaidx.__file__}, not from {checkout}")
Q = np.load(queries, mmap_mode="r")
t0 = time.perf_counter()
index = plaidx.Index.open(index_dir)
opened = time.perf_counter() - t0
times, ids = [], []
for i in range(int(start), int(start) + int(count)):
    q = np.ascontiguousarray(Q[i:i + 1], dtype=np.float32)
    t = time.perf_counter()
    _, d = index.search(q, k=10, num_threads=int(threads), **json.loads(params))
    times.append(time.perf_counter() - t)
    ids.append(d[0].tolist())
print(json.dumps({"open_s": opened, "times": times, "ids": ids}))
"""


def evict(folder: Path) -> None:
    """Drop every file of the folder from the page cache (their pages are clean: nothing to write back)."""
    for f in folder.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cold_start(checkout: Path, index: Path, queries: Path, start: int, count: int, params: dict,
               threads: int) -> dict:
    evict(index)
    res = subprocess.run([sys.executable, "-c", WORKER, str(checkout), str(index), str(queries), str(start),
                          str(count), json.dumps(params), str(threads)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"cold start with {checkout} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    every = np.concatenate([r["times"] for r in runs]) * 1e3
    return {"first_ms": float(np.median([r["times"][0] * 1e3 for r in runs])),
            "median_ms": float(np.median(every)), "mean_ms": float(every.mean()),
            "open_ms": float(np.median([r["open_s"] * 1e3 for r in runs])), "cold_starts": len(runs)}


def stored_index_queries(spec: str, coll_dir: str, needed: int) -> tuple[str, Path, Path]:
    """(name, index folder, queries.npy) of one --index / --collection-dir pair, checked."""
    name, path = stored_index(spec, CACHE_DIR)
    queries = CACHE_DIR / coll_dir / "queries.npy"
    if not queries.exists():
        raise SystemExit(f"--collection-dir {coll_dir}: no queries.npy in {CACHE_DIR / coll_dir}")
    nq = len(np.load(queries, mmap_mode="r"))
    if needed > nq:
        raise SystemExit(f"--queries x --rounds = {needed} is more than the {nq} queries of {coll_dir}; "
                         "ask for fewer")
    return name, path, queries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", action="append", default=[], metavar="NAME=DIR", required=True,
                    help="a stored index: DIR is a benchmark run's plaidx_* folder under results/cache/runs")
    ap.add_argument("--collection-dir", action="append", default=[],
                    help="the cached collection each --index was built from (its queries.npy), same order")
    ap.add_argument("--base", default=None, help="a second plaidx checkout with its native module built")
    ap.add_argument("--params-list", default="[{}]", help="a JSON list of search knob sets")
    ap.add_argument("--queries", type=int, default=10, help="single-query searches per cold start")
    ap.add_argument("--rounds", type=int, default=3, help="cold starts per build and knob set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", required=True, help="output name: results/cold_<tag>.json/.md")
    args = ap.parse_args(argv)
    if len(args.collection_dir) != len(args.index):
        raise SystemExit("give one --collection-dir per --index (the collection each index was built from)")
    param_sets = json.loads(args.params_list)
    builds = [("new", ROOT)] + ([("base", Path(args.base).resolve())] if args.base else [])
    for _, checkout in builds:
        if not any((checkout / "plaidx").glob("_core*.so")):
            raise SystemExit(f"{checkout}: plaidx/_core is not built there; run `python setup.py build_ext "
                             "--inplace` in that checkout first")
    load_start = list(os.getloadavg())
    rows = []
    stored = [stored_index_queries(spec, coll_dir, args.queries * args.rounds)
              for spec, coll_dir in zip(args.index, args.collection_dir)]
    for name, path, queries in stored:
        for params in param_sets:
            runs: dict[str, list[dict]] = {b: [] for b, _ in builds}
            for r in range(args.rounds):
                order = builds if r % 2 == 0 else builds[::-1]
                for b, checkout in order:
                    runs[b].append(cold_start(checkout, path, queries, r * args.queries, args.queries, params,
                                              args.threads))
            row = {"index": name, "params": params, **{b: summarise(v) for b, v in runs.items()}}
            if args.base:
                row["same_topk"] = all(a["ids"] == b["ids"] for a, b in zip(runs["new"], runs["base"]))
                for key in ("first_ms", "median_ms", "mean_ms"):
                    row[f"{key}_ratio"] = row["new"][key] / row["base"][key]
            rows.append(row)
            print(f"[cold] {row}", flush=True)
    base_note = (f" against {Path(args.base).name} at {commit_of(Path(args.base))} (base), the two alternating "
                 "cold start by cold start on the same queries" if args.base else "")
    body = [f"This checkout (new){base_note}. Each cold start drops the index folder's files from the page cache, "
            f"opens the index in a new process and times {args.queries} single-query searches (round r: queries "
            f"{args.queries}r to {args.queries}(r + 1) - 1), {args.rounds} cold starts per build and knob set. First: "
            "the first search of a cold start (median over cold starts); median and mean: over every search of "
            "every cold start.", ""]
    head = "| index | search knobs | build | open ms | first ms | median ms | mean ms |"
    body += [head + (" ratio first / median / mean | same top-k |" if args.base else ""),
             "|---|---|---|---:|---:|---:|---:|" + ("---|---|" if args.base else "")]
    for row in rows:
        knobs = json.dumps(row["params"]) if row["params"] else "defaults"
        for b, _ in builds:
            s = row[b]
            line = (f"| {row['index']} | {knobs} | {b} | {s['open_ms']:.0f} | {s['first_ms']:.1f} | "
                    f"{s['median_ms']:.1f} | {s['mean_ms']:.1f} |")
            if args.base:
                line += (f" {row['first_ms_ratio']:.2f} / {row['median_ms_ratio']:.2f} / {row['mean_ms_ratio']:.2f} | "
                         f"{'yes' if row['same_topk'] else 'no'} |" if b == "new" else " | |")
            body.append(line)
    write_stamped_report(f"cold_{args.tag}", "Cold starts: an evicted index opened and searched", body,
                         {"rows": rows, "base": args.base, "base_commit": commit_of(Path(args.base)) if args.base
                          else None, "params": param_sets}, args.threads, load_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
