"""One search-parameter grid over every collection family's index: which single default lifts the weakest family.

For each family of ``families.py`` (its index built by ``bench_families.py`` with plaidx defaults, in
``results/cache/runs/<family>_<n>_d128/plaidx_nb2_t2/index``) it measures, with one batched call per setting
over every query, recall@k against exact MaxSim for a grid of nprobe x centroid_score_threshold x ndocs x
n_exact (plus the current defaults). A setting is a candidate default when its recall is at least the
current default's on every family. The best candidates (by their smallest gain over the families, then
their gain on the weakest family) and the defaults are then timed with single-query calls, interleaved
query by query so that load changes on this shared machine hit every setting alike; their cost is
reported as the ratio of their p50 (wall and process CPU) to the defaults' p50 in the same run. Batched
recall per setting is memoised in ``results/cache/defaults_sweep`` (per index), so a rerun with a wider
grid only searches the new settings; batched ms/query of memoised settings come from the run that made them.

    nice -n 10 .venv/bin/python benchmarks/sweep_family_params.py
    .venv/bin/python benchmarks/sweep_family_params.py --families manytopics,lowrank --timed 6   # quicker

Writes ``results/defaults_sweep_families.json`` and ``.md``. Not part of CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families  # noqa: E402
from bench_engine import git_info, machine_info  # noqa: E402
from collection import CACHE_DIR, RESULTS_DIR, exact_topk_cached, recall_at_k  # noqa: E402

import plaidx  # noqa: E402
from plaidx.engine.params import SearchParams  # noqa: E402

KNOBS = ("nprobe", "centroid_score_threshold", "ndocs", "n_exact")
NPROBE = "2,3,4,8"
THRESHOLD = "0.4"
NDOCS = "1024,2048,4096"
N_EXACT = "128,256,512,1024"


def index_path(name: str, n_docs: int) -> Path:
    return CACHE_DIR / "runs" / f"{name}_{n_docs}_d128" / "plaidx_nb2_t2" / "index"


def grid(args) -> list[dict]:
    axes = [[int(x) for x in args.nprobe.split(",")], [float(x) for x in args.threshold.split(",")],
            [int(x) for x in args.ndocs.split(",")], [int(x) for x in args.n_exact.split(",")]]
    return [dict(zip(KNOBS, combo)) for combo in itertools.product(*axes) if combo[3] <= combo[2]]


def key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def timed_interleaved(index, queries: np.ndarray, settings: list[dict], k: int, n_queries: int,
                      warmup: int = 5) -> list[dict]:
    """p50 wall and process-CPU ms of single-query calls, every setting on each query before the next query."""
    for s in settings:
        for i in range(warmup):
            index.search(queries[i], k=k, **s)
    step = max(1, len(queries) // n_queries)
    picks = range(0, len(queries), step)
    wall = np.empty((len(settings), len(picks)))
    cpu = np.empty_like(wall)
    for j, i in enumerate(picks):
        for si, s in enumerate(settings):
            t, c = time.perf_counter(), time.process_time()
            index.search(queries[i], k=k, **s)
            wall[si, j], cpu[si, j] = time.perf_counter() - t, time.process_time() - c
    return [{"p50_ms": float(np.median(w) * 1e3), "cpu_p50_ms": float(np.median(c) * 1e3)}
            for w, c in zip(wall, cpu)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(families.FAMILIES))
    ap.add_argument("--ndocs-collection", type=int, default=10_000, help="documents per family (~100 tokens each)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", default=NPROBE, help="comma list")
    ap.add_argument("--threshold", default=THRESHOLD, help="comma list")
    ap.add_argument("--ndocs", default=NDOCS, help="comma list")
    ap.add_argument("--n-exact", default=N_EXACT, help="comma list")
    ap.add_argument("--timed", type=int, default=10, help="candidate settings timed besides the defaults")
    ap.add_argument("--timed-queries", type=int, default=100, help="queries per family in the timing pass")
    ap.add_argument("--candidates", default=None,
                    help="JSON list of settings to time (all four knobs each) instead of choosing them from the grid")
    ap.add_argument("--max-cost", type=float, default=1.6,
                    help="largest p50 ratio to the defaults a proposed default may cost (on every family)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="defaults_sweep_families")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    names = args.families.split(",")
    settings = grid(args)
    load_start = list(__import__("os").getloadavg())
    git = git_info()
    data = {}
    with threadpool_limits(args.threads):
        for name in names:
            coll = families.ensure(name, args.ndocs_collection)
            path = index_path(name, args.ndocs_collection)
            if not path.exists():
                raise SystemExit(f"no plaidx index for {name} at {path}: run benchmarks/bench_families.py "
                                 f"--collections {name} --peers none first")
            index = plaidx.Index.open(path)
            q = np.ascontiguousarray(coll.queries, dtype=np.float32)
            _, truth = exact_topk_cached(coll, args.k, threads=args.threads)
            index.search(q[0], k=args.k)  # warm-up: derives the inverted file
            t0 = time.perf_counter()
            defaults = SearchParams().resolve(args.k, n_tokens=index.n_tokens)
            # Batched recall per setting is kept beside the index's cache (keyed by the index's manifest), so
            # an interrupted sweep or a wider grid only runs the settings it has not seen.
            memo_p = CACHE_DIR / "defaults_sweep" / f"{name}_{args.ndocs_collection}_k{args.k}.json"
            stamp = (path / "manifest.json").stat().st_mtime_ns
            memo = json.loads(memo_p.read_text()) if memo_p.exists() else {}
            if memo.get("index_stamp") != stamp:
                memo = {"index_stamp": stamp, "rows": {}}
            rows = {}
            for s in [{}] + settings:
                if key(s) not in memo["rows"]:
                    t = time.perf_counter()
                    _, ids = index.search(q, k=args.k, **s)
                    memo["rows"][key(s)] = {"recall": recall_at_k(ids, truth, args.k),
                                            "batched_ms": (time.perf_counter() - t) * 1e3 / len(q)}
                    memo_p.parent.mkdir(parents=True, exist_ok=True)
                    memo_p.write_text(json.dumps(memo))
                rows[key(s)] = dict(memo["rows"][key(s)])
            print(f"[sweep {time.strftime('%H:%M:%S')}] {name}: {len(rows)} settings in "
                  f"{time.perf_counter() - t0:.0f}s; defaults {rows[key({})]['recall']:.3f}, best "
                  f"{max(r['recall'] for r in rows.values()):.3f}", flush=True)
            data[name] = {"collection": str(coll.path), "index": str(path), "n_tokens": int(index.n_tokens),
                          "nlist": int(index.nlist), "defaults": {f: getattr(defaults, f) for f in KNOBS},
                          "rows": rows, "queries": q, "index_obj": index}

        # Candidates: never below the current default on any family; rank by the smallest gain, then the
        # gain on the family where the defaults are weakest.
        weakest = min(names, key=lambda n: data[n]["rows"][key({})]["recall"])

        def gains(s: dict) -> list[float]:
            return [data[n]["rows"][key(s)]["recall"] - data[n]["rows"][key({})]["recall"] for n in names]

        same = [data[n]["defaults"] for n in names]
        cands = [s for s in settings if min(gains(s)) >= 0 and s not in same]
        by_weakest = sorted(cands, key=lambda s: -(data[weakest]["rows"][key(s)]["recall"]))
        cheap = sorted(cands, key=lambda s: max(data[n]["rows"][key(s)]["batched_ms"]
                                                / data[n]["rows"][key({})]["batched_ms"] for n in names))
        # Time the best lifts and the cheapest non-losing settings, half each.
        chosen: list[dict] = []
        for s in itertools.chain.from_iterable(itertools.zip_longest(by_weakest, cheap)):
            if s is not None and s not in chosen:
                chosen.append(s)
            if len(chosen) >= args.timed:
                break
        if args.candidates:
            chosen = [dict(zip(KNOBS, (c[f] for f in KNOBS))) for c in json.loads(args.candidates)]
            missing = [c for c in chosen if key(c) not in data[names[0]]["rows"]]
            if missing:
                raise SystemExit(f"--candidates {json.dumps(missing)} are not in the grid: widen --nprobe/--ndocs/...")
        timed_settings = [{}] + chosen
        for name in names:
            d = data[name]
            res = timed_interleaved(d["index_obj"], d["queries"], timed_settings, args.k, args.timed_queries)
            for s, r in zip(timed_settings, res):
                d["rows"][key(s)].update(r)
            print(f"[sweep {time.strftime('%H:%M:%S')}] {name}: timed {len(timed_settings)} settings", flush=True)

    def cost(s: dict, field: str) -> float:
        return max(data[n]["rows"][key(s)][field] / data[n]["rows"][key({})][field] for n in names)

    ok = [s for s in chosen if cost(s, "p50_ms") <= args.max_cost and cost(s, "cpu_p50_ms") <= args.max_cost]
    proposal = max(ok, key=lambda s: (data[weakest]["rows"][key(s)]["recall"], -cost(s, "cpu_p50_ms")), default=None)
    write(args, names, data, settings, timed_settings, weakest, proposal, load_start, git, cost)
    return 0


def write(args, names, data, settings, timed_settings, weakest, proposal, load_start, git, cost) -> None:
    m = machine_info(args.threads)
    m["loadavg_at_start"] = load_start
    created = dt.datetime.now().isoformat(timespec="seconds")
    d0 = data[names[0]]["defaults"]
    fmt = lambda s: "defaults " + json.dumps(d0) if not s else json.dumps(s)  # noqa: E731
    lines = [f"# Search defaults across the collection families ({', '.join(names)}; k {args.k})", "",
             f"{created} | plaidx commit {git.get('commit', '?')[:10]}{' (plaidx/ dirty)' if git.get('plaidx_dirty') else ''}"
             f" | {m.get('cpu')} ({m.get('cpu_count')} cores) | {args.threads} threads | load average at start "
             f"{[round(x, 2) for x in load_start]}, at end {[round(x, 2) for x in m['loadavg_1_5_15']]} | "
             f"OPENBLAS_CORETYPE={(m.get('env') or {}).get('OPENBLAS_CORETYPE')} | BLAS: "
             + ", ".join(f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')}"
                         for b in m.get("blas_harness", [])), "",
             "Command: `" + " ".join(["python", *sys.argv]) + "`", "",
             f"Each family: ~1M tokens, d 128, 300 queries, its plaidx index at default build settings (nlist "
             f"{', '.join(str(data[n]['nlist']) for n in names)}). recall@{args.k} against exact MaxSim over the "
             f"uncompressed embeddings, one batched call per setting over all queries ({len(settings)} settings). "
             f"Timed settings: single-query p50 over {args.timed_queries} queries per family, interleaved query by "
             "query; `wall x` / `CPU x` = the largest ratio over the families of that setting's p50 to the "
             "defaults' p50 in this run (process CPU time is less sensitive to the other jobs on this 2-core "
             f"machine). Candidates never lose recall to the current defaults on any family. Weakest family under "
             f"the defaults: {weakest}.", ""]
    lines += ["## Timed settings", "",
              "| setting | " + " | ".join(names) + " | smallest gain | wall x | CPU x |",
              "|---|" + "---|" * (len(names) + 3)]
    for s in timed_settings:
        cells = []
        for n in names:
            r = data[n]["rows"][key(s)]
            cells.append(f"{r['recall']:.3f} / {r['p50_ms']:.2f} / {r['cpu_p50_ms']:.2f}")
        g = min(data[n]["rows"][key(s)]["recall"] - data[n]["rows"][key({})]["recall"] for n in names)
        lines.append(f"| {fmt(s)} | " + " | ".join(cells) + f" | {g:+.3f} | {cost(s, 'p50_ms'):.2f} | "
                     f"{cost(s, 'cpu_p50_ms'):.2f} |")
    lines += ["", "Cells: recall@10 / p50 ms wall / p50 ms process CPU.", ""]
    if proposal is None:
        lines += [f"No timed candidate stays within {args.max_cost}x the defaults' p50 on every family.", ""]
    else:
        lines += [f"**Proposal** (the timed candidate with the best recall on {weakest} within "
                  f"{args.max_cost}x the defaults' p50, wall and CPU, on every family): {json.dumps(proposal)}.", ""]
    lines += ["## Every setting (recall@10; batched ms/query in brackets)", "",
              "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    order = sorted([{}] + settings, key=lambda s: -data[weakest]["rows"][key(s)]["recall"])
    for s in order:
        lines.append(f"| {fmt(s)} | " + " | ".join(
            f"{data[n]['rows'][key(s)]['recall']:.3f} ({data[n]['rows'][key(s)]['batched_ms']:.1f})" for n in names) + " |")
    (RESULTS_DIR / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    out = {"created": created, "git": git, "machine": m, "k": args.k, "command": sys.argv, "weakest": weakest,
           "proposal": proposal, "timed": timed_settings,
           "families": {n: {kk: v for kk, v in data[n].items() if kk not in ("queries", "index_obj")} for n in names}}
    (RESULTS_DIR / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=float))
    print("\n".join(lines[: 14 + len(timed_settings)]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
