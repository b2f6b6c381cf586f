"""Nearest-centroid assignment of a build: plaidx's grouped kernel against the faiss indexes it replaced.

Every token of a build is assigned to its nearest centroid (max inner product); at 32M+ tokens this is
most of the build. Until this kernel, plaidx used faiss: an inverted file over the centroids
(``IndexIVFFlat``, about 4 * sqrt(nlist) lists, 8 probed) from 4096 centroids and an HNSW graph
(M 32, efConstruction 80, efSearch 64) from 32768. Here all three, plus exact flat search, run on the same
tokens and the same centroids (trained by plaidx's k-means on the collection), one after another in one
process: microseconds per token (2 threads, wall clock), the share of tokens given their exact nearest
centroid, and the mean score lost on the others.

    .venv/bin/python benchmarks/bench_assign.py --nlists 4096,16384,65536,131072

Writes ``results/assign_synthetic.json/.md``. Not part of CI.

``--int8`` times the grouped kernel's two paths instead, on a build's own tokens and centroids: float32
scores (``Assigner(int8=False)``) against int8 candidate scores re-scored in float32 (the default on AVX-512
VNNI CPUs), optionally beside an earlier build of the native module (``--baseline-core``, loaded into the
same process), with the share of tokens given the same code and the largest rounding error of the int8
scores seen, in the deviations the kernel's margin counts (it re-scores within 10):

    .venv/bin/python benchmarks/bench_assign.py --int8 --collection results/cache/<collection> \
        [--centroids-from results/cache/runs/<run>/index] --tag <tag> [--baseline-core /path/to/_core.so]

writes ``results/assign_int8_<tag>.json/.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402
from collection import RESULTS_DIR  # noqa: E402

from plaidx.engine import clustering  # noqa: E402
from plaidx.engine.cellq import quantize_int8  # noqa: E402


def faiss_ivf(cents: np.ndarray) -> tuple[faiss.Index, faiss.Index]:
    """The inverted file and its coarse quantizer (which the index does not own: keep both alive)."""
    nlist, d = cents.shape
    coarse = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(coarse, d, 1 << int(round(math.log2(4 * math.sqrt(nlist)))), faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    index.cp.min_points_per_centroid = 1
    index.train(cents)
    index.add(cents)
    index.nprobe = 8
    return index, coarse


def faiss_hnsw(cents: np.ndarray) -> faiss.Index:
    index = faiss.IndexHNSWFlat(cents.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(cents)
    index.hnsw.efSearch = 64
    return index


def timed(fn, x: np.ndarray, rounds: int) -> tuple[np.ndarray, float]:
    best, out = math.inf, None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn(x)
        best = min(best, time.perf_counter() - t)
    return np.asarray(out).astype(np.int64), best / len(x) * 1e6


def load_core(path: str):
    """A native module built elsewhere (an earlier commit's plaidx/_core*.so), as a module of its own."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.ExtensionFileLoader("plaidx_baseline._core", path)
    spec = importlib.util.spec_from_file_location("plaidx_baseline._core", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def rounding_errors(a: clustering.Assigner, x: np.ndarray) -> float:
    """The largest |int8 score - float32 score| over the group centres and the probed groups' columns of the
    tokens x, in the deviations of the kernel's margin (csrc/cpu/assign.h: group maxima of |c|^2 and e_c^2)."""
    coarse_t, G, panels, pcol, ids, nprobe = a._grouped
    cq, cscale, _, crows, pq, pscale, _, cents, bound = a.int8
    d = x.shape[1]
    xq, xs = quantize_int8(x)
    x2 = np.einsum("nd,nd->n", x, x).astype(np.float64)
    xs = xs.astype(np.float64)

    def approx(q_block: np.ndarray, scale: np.ndarray, width: int) -> np.ndarray:
        q = q_block.reshape(d // 4, width, 4).transpose(1, 0, 2).reshape(width, d).astype(np.float64)
        return (xq.astype(np.float64) @ q.T) * scale[None].astype(np.float64) * xs[:, None]

    worst = 0.0
    cs = approx(cq, cscale, coarse_t.shape[1])[:, :G]
    sig = np.sqrt((np.max(np.einsum("nd,nd->n", crows, crows)) * xs ** 2 + x2 * float(np.max(cscale)) ** 2) / 12)
    worst = max(worst, float(np.max(np.abs(cs - x.astype(np.float64) @ crows[:G].T.astype(np.float64)) / sig[:, None])))
    probes = np.argsort(-(x @ crows[:G].T), axis=1)[:, :nprobe]
    for g in np.unique(probes):
        rows = np.flatnonzero((probes == g).any(axis=1))
        lo, hi = int(pcol[g]), int(pcol[g + 1])
        real = ids[lo:hi] != 0xFFFFFFFF
        got = approx(pq[d * lo:d * hi], pscale[lo:hi], hi - lo)[rows][:, real]
        want = x[rows].astype(np.float64) @ cents[ids[lo:hi][real].astype(np.int64)].T.astype(np.float64)
        sig = np.sqrt((bound[g, 0] * xs[rows] ** 2 + x2[rows] * bound[g, 1]) / 12)
        worst = max(worst, float(np.max(np.abs(got - want) / sig[:, None])))
    return worst


def int8_main(args: argparse.Namespace) -> int:
    """The --int8 comparison (see the module's docstring)."""
    from bench_engine import write_stamped_report

    from plaidx.engine.codec import centroid_arrays, stored_centroids
    from plaidx.engine.index import Index
    load0 = os.getloadavg()
    values = np.load(Path(args.collection) / "values.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    start = int(rng.integers(0, max(1, values.shape[0] - args.tokens)))
    x = np.ascontiguousarray(values[start:start + args.tokens], dtype=np.float32)
    if args.centroids_from is None and len(x) < args.tokens:
        raise SystemExit(f"the collection has {values.shape[0]:,} tokens, fewer than --tokens {args.tokens:,}")
    if args.centroids_from:
        cents = np.ascontiguousarray(Index.open(args.centroids_from)._snap.codec.centroids, dtype=np.float32)
        source = f"the {cents.shape[0]:,} centroids of `{args.centroids_from}` as that index stores them"
    else:  # as a build of this collection trains and stores them (nbits 2)
        n_tok = values.shape[0]
        nlist = args.nlist or clustering.default_nlist(n_tok, 2)
        pick = np.sort(rng.choice(n_tok, min(n_tok, clustering.default_kmeans_sample(nlist, n_tok)), replace=False))
        cents = clustering.train_centroids(np.asarray(values[pick], dtype=np.float32), nlist, 4, 0)
        cents = stored_centroids(centroid_arrays(cents, 2, n_tok))
        source = f"{nlist:,} centroids trained on the collection and stored as a default nbits-2 build stores them"
    t = time.perf_counter()
    a = clustering.Assigner(cents)
    setup_s = time.perf_counter() - t
    if a.int8 is None:
        raise SystemExit("the int8 candidate scores do not run here (kernels.INT8_VNNI is False: no AVX-512 VNNI)")
    f32 = clustering.Assigner(cents, int8=False)
    grouped = a._grouped
    methods = {"float32 scores": f32.assign, "int8 candidates, re-scored in float32": a.assign}
    if args.baseline_core:
        old = load_core(args.baseline_core)
        methods = {"float32 scores, previous build (--baseline-core)":
                   lambda v: old.assign_nearest(v, *grouped), **methods}
    rows, codes = [], {}
    for r in range(args.rounds):  # interleaved rounds: each method meets the same load
        for name, fn in methods.items():
            t = time.perf_counter()
            codes[name] = fn(x).astype(np.int64)
            us = (time.perf_counter() - t) / len(x) * 1e6
            if r == 0:
                rows.append({"method": name, "us_per_token": us})
            else:
                row = next(w for w in rows if w["method"] == name)
                row["us_per_token"] = min(row["us_per_token"], us)
    ref_codes = codes["float32 scores"]
    for row in rows:
        row["same_codes"] = float(np.mean(codes[row["method"]] == ref_codes))
        print(f"[assign int8] {row['method']}: {row['us_per_token']:.2f} us/token, same codes {row['same_codes']:.6f}",
              flush=True)
    worst = rounding_errors(a, x[:args.error_tokens])
    base = rows[0]["us_per_token"]
    body = [f"- {len(x):,} consecutive tokens of `{Path(args.collection).name}` (from token {start:,}); {source}; "
            f"{grouped[1]:,} groups, {grouped[5]} probed; best of {args.rounds} interleaved rounds; Assigner setup "
            f"{setup_s:.1f} s (k-means of the centroids into groups, and the int8 layout).", "",
            "| method | us / token | vs first row | same code as float32 |", "|---|---:|---:|---:|"]
    body += [f"| {r['method']} | {r['us_per_token']:.2f} | {base / r['us_per_token']:.2f}x | {r['same_codes']:.6f} |"
             for r in rows]
    body += ["", f"Largest rounding error of the int8 scores over the first {min(len(x), args.error_tokens):,} "
             "tokens (every group centre, and every column of the probed groups): "
             f"{worst:.2f} deviations of the kernel's margin, which re-scores in float32 every column within 10."]
    write_stamped_report(f"assign_int8_{args.tag}",
                         f"Nearest-centroid assignment: int8 candidate scores against float32 ({args.tag})", body,
                         {"rows": rows, "largest_error_sigmas": worst, "tokens": len(x), "nlist": cents.shape[0]},
                         2, list(load0))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--int8", action="store_true", help="float32 against int8 candidate scores (see above)")
    ap.add_argument("--collection", help="--int8: a cached collection folder (values.npy)")
    ap.add_argument("--centroids-from", help="--int8: an index folder whose centroids to assign to (default: train "
                    "them as a build would)")
    ap.add_argument("--baseline-core", help="--int8: an earlier build's plaidx/_core*.so, timed in the same run")
    ap.add_argument("--tag", default="run", help="--int8: the report's name, results/assign_int8_<tag>")
    ap.add_argument("--nlist", type=int, default=None, help="--int8 without --centroids-from: centroids to train "
                    "(default: a build's for the collection's size)")
    ap.add_argument("--error-tokens", type=int, default=2000, help="--int8: tokens whose rounding errors are measured")
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--nlists", default="4096,16384,65536,131072")
    ap.add_argument("--tokens", type=int, default=200_000, help="tokens assigned per method")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if args.int8:
        if not args.collection:
            ap.error("--int8 needs --collection")
        return int8_main(args)
    faiss.omp_set_num_threads(2)
    load0 = os.getloadavg()
    coll = synthetic.ensure(n_docs=args.ndocs, nq=100)
    rng = np.random.default_rng(0)
    x = np.asarray(coll.values[np.sort(rng.choice(coll.n_tokens, args.tokens, replace=False))], dtype=np.float32)
    rows = []
    for nlist in (int(v) for v in args.nlists.split(",")):
        sample = np.asarray(coll.values[np.sort(rng.choice(coll.n_tokens, min(coll.n_tokens,
                            clustering.default_kmeans_sample(nlist, coll.n_tokens)), replace=False))], dtype=np.float32)
        t = time.perf_counter()
        cents = clustering.train_centroids(sample, nlist, 4, 0)
        kmeans_s = time.perf_counter() - t
        flat = faiss.IndexFlatIP(cents.shape[1])
        flat.add(cents)
        n_truth = min(len(x), 20_000)
        truth = flat.search(x[:n_truth], 1)[1][:, 0]
        best_score = np.einsum("nd,nd->n", x[:n_truth], cents[truth])
        methods = {}
        t = time.perf_counter()
        methods["plaidx grouped"] = (clustering.Assigner(cents).assign, time.perf_counter() - t)
        t = time.perf_counter()
        ivf, ivf_coarse = faiss_ivf(cents)
        methods["faiss IVF (nprobe 8)"] = (lambda v, i=ivf, _c=ivf_coarse: i.search(v, 1)[1][:, 0],
                                           time.perf_counter() - t)
        t = time.perf_counter()
        hnsw = faiss_hnsw(cents)
        methods["faiss HNSW (efSearch 64)"] = (lambda v, i=hnsw: i.search(v, 1)[1][:, 0], time.perf_counter() - t)
        methods["faiss flat (exact)"] = (lambda v, i=flat: i.search(v, 1)[1][:, 0], 0.0)
        for name, (fn, setup_s) in methods.items():
            n = len(x) if "flat" not in name else min(len(x), 20_000)
            codes, us = timed(fn, x[:n], args.rounds)
            got = codes[:n_truth]
            lost = best_score - np.einsum("nd,nd->n", x[:n_truth], cents[got])
            rows.append({"nlist": nlist, "method": name, "us_per_token": us, "setup_s": setup_s,
                         "exact_share": float(np.mean(got == truth)), "mean_score_lost": float(lost.mean()),
                         "kmeans_s": kmeans_s, "tokens": n})
            print(f"[assign] nlist {nlist} {name}: {us:.2f} us/token, exact {rows[-1]['exact_share']:.3f}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    lines = ["# Nearest-centroid assignment: plaidx's grouped kernel against faiss", "",
             f"- date: {dt.datetime.now().isoformat(timespec='seconds')}; commit {commit[:10]}",
             f"- machine: {cpu}, 2 threads; load average at start {[round(v, 2) for v in load0]}, at end "
             f"{[round(v, 2) for v in os.getloadavg()]} (compare methods within an nlist, not across runs)",
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
             f"- {args.tokens:,} tokens of the synthetic collection of {coll.n_tokens:,} tokens (exact flat search "
             "on the first 20,000); centroids from plaidx's k-means on the same collection; best of "
             f"{args.rounds} rounds; exact share and score lost against exact flat search on the first 20,000.", "",
             "| nlist | method | us / token | exact nearest | mean score lost | setup s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['nlist']:,} | {r['method']} | {r['us_per_token']:.2f} | {r['exact_share']:.3f} | "
                     f"{r['mean_score_lost']:.5f} | {r['setup_s']:.1f} |")
    lines += ["", "plaidx used faiss IVF from 4,096 and HNSW from 32,768 centroids before this kernel; the grouped "
              "kernel now serves every nlist from 4,096 (below, exact flat search)."]
    (RESULTS_DIR / "assign_synthetic.md").write_text("\n".join(lines) + "\n")
    (RESULTS_DIR / "assign_synthetic.json").write_text(json.dumps({"rows": rows, "commit": commit, "cli": sys.argv},
                                                                  indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
