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
  recall show side by side.

Each setting's recall@k against exact MaxSim comes from one batched call over every query. PLAID's
default p50 is read from the family's ``engine_<family>_<n>_families.json`` (same machine, an earlier
run: compare ratios loosely).

    .venv/bin/python benchmarks/search_stages.py --families fewtopics,neardup,lowrank,manytopics,heavytail

Writes ``results/search_stages_families.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families  # noqa: E402
from bench_engine import git_info, machine_info  # noqa: E402
from collection import RESULTS_DIR, exact_topk_cached, recall_at_k  # noqa: E402
from sweep_family_params import index_path, timed_interleaved  # noqa: E402

import plaidx  # noqa: E402

STAGES = {"probe": {"nprobe": 1, "ndocs": 10, "n_exact": 10}, "candidates": {"n_exact": 10}, "defaults": {},
          "n_exact 64": {"n_exact": 64}}
FLOAT_STAGES = ("probe", "defaults")  # also timed with float32 cell scores (SearchParams.cell_scores)


def plaid_default_p50(name: str, n_docs: int) -> float | None:
    rep = RESULTS_DIR / f"engine_{name}_{n_docs}_families.json"
    if not rep.exists():
        return None
    rows = [r for r in json.loads(rep.read_text())["rows"]
            if r["engine"] == "plaid" and (r.get("params") or {}).get("ncells", 1) == 1]
    return rows[0]["p50_ms"] if rows else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(families.FAMILIES))
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-queries", type=int, default=150)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    load_start = list(os.getloadavg())
    out = {}
    for name in args.families.split(","):
        path = index_path(name, args.ndocs)
        if not path.exists():
            print(f"[stages] {name}: no index at {path} (run bench_families.py first); skipped", flush=True)
            continue
        coll = families.ensure(name, args.ndocs)
        _, truth = exact_topk_cached(coll, args.k, threads=args.threads)
        index = plaidx.Index.open(path)
        labelled = list(STAGES.items())
        labelled += [(f"{label} f32", {"params": plaidx.SearchParams(**STAGES[label], cell_scores="float32")})
                     for label in FLOAT_STAGES]
        settings = [dict(s, num_threads=args.threads) for _, s in labelled]
        timed = timed_interleaved(index, coll.queries, settings, args.k, args.timed_queries)
        rows = {}
        for (label, s), t in zip(labelled, timed):
            _, ids = index.search(coll.queries, k=args.k, num_threads=args.threads, **s)
            shown = {"cell_scores": "float32", **STAGES[label[:-4]]} if label.endswith(" f32") else s
            rows[label] = {"params": shown, "recall_at_k": recall_at_k(ids, truth, args.k), **t}
        out[name] = {"rows": rows, "plaid_defaults_p50_ms": plaid_default_p50(name, args.ndocs),
                     "nlist": index.nlist}
        print(f"[stages] {name}: " + ", ".join(f"{k} {v['p50_ms']:.2f} ms" for k, v in rows.items()), flush=True)

    m = machine_info(args.threads)
    m["loadavg_at_start"] = load_start
    lines = [f"# Where a default plaidx search spends its time ({', '.join(out)}; k {args.k})", "",
             f"{dt.datetime.now().isoformat(timespec='seconds')} | plaidx commit {git_info().get('commit', '?')[:10]} | "
             f"{m.get('cpu')} ({m.get('cpu_count')} cores) | {args.threads} threads | load average at start "
             f"{[round(x, 2) for x in load_start]}, at end {[round(x, 2) for x in os.getloadavg()]} | "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}", "",
             "Command: `" + " ".join([Path(sys.executable).name, *sys.argv]) + "`", "",
             "Single-query p50 (ms) over " + str(args.timed_queries) + " queries per family, settings interleaved "
             "query by query; recall@10 against exact MaxSim from one batched call. probe: nprobe 1, ndocs 10, "
             "n_exact 10 (the query against all centroids); candidates: defaults with n_exact 10 (stages 1-4); "
             "exact stage = defaults - candidates. PLAID defaults: its p50 in the family's "
             "`engine_<family>_10000_families` run (ncells 1, threshold 0.5, ndocs 256); budget = 1/3 of it.", "",
             "f32: the same with cell_scores=\"float32\" (the float first stage of earlier releases).", "",
             "| family | probe | probe f32 | candidates | defaults (recall) | defaults f32 (recall) | exact stage | "
             "n_exact 64 (recall) | PLAID defaults | 1/3 budget |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rep in out.items():
        r = rep["rows"]
        pd = rep["plaid_defaults_p50_ms"]
        lines.append(f"| {name} | {r['probe']['p50_ms']:.2f} | {r['probe f32']['p50_ms']:.2f} | "
                     f"{r['candidates']['p50_ms']:.2f} | "
                     f"{r['defaults']['p50_ms']:.2f} ({r['defaults']['recall_at_k']:.3f}) | "
                     f"{r['defaults f32']['p50_ms']:.2f} ({r['defaults f32']['recall_at_k']:.3f}) | "
                     f"{r['defaults']['p50_ms'] - r['candidates']['p50_ms']:.2f} | "
                     f"{r['n_exact 64']['p50_ms']:.2f} ({r['n_exact 64']['recall_at_k']:.3f}) | "
                     + (f"{pd:.2f} | {pd / 3:.2f} |" if pd else "- | - |"))
    (RESULTS_DIR / "search_stages_families.md").write_text("\n".join(lines) + "\n")
    (RESULTS_DIR / "search_stages_families.json").write_text(json.dumps(
        {"families": out, "machine": m, "git": git_info(), "cli": sys.argv[1:],
         "created": dt.datetime.now().isoformat(timespec="seconds")}, indent=1))
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
