"""Recall against collection size: one synthetic family from 1M to 32M tokens, at the default nlist and wider.

Issue 15's item 4: recall@10 at 32M (and 100M) tokens within 0.02 of the same family's 1M-token figure.
For each size (``--sizes``, documents of ~100 tokens of ``synthetic.py``'s default family) and each nlist
of ``--nlists`` (``default``: plaidx's own rule; a number: passed explicitly; only values below a quarter
of the tokens are run) it runs ``bench_engine.py`` (plaidx alone, its default search, a build per
setting in its own subprocess) and tabulates recall@10 against exact MaxSim over the uncompressed
embeddings, p50, build time and peak RSS, and bytes per token, with each recall's difference from the
1M-token row at the default nlist.

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000,320000 --nlists default,65536,131072

Writes ``results/scale_synthetic.json/.md`` (per-run reports under ``results/cache/scale``). Not part of CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402
from collection import CACHE_DIR, RESULTS_DIR  # noqa: E402

BENCH = Path(__file__).resolve().parent
RUNS = CACHE_DIR / "scale"


def run_one(n_docs: int, nlist: str, nq: int, reuse: bool, nice: int) -> dict | None:
    tag = f"scale_nl{nlist}"
    cmd = [sys.executable, str(BENCH / "bench_engine.py"), "--dataset", "synthetic", "--ndocs", str(n_docs),
           "--nq", str(nq), "--peers", "none", "--tag", tag, "--out-dir", str(RUNS), "--nice", str(nice),
           *(["--nlist", nlist] if nlist != "default" else []), *(["--reuse"] if reuse else [])]
    print(f"[scale {time.strftime('%H:%M:%S')}] {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=False)
    path = RUNS / f"engine_synthetic_{n_docs}_{tag}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summarize(runs: list[tuple[int, str, dict]], nq: int) -> None:
    rows = []
    for n_docs, nlist, rep in runs:
        row = next((r for r in rep["rows"] if r["engine"] == "plaidx" and not r.get("params")), None)
        if row is None or row.get("recall_at_k") is None:
            continue
        rows.append({"n_docs": n_docs, "n_tokens": rep["collection"]["n_tokens"], "nlist_arg": nlist,
                     "nlist": row.get("nlist"), "recall": row["recall_at_k"], "p50_ms": row["p50_ms"],
                     "cpu_p50_ms": row.get("cpu_p50_ms"), "build_s": row.get("build_s"),
                     "build_peak_rss_mb": row.get("build_peak_rss_mb"), "rss_after_open_mb": row.get("rss_after_open_mb"),
                     "bytes_per_token": row.get("bytes_per_token"), "created": rep.get("created"),
                     "loadavg": rep["machine"].get("loadavg_1_5_15")})
    base = next((r["recall"] for r in rows if r["nlist_arg"] == "default" and r["n_docs"] == min(x["n_docs"] for x in rows)),
                None)
    m = runs[0][2]["machine"] if runs else {}
    git = runs[0][2].get("git") if runs else {}
    lines = ["# Recall against collection size (synthetic family, nbits 2, default search)", "",
             f"- date: {dt.datetime.now().isoformat(timespec='seconds')}; plaidx commit "
             f"{(git or {}).get('commit', '?')[:10]}",
             f"- machine: {m.get('cpu')} ({m.get('cpu_count')} cores), 2 threads; OPENBLAS_CORETYPE="
             f"{(m.get('env') or {}).get('OPENBLAS_CORETYPE')}",
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
             f"- {nq} queries of 32 tokens, k 10; recall@10 against exact MaxSim over the uncompressed float32 "
             "embeddings; each build and search in its own subprocess (bench_engine.py, reports in "
             "results/cache/scale); p50 of single-query searches after warm-up.", "",
             "| documents | tokens | nlist | recall@10 | vs smallest, default nlist | p50 ms | CPU p50 ms | build s | "
             "build peak RSS MiB | RSS after open MiB | bytes/token |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['recall'] - base:+.3f}" if base is not None else "-"
        label = f"{r['nlist']:,}" + (" (default)" if r["nlist_arg"] == "default" else "")
        lines.append(f"| {r['n_docs']:,} | {r['n_tokens']:,} | {label} | {r['recall']:.3f} | {delta} | "
                     f"{r['p50_ms']:.2f} | {r['cpu_p50_ms'] or 0:.2f} | {r['build_s']} | {r['build_peak_rss_mb']} | "
                     f"{r['rss_after_open_mb']} | {r['bytes_per_token']:.1f} |")
    lines += ["", "Load average at the end of each run: " + "; ".join(
        f"{r['n_docs']}/{r['nlist_arg']} {[round(x, 2) for x in r['loadavg'] or []]}" for r in rows)]
    (RESULTS_DIR / "scale_synthetic.md").write_text("\n".join(lines) + "\n")
    (RESULTS_DIR / "scale_synthetic.json").write_text(json.dumps({"rows": rows, "machine": m, "git": git,
                                                                  "nq": nq, "cli": sys.argv}, indent=1))
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,320000", help="documents per collection (~100 tokens each)")
    ap.add_argument("--nlists", default="default,65536,131072", help="'default' and/or explicit nlist values")
    ap.add_argument("--nq", type=int, default=100)
    ap.add_argument("--reuse", action="store_true", help="reuse earlier builds (search re-runs)")
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--only", choices=["summary"], default=None)
    args = ap.parse_args(argv)
    runs = []
    for n_docs in (int(x) for x in args.sizes.split(",")):
        coll = synthetic.ensure(n_docs=n_docs, nq=args.nq)
        for nlist in args.nlists.split(","):
            if nlist != "default" and int(nlist) * 4 > coll.n_tokens:
                continue
            tag = f"scale_nl{nlist}"
            path = RUNS / f"engine_synthetic_{n_docs}_{tag}.json"
            rep = json.loads(path.read_text()) if args.only == "summary" and path.exists() else \
                None if args.only == "summary" else run_one(n_docs, nlist, args.nq, args.reuse, args.nice)
            if rep is not None:
                runs.append((n_docs, nlist, rep))
                summarize(runs, args.nq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
