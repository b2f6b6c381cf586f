"""Code width benchmark: the default PLAID search with uint16 codes before and after the kernels were
templated on the code type, and the same index read through uint32 codes, interleaved in one process.

The native module of the parent commit (``--baseline-core``: its plaidx/_core built as the project builds
it, copied anywhere) and this checkout's are loaded side by side and called with the same arrays and the
parameters ``Index.search`` resolves by default (one query per call, ``--threads`` threads). Each query
is run by every variant in a rotating order, so load on the machine hits all of them alike; the report
gives each variant's p50 and its ratio to the baseline. Results must be identical across variants.

    .venv/bin/python benchmarks/bench_code_width.py --baseline-core /tmp/parent/_core.cpython-311-x86_64-linux-gnu.so

Writes benchmarks/results/code_width_<dataset>_<ndocs>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_engine as be  # noqa: E402
import synthetic  # noqa: E402
from collection import RESULTS_DIR  # noqa: E402

import plaidx  # noqa: E402
from plaidx import _core  # noqa: E402
from plaidx.engine.params import SearchParams  # noqa: E402


def load_core(path: str):
    spec = importlib.util.spec_from_file_location("baseline._core", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-core", required=True, help="the parent commit's plaidx/_core shared object")
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--nq", type=int, default=300, help="queries, each searched once per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    baseline = load_core(args.baseline_core)
    coll = synthetic.ensure(n_docs=args.ndocs, nq=args.nq)
    queries = np.ascontiguousarray(coll.queries[: args.nq], dtype=np.float32)
    machine = be.machine_info(args.threads)
    machine["loadavg_at_start"] = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = plaidx.Index.build(Path(tmp) / "index", coll.iter_batches(2048), nbits=2, seed=0)
        build_s = time.perf_counter() - t0
        snap, a = index._snap, index._snap.a
        ivf, ivf_offsets = snap.ivf()
        cells, cell_offsets = snap.doc_cells()
        p = SearchParams().resolve(args.k, n_tokens=snap.n_tokens)
        nprobe = min(p.nprobe, snap.nlist)
        codes16 = np.ascontiguousarray(a["codes"])
        assert codes16.dtype == np.uint16
        codes32, cells32 = codes16.astype(np.uint32), cells.astype(np.uint32)
        variants = {"baseline uint16": (baseline, codes16, cells), "templated uint16": (_core, codes16, cells),
                    "templated uint32": (_core, codes32, cells32)}

        def run(name: str, q: np.ndarray):
            mod, codes, dc = variants[name]
            return mod.search(q, None, codes, a["residuals"], a["doc_offsets"], ivf, ivf_offsets,
                              snap.codec.centroids, snap.codec.weights, snap.nbits, snap.live_mask, nprobe,
                              p.centroid_score_threshold, p.ndocs, p.n_exact, args.k, num_threads=args.threads,
                              doc_cells=(dc, cell_offsets))

        names = list(variants)
        for name in names:  # warm up, and check the variants agree
            got = run(name, queries)
            want = run(names[0], queries)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            for i in range(queries.shape[0]):
                q = queries[i: i + 1]
                shift = (r * queries.shape[0] + i) % len(names)
                for name in names[shift:] + names[:shift]:
                    t = time.perf_counter()
                    run(name, q)
                    times[name].append(time.perf_counter() - t)
        nlist, n_tokens = snap.nlist, snap.n_tokens
    machine["loadavg_1_5_15"] = list(os.getloadavg())
    p50 = {n: float(np.median(v)) * 1e3 for n, v in times.items()}
    result = {"benchmark": "code_width", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              **be.git_info(), "command": " ".join(["benchmarks/bench_code_width.py", *(argv or sys.argv[1:])]),
              "machine": machine, "dataset": "synthetic", "ndocs": args.ndocs, "n_tokens": n_tokens, "nlist": nlist,
              "nbits": 2, "nq": int(queries.shape[0]), "rounds": args.rounds, "threads": args.threads, "k": args.k,
              "params": {"nprobe": nprobe, "centroid_score_threshold": p.centroid_score_threshold, "ndocs": p.ndocs,
                         "n_exact": p.n_exact}, "build_s": round(build_s, 1),
              "p50_ms": {n: round(v, 4) for n, v in p50.items()},
              "p90_ms": {n: round(float(np.percentile(v, 90)) * 1e3, 4) for n, v in times.items()},
              "ratio_to_baseline": {n: round(v / p50[names[0]], 4) for n, v in p50.items()}}
    out = RESULTS_DIR / f"code_width_synthetic_{args.ndocs}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    m = machine
    rows = "\n".join(f"| {n} | {p50[n]:.3f} | {result['p90_ms'][n]:.3f} | {result['ratio_to_baseline'][n]:.3f} |"
                     for n in names)
    out.with_suffix(".md").write_text(f"""# Code width: default search p50, uint16 before/after templating, and uint32

- date: {result['date']}; commit {result['commit']} (plaidx/csrc dirty: {result['plaidx_dirty']})
- command: `.venv/bin/python {result['command']}`
- machine: {m.get('cpu')}, {m.get('cpu_count')} cores, {args.threads} thread(s); load average at start
  {m['loadavg_at_start']}, at end {m['loadavg_1_5_15']}; BLAS: {m.get('blas_harness')}
- index: synthetic {args.ndocs} documents, {n_tokens} tokens, d 128, nbits 2, nlist {nlist} (default), built in
  {result['build_s']} s; default parameters for k {args.k}: {result['params']}
- {result['nq']} single-query searches x {args.rounds} rounds per variant, the variants' order rotating per
  query (one process, interleaved); results identical across variants (checked).

| variant | p50 ms | p90 ms | p50 / baseline |
|---|---|---|---|
{rows}

"baseline uint16" is the parent commit's native module; "templated uint16" this checkout's with the same
uint16 codes (the path every index of at most 65536 centroids takes); "templated uint32" the same index
with its codes and cell lists widened to uint32 (what an index above 65536 centroids reads: the cost of
the wider reads alone, at the same nlist).
""")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
