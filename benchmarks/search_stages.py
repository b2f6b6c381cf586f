"""Where a default plaidx search spends its time, family by family, against PLAID's default p50.

Issue 15's first target asks plaidx's defaults for at most 1/3 of PLAID's default p50. This benchmark
shows which stage stands in the way. On each family's default index (built by ``bench_families.py``) it
times single-query calls of settings that stop the PLAID pipeline at successive stages, interleaved query
by query so load changes hit every setting alike:

- ``probe``: nprobe 1, ndocs k, n_exact k: the query against every centroid, the probe and a few
  candidates (stage 1 of the search);
- ``candidates``: the default nprobe and ndocs with n_exact k: stages 1-4 (candidate generation and
  both centroid-interaction passes), almost no exact scoring;
- ``defaults``: the whole default search (the exact MaxSim of n_exact = 128 decompressed documents);
- ``n_exact 64``: the defaults with half the exact stage, to show what a cheaper default would trade;
- ``probe f32`` and ``defaults f32``: ``probe`` and ``defaults`` with ``cell_scores="float32"`` (the first
  stage of earlier releases and of Stanford PLAID), so the int8 cell scores' gain and their effect on
  recall show side by side;
- ``defaults exact int8`` and ``defaults exact f32``: the defaults with ``exact_scores="int8"`` (each decoded
  token quantised to int8, the default before the lookup stage) and ``"float32"`` (the float last stage of
  earlier releases), against the lookup-table stage of the defaults (``"adc"``).

Real sets (``--real cranfield,cisi,scifact``, encoded by ``real_embeddings.py``, indexes built by
``bench_families.py``) are timed the same way.

Each setting's recall@k against exact MaxSim comes from one batched call over every query. PLAID's
default p50 is read from the family's ``engine_<family>_<n>_families.json`` (same machine, an earlier
run: compare ratios loosely).

    .venv/bin/python benchmarks/search_stages.py --families fewtopics,neardup,lowrank,manytopics,heavytail

Writes ``results/search_stages_<tag>.json`` and ``.md`` (``--tag``, default ``families``); run with
``PLAIDX_SIMD=avx2 ... --tag families_avx2`` it times the AVX2 copies of the kernels on an AVX-512 machine. Not
part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families  # noqa: E402
from bench_engine import write_stamped_report  # noqa: E402
from bench_families import REAL, resolve  # noqa: E402
from collection import CACHE_DIR, RESULTS_DIR, exact_topk_cached, load_collection, recall_at_k  # noqa: E402
from sweep_family_params import timed_interleaved  # noqa: E402

import plaidx  # noqa: E402

STAGES = {"probe": {"nprobe": 1, "ndocs": 10, "n_exact": 10}, "candidates": {"n_exact": 10}, "defaults": {},
          "n_exact 64": {"n_exact": 64}}
FLOAT_STAGES = ("probe", "defaults")  # also timed with float32 cell scores (SearchParams.cell_scores)
EXACT_F32 = "defaults exact f32"  # the defaults with exact_scores="float32"
EXACT_INT8 = "defaults exact int8"  # the defaults with exact_scores="int8"


def index_folder(name: str, n_docs: int) -> Path | None:
    """The plaidx index bench_families.py built for a collection (any d), or None."""
    return next(iter(sorted((CACHE_DIR / "runs").glob(f"{name}_{n_docs}_d*/plaidx_nb2_t2/index"))), None)


def plaid_default_p50(name: str, n_docs: int, tag: str = "families") -> float | None:
    rep = RESULTS_DIR / f"engine_{name}_{n_docs}_{tag}.json"
    if not rep.exists():
        return None
    rows = [r for r in json.loads(rep.read_text())["rows"]
            if r["engine"] == "plaid" and (r.get("params") or {}).get("ncells", 1) == 1]
    return rows[0]["p50_ms"] if rows else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(families.FAMILIES))
    ap.add_argument("--real", default="", help=f"real sets too, of {','.join(REAL)}")
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-queries", type=int, default=150)
    ap.add_argument("--tag", default="families", help="the report is results/search_stages_<tag> (e.g. a run with "
                                                      "PLAIDX_SIMD=avx2 beside the default one)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    load_start = list(os.getloadavg())
    out = {}
    names = [n for n in args.families.split(",") + args.real.split(",") if n]
    for name in names:
        if name in REAL:
            cpath = resolve(name, args.ndocs)
            coll = load_collection(cpath) if cpath is not None else None
        else:
            coll = families.ensure(name, args.ndocs)
        path = index_folder(name, coll.n_docs) if coll is not None else None
        if path is None:
            print(f"[stages] {name}: no index (run bench_families.py first); skipped", flush=True)
            continue
        _, truth = exact_topk_cached(coll, args.k, threads=args.threads)
        index = plaidx.Index.open(path)
        labelled = list(STAGES.items())
        labelled += [(f"{label} f32", {"params": plaidx.SearchParams(**STAGES[label], cell_scores="float32")})
                     for label in FLOAT_STAGES]
        labelled += [(EXACT_F32, {"params": plaidx.SearchParams(exact_scores="float32")}),
                     (EXACT_INT8, {"params": plaidx.SearchParams(exact_scores="int8")})]
        settings = [dict(s, num_threads=args.threads) for _, s in labelled]
        timed = timed_interleaved(index, coll.queries, settings, args.k, args.timed_queries)
        rows = {}
        for (label, s), t in zip(labelled, timed):
            _, ids = index.search(coll.queries, k=args.k, num_threads=args.threads, **s)
            if label in (EXACT_F32, EXACT_INT8):
                shown = {"exact_scores": "float32" if label == EXACT_F32 else "int8"}
            else:
                shown = {"cell_scores": "float32", **STAGES[label[:-4]]} if label.endswith(" f32") else s
            rows[label] = {"params": shown, "recall_at_k": recall_at_k(ids, truth, args.k), **t}
        out[name] = {"rows": rows, "plaid_defaults_p50_ms": plaid_default_p50(name, coll.n_docs,
                                                                               "real" if name in REAL else "families"),
                     "nlist": index.nlist, "dim": index.dim, "n_docs": coll.n_docs}
        print(f"[stages] {name}: " + ", ".join(f"{k} {v['p50_ms']:.2f} ms" for k, v in rows.items()), flush=True)

    lines = ["Single-query p50 (ms) over " + str(args.timed_queries) + " queries per collection, settings interleaved "
             "query by query; recall@10 against exact MaxSim from one batched call. probe: nprobe 1, ndocs 10, "
             "n_exact 10 (the query against all centroids); candidates: defaults with n_exact 10 (stages 1-4); "
             "PLAID defaults: its p50 in the collection's `engine_<name>_<n>_families` (real sets: `_real`) run "
             "(ncells 1, threshold 0.5, ndocs 256); budget = 1/3 of it.", "",
             "cell f32: the defaults with cell_scores=\"float32\" (the float first stage of earlier releases); "
             "exact int8 / f32: the defaults with exact_scores=\"int8\" (the default before the lookup stage) "
             "and \"float32\" (the float last stage of earlier releases); the defaults score it by lookup tables "
             f"(\"adc\", its {plaidx.build_info().get('adc_copy')} copy here). exact stage = that setting - "
             "candidates.", "",
             "| collection | d | probe | probe f32 | candidates | defaults (recall) | defaults, cell f32 (recall) | "
             "defaults, exact int8 (recall) | defaults, exact f32 (recall) | exact stage default / int8 / f32 | "
             "n_exact 64 (recall) | PLAID defaults | 1/3 budget |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rep in out.items():
        r = rep["rows"]
        pd = rep["plaid_defaults_p50_ms"]
        cand = r['candidates']['p50_ms']
        lines.append(f"| {name} | {rep['dim']} | {r['probe']['p50_ms']:.2f} | {r['probe f32']['p50_ms']:.2f} | "
                     f"{cand:.2f} | "
                     f"{r['defaults']['p50_ms']:.2f} ({r['defaults']['recall_at_k']:.3f}) | "
                     f"{r['defaults f32']['p50_ms']:.2f} ({r['defaults f32']['recall_at_k']:.3f}) | "
                     f"{r[EXACT_INT8]['p50_ms']:.2f} ({r[EXACT_INT8]['recall_at_k']:.3f}) | "
                     f"{r[EXACT_F32]['p50_ms']:.2f} ({r[EXACT_F32]['recall_at_k']:.3f}) | "
                     f"{r['defaults']['p50_ms'] - cand:.2f} / {r[EXACT_INT8]['p50_ms'] - cand:.2f} / "
                     f"{r[EXACT_F32]['p50_ms'] - cand:.2f} | "
                     f"{r['n_exact 64']['p50_ms']:.2f} ({r['n_exact 64']['recall_at_k']:.3f}) | "
                     + (f"{pd:.2f} | {pd / 3:.2f} |" if pd else "- | - |"))
    write_stamped_report(f"search_stages_{args.tag}",
                         f"Where a default plaidx search spends its time ({', '.join(out)}; k {args.k})", lines,
                         {"families": out}, args.threads, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
