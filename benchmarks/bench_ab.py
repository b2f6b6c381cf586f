"""Two builds of plaidx on the same indexes, query by query: how to time a kernel change on a noisy machine.

On a shared 2-core machine single-query p50 moves by 10% and more between runs (both engines of
``families_families`` moved about 10% between two runs an hour apart), more than most kernel changes gain.
This benchmark loads a second checkout of plaidx (``--base``: a checkout whose native module is built, e.g.
``git worktree add /tmp/base <commit>`` and ``python setup.py build_ext --inplace`` there) beside this one's,
under another package name, opens each collection's index with both and alternates them on every query (the
order flipping with each query and round), so that both see the same machine. It reports each side's p50,
the median of the per-query ratios, and whether both returned the same top-k.

    .venv/bin/python benchmarks/bench_ab.py --base /tmp/base --collections manytopics,lowrank,neardup --tag serial

The indexes are the default builds of the families and real sets of ``--collections`` at ``--nbits``
(``results/cache/runs/<name>_<docs>_d<dim>/plaidx_nb<nbits>_t2/index``, built when missing), so the two builds
must read the same index format; recall@k is against the exact top-k, computed over a collection's embeddings
and cached beside it above k 100 (``collection.exact_topk_cached``). ``--index NAME=DIR`` (repeatable)
times stored indexes instead, e.g. those of ``bench_rerank.py`` at 100M tokens: DIR is a benchmark run's folder
under ``results/cache/runs`` (its ``plaidx_*`` build), and the queries and exact top-k are those of the cached
collection it was built from (``--collection-dir``, same order). ``--filter F`` searches with a ``doc_ids``
filter allowing a seeded fraction F of the documents, recall against the exact top-k among them. Writes
``results/ab_<tag>.json`` and ``.md``.
Not part of CI.

    .venv/bin/python benchmarks/bench_ab.py --base /tmp/base --tag search100m --params-list '[{}, {"rerank": 0}]' \
        --index 100M=rerank_synthetic_1000000_tierscale_d128/plaidx_int8_nb2_t2 \
        --collection-dir synthetic_n1000000_d128_q100_s0_values_dtypefloat16
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import write_stamped_report  # noqa: E402
from bench_families import with_truth  # noqa: E402
from collection import (  # noqa: E402
    CACHE_DIR,
    exact_scores,
    exact_topk_cached,
    is_complete,
    load_collection,
    recall_at_k,
    topk_from_scores,
)

import plaidx  # noqa: E402
from plaidx.engine import kernels  # noqa: E402

BASE_PACKAGE = "plaidx_base"


def load_base(checkout: Path, into: Path):
    """The engine of another plaidx checkout, imported as plaidx_base.engine (its package copied into `into`;
    the engine's imports are relative, so it runs its own native module)."""
    src = checkout / "plaidx"
    if not any(src.glob("_core*.so")) and not any(src.glob("_core*.pyd")):
        raise SystemExit(f"--base {checkout}: plaidx/_core is not built there; run `python setup.py build_ext "
                         "--inplace` in that checkout first")
    shutil.copytree(src, into / BASE_PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(into))
    engine = importlib.import_module(f"{BASE_PACKAGE}.engine")
    if importlib.import_module(f"{BASE_PACKAGE}.engine.kernels").BACKEND_NAME != "native":
        raise SystemExit(f"--base {checkout}: its native module does not import here")
    return engine


def commit_of(checkout: Path) -> str:
    res = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                         text=True)
    return res.stdout.strip() or "?"


def search_kwargs(engine, knobs: dict) -> dict:
    """Index.search's keywords for a JSON knob set: the knobs themselves, or ``params=`` the engine's own
    SearchParams where one of them is a SearchParams field only (cell_scores, exact_scores, ...)."""
    if set(knobs) <= set(inspect.signature(engine.Index.search).parameters):
        return knobs
    return {"params": engine.SearchParams(**{k: v for k, v in knobs.items() if k != "doc_ids"}),
            **({"doc_ids": knobs["doc_ids"]} if "doc_ids" in knobs else {})}


