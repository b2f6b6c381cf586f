"""What a metadata filter (``where=``) costs: the document store resolving it to passage ids, by store size.

Without an index over its fields, resolving a filter reads every document's metadata once
(``DocStore.passage_ids_where``, one SQLite statement); with one (``DocStore.index_metadata``) SQLite looks the
values up. Each thread keeps the answers of its last filters until the store changes. This builds stores of
synthetic documents (one passage each; metadata ``{"lang", "year", "user", "tags"}``) and times five filters on
a freshly opened store (uncached), best of ``--repeats``, and again at once (cached); then it indexes ``lang``,
``year`` and ``user`` and times them again::

    .venv/bin/python benchmarks/bench_where.py --docs 10000,100000,300000

Writes ``results/where_filters.md`` and ``.json`` (``--tag`` names another). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import write_stamped_report  # noqa: E402

from plaidx.rag.docstore import DocStore  # noqa: E402

FILTERS = {
    "equality": {"lang": "en"},
    "range": {"year": {"$gte": 2020}},
    "list contains": {"tags": {"$contains": "b"}},
    "$in and range": {"lang": {"$in": ["de", "fr"]}, "year": {"$lt": 2000}},
    "selective": {"user": "u17"},
}
INDEXED = ["lang", "year", "user"]  # the fields indexed for the second pass (tags: $contains reads the lists)


def store_of(path: Path, n: int) -> DocStore:
    store = DocStore(path, create=True)
    docs = [(f"d{i}", json.dumps({"lang": ("en", "de", "fr")[i % 3], "year": 1990 + i % 35, "user": f"u{i % 3000}",
                                  "tags": ["a", "b"][: i % 3]})) for i in range(n)]
    store.add(docs, [(i, f"d{i}", "text") for i in range(n)])
    return store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="10000,100000,300000", help="comma-separated store sizes (documents)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="filters")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.docs.split(",")]
    load = list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"s{n}.sqlite"
            store_of(path, n).close()
            for indexed in (False, True):
                if indexed:
                    with DocStore(path) as store:
                        store.index_metadata(INDEXED)
                for name, where in FILTERS.items():
                    times, again = [], []
                    for _ in range(args.repeats):
                        with DocStore(path) as store:
                            t = time.perf_counter()
                            pids = store.passage_ids_where(where)
                            times.append(time.perf_counter() - t)
                            t = time.perf_counter()
                            store.passage_ids_where(where)
                            again.append(time.perf_counter() - t)
                    rows.append({"documents": n, "filter": name, "where": where, "indexed": indexed,
                                 "matched": int(pids.size), "ms": 1e3 * min(times), "ms_cached": 1e3 * min(again)})
                    print(f"[where] {rows[-1]}", flush=True)
    body = ["Each filter resolved to passage ids by the document store (`DocStore.passage_ids_where`, one SQLite "
            f"statement) on a freshly opened store, best of {args.repeats}, then at once again (answered from the "
            "thread's cache); one passage per document. indexed: the same store after "
            f"`index_metadata({INDEXED})`.", "",
            "| documents | filter | where | matched | ms | ms indexed | speed-up | ms per 1,000 documents (indexed) "
            "| ms again (cached) |", "|---:|---|---|---:|---:|---:|---:|---|---:|"]
    plain = {(r["documents"], r["filter"]): r for r in rows if not r["indexed"]}
    for r in (r for r in rows if r["indexed"]):
        p = plain[(r["documents"], r["filter"])]
        body.append(f"| {r['documents']:,} | {r['filter']} | `{json.dumps(r['where'])}` | {r['matched']:,} "
                    f"| {p['ms']:.1f} | {r['ms']:.2f} | {p['ms'] / r['ms']:.1f}x | {p['ms'] / r['documents'] * 1000:.2f} "
                    f"({r['ms'] / r['documents'] * 1000:.3f}) | {p['ms_cached']:.3f} |")
    write_stamped_report(f"where_{args.tag}", "Metadata filters: resolving `where` in the document store", body,
                         {"rows": rows, "repeats": args.repeats}, 1, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