def knob_json(text: str, flag: str, many: bool = False):
    """The knob set (or, with many, the list of knob sets) of a JSON option; a clear SystemExit when it is not
    JSON, not objects, or names a knob neither Index.search nor SearchParams has."""
    known = (set(inspect.signature(plaidx.Index.search).parameters) - {"self", "queries", "k", "num_threads"}) | {
        f.name for f in fields(plaidx.SearchParams)}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{flag}: not JSON ({e}); give an object such as '{{\"nprobe\": 4}}'") from None
    sets = value if many else [value]
    if not isinstance(sets, list) or not all(isinstance(knobs, dict) for knobs in sets):
        raise SystemExit(f"{flag}: give {'a list of objects' if many else 'an object'} such as "
                         f"'{'[' if many else ''}{{\"nprobe\": 4}}{']' if many else ''}', got {text}")
    for knobs in sets:
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise SystemExit(f"{flag}: unknown knob {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return sets if many else value


def paired(new, base, queries: np.ndarray, k: int, rounds: int, threads: int, params: dict,
           base_params: dict | None = None) -> dict:
    """p50 of each side and the median per-query ratio, the two alternating on every query (the base with
    base_params where given)."""
    sides = ((new, params), (base, params if base_params is None else base_params))
    for i in range(min(20, len(queries))):  # warm-up: inverted files, workspaces, page cache
        for index, kw in sides:
            index.search(queries[i], k, num_threads=threads, **kw)
    t_new, t_base = [], []
    for r in range(rounds):
        for i in range(len(queries)):
            order = ((sides[0], t_new), (sides[1], t_base)) if (i + r) % 2 else ((sides[1], t_base), (sides[0], t_new))
            for (index, kw), times in order:
                t = time.perf_counter()
                index.search(queries[i], k, num_threads=threads, **kw)
                times.append(time.perf_counter() - t)
    a, b = np.array(t_new), np.array(t_base)
    return {"p50_ms_new": float(np.median(a) * 1e3), "p50_ms_base": float(np.median(b) * 1e3),
            "p50_ratio": float(np.median(a) / np.median(b)), "paired_ratio": float(np.median(a / b)),
            "timed_queries": int(len(queries)), "rounds": rounds}


def stored_index(spec: str, cache_dir: Path) -> tuple[str, Path]:
    """(name, index folder) of one ``--index NAME=DIR``: DIR a benchmark run's folder under cache_dir/runs."""
    name, _, run = spec.partition("=")
    path = cache_dir / "runs" / run / "index"
    if not name or not run or not (path / "manifest.json").exists():
        raise SystemExit(f"--index {spec}: give NAME=DIR with an index at {path}")
    return name, path


def check_index_args(args) -> None:
    """A clear SystemExit unless every ``--index`` has its ``--collection-dir``."""
    if len(args.index) != len(args.collection_dir):
        raise SystemExit("give one --collection-dir per --index (the collection each index was built from)")


class Bench(NamedTuple):
    name: str
    path: Path
    truth: np.ndarray  # exact top-depth ids of every query (among doc_ids where given)
    queries: np.ndarray
    doc_ids: np.ndarray | None  # the filter both builds search with (--filter), or None


def filtered_truth(coll, doc_ids: np.ndarray, depth: int, threads: int) -> np.ndarray:
    """Exact top-``depth`` ids of the collection's queries among the documents ``doc_ids`` (ascending collection
    positions, which are the ids of an index built from it), by MaxSim over their embeddings."""
    lengths = np.diff(coll.offsets)[doc_ids]
    values = np.concatenate([np.asarray(coll.values[coll.offsets[i]:coll.offsets[i + 1]], np.float32)
                             for i in doc_ids])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    scores = exact_scores(np.asarray(coll.queries, np.float32), values, offsets, threads=threads, log=False)
    ids = topk_from_scores(scores, depth)[1]
    return np.where(ids >= 0, doc_ids[np.maximum(ids, 0)], -1)


def indexes(args, depth: int):
    """A :class:`Bench` of each index: the stored ones of ``--index`` and the default builds at ``--nbits`` of the
    families and real sets in ``--collections`` (1M-token families; built into
    ``results/cache/runs/<name>_<docs>_d<dim>/plaidx_nb<nbits>_t2/index`` when missing).

    The exact top-100 is cached with each collection; a deeper list (``--k`` above 100) is computed once over its
    embeddings and cached beside it (``collection.exact_topk_cached``). With ``--filter F`` (``args.filter``) a
    seeded F of the documents are allowed, and the exact top-``depth`` among them is computed over the embeddings."""
    check_index_args(args)
    fraction = getattr(args, "filter", None)

    def bench(name: str, path: Path, coll, queries: np.ndarray) -> Bench:
        if not fraction:
            return Bench(name, path, exact_topk_cached(coll, depth, threads=args.threads)[1], queries, None)
        n = coll.n_docs
        doc_ids = np.sort(np.random.default_rng(0).choice(n, max(1, round(fraction * n)), replace=False))
        return Bench(name, path, filtered_truth(coll, doc_ids, depth, args.threads), queries, doc_ids)

    if args.collections:
        for name, coll, _, queries in with_truth(args.collections, args.ndocs, args.threads):
            path = CACHE_DIR / "runs" / f"{name}_{coll.n_docs}_d{coll.dim}" / f"plaidx_nb{args.nbits}_t2" / "index"
            if not (path / "manifest.json").exists():
                t = time.perf_counter()
                plaidx.Index.build(path, coll.lazy_docs(), nbits=args.nbits, overwrite=True)
                print(f"[index {time.strftime('%H:%M:%S')}] {name}: built at nbits {args.nbits} in "
                      f"{time.perf_counter() - t:.0f}s", flush=True)
            yield bench(name, path, coll, queries)
    for spec, coll_dir in zip(args.index, args.collection_dir):
        name, path = stored_index(spec, CACHE_DIR)
        coll = CACHE_DIR / coll_dir
        if not (coll / "queries.npy").exists() or not (coll / "gt_top100.npz").exists():
            raise SystemExit(f"--collection-dir {coll_dir}: no queries.npy and gt_top100.npz in {coll}")
        queries = np.ascontiguousarray(np.load(coll / "queries.npy"), dtype=np.float32)
        if depth <= 100 and not fraction:
            yield Bench(name, path, np.load(coll / "gt_top100.npz")["ids"], queries, None)
        elif not is_complete(coll):
            what = "--filter" if fraction else "--k above 100"
            raise SystemExit(f"--collection-dir {coll_dir}: {what} needs the collection's embeddings in {coll} to "
                             "find the exact top-k, and only its queries and exact top-100 are there")
        else:
            yield bench(name, path, load_collection(coll), queries)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a plaidx checkout with its native module built")
    ap.add_argument("--collections", default=None, help="families and real sets (default: manytopics,lowrank,neardup "
                    "without --index, none with it)")
    ap.add_argument("--ndocs", type=int, default=10_000, help="documents per synthetic family")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the queries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10, help="above 100 the exact top-k is computed over each collection's "
                    "embeddings once and cached beside it")
    ap.add_argument("--nbits", type=int, default=2, help="the default builds' bits a dimension (built when missing)")
    ap.add_argument("--params", default="{}", help="search knobs as JSON (default: the defaults)")
    ap.add_argument("--params-list", default=None, help="a JSON list of knob sets, each timed in turn (for --params)")
    ap.add_argument("--new-params", default="{}", help="knobs as JSON for this checkout's side only, over --params "
                    "(an option the base lacks; --base may be this checkout, to time two settings of one build)")
    ap.add_argument("--index", action="append", default=[], metavar="NAME=DIR",
                    help="a stored index to time instead of the families' (DIR under results/cache/runs)")
    ap.add_argument("--collection-dir", action="append", default=[],
                    help="per --index: the cached collection under results/cache with its queries.npy and "
                         "gt_top100.npz")
    ap.add_argument("--filter", type=float, default=None, metavar="F",
                    help="search with a doc_ids filter allowing a seeded fraction F of the documents (0 < F < 1); "
                         "recall is against the exact top-k among them, computed over the embeddings")
    ap.add_argument("--tag", required=True, help="output name: results/ab_<tag>.json/.md")
    args = ap.parse_args(argv)
    if args.collections is None:
        args.collections = "" if args.index else "manytopics,lowrank,neardup"
    param_sets = (knob_json(args.params_list, "--params-list", many=True) if args.params_list
                  else [knob_json(args.params, "--params")])
    new_knobs = knob_json(args.new_params, "--new-params")
    check_index_args(args)  # before loading the base checkout
    if args.k < 1:
        raise SystemExit(f"--k: a positive number of results, got {args.k}")
    if args.filter is not None and not 0 < args.filter < 1:
        raise SystemExit(f"--filter: the fraction of the documents allowed, between 0 and 1, got {args.filter}")
    if args.nbits not in (1, 2, 4, 8):
        raise SystemExit(f"--nbits: 1, 2, 4 or 8 (the default builds' bits a dimension), got {args.nbits}")
    if kernels.BACKEND_NAME != "native":
        raise SystemExit("this checkout's native module does not import: build it first")
    base_dir = Path(args.base).resolve()
    load_start = list(os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_engine = load_base(base_dir, Path(tmp))
        for name, path, truth, queries, doc_ids in indexes(args, max(args.k, 10)):
            new, base = plaidx.Index.open(path), base_engine.Index.open(path)
            tokens = int(new.info()["tokens"])
            for knobs in param_sets:
                filt = {} if doc_ids is None else {"doc_ids": doc_ids}
                params = search_kwargs(plaidx, {**knobs, **new_knobs, **filt})
                base_params = search_kwargs(base_engine, {**knobs, **filt})
                _, ids_new = new.search(queries, args.k, num_threads=args.threads, **params)
                _, ids_base = base.search(queries, args.k, num_threads=args.threads, **base_params)
                row = {"collection": name, "tokens": tokens, "params": knobs, "new_params": new_knobs,
                       "allowed_docs": None if doc_ids is None else int(len(doc_ids)),
                       "recall_new": recall_at_k(ids_new, truth[:, :args.k], args.k),
                       "recall_base": recall_at_k(ids_base, truth[:, :args.k], args.k),
                       "same_topk": bool(np.array_equal(ids_new, ids_base)),
                       **paired(new, base, [q[None] for q in queries], args.k, args.rounds, args.threads, params,
                                base_params)}
                rows.append(row)
                print(f"[ab] {row}", flush=True)
            del new, base
    filtered = (f" Every search is filtered to a seeded {args.filter:g} of the documents (doc_ids), and recall is "
                "against the exact top-k among them." if args.filter else "")
    body = [f"This checkout (new) against {base_dir.name} at {commit_of(base_dir)} (base) on the same indexes, "
            f"k {args.k}: every query searched by both, the order flipping with each query and round. p50 of "
            "single-query calls; paired: the median over queries of new / base. Same top-k: both builds returned "
            f"the same documents for every query (one batched call each).{filtered}"
            + (f" This checkout's side also searches with {json.dumps(new_knobs)}." if new_knobs else ""), "",
            "| collection | tokens | search knobs | queries x rounds | p50 ms new | p50 ms base | p50 ratio | "
            f"paired ratio | recall@{args.k} new / base | same top-k |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        body.append(f"| {r['collection']} | {r['tokens']:,} | {json.dumps(r['params']) if r['params'] else 'defaults'} "
                    f"| {r['timed_queries']} x {r['rounds']} | "
                    f"{r['p50_ms_new']:.3f} | {r['p50_ms_base']:.3f} | {r['p50_ratio']:.3f} | {r['paired_ratio']:.3f} | "
                    f"{r['recall_new']:.3f} / {r['recall_base']:.3f} | {'yes' if r['same_topk'] else 'no'} |")
    write_stamped_report(f"ab_{args.tag}", "Two plaidx builds on the same indexes, alternating query by query", body,
                         {"rows": rows, "base": str(base_dir), "base_commit": commit_of(base_dir),
                          "params": param_sets}, args.threads, load_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
