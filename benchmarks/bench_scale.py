"""Recall against collection size: one synthetic family from 1M to 32M tokens, at the default nlist and wider.

Issue 15's item 4: recall@10 at 32M (and 100M) tokens within 0.02 of the same family's 1M-token figure.
For each size (``--sizes``, documents of ~100 tokens of ``synthetic.py``'s default family) and each nlist
of ``--nlists`` (``default``: plaidx's own rule; a number: passed explicitly; only values below a quarter
of the tokens are run) it runs ``bench_engine.py`` (plaidx alone, its default search, a build per
setting in its own subprocess) and tabulates recall@10 against exact MaxSim over the uncompressed
embeddings, p50, build time and peak RSS, and bytes per token, with each recall's difference from the
1M-token row at the default nlist; at the default nlist also exhaustive search over the codes (the codec's
ceiling) and an index with the int8 rerank tier.

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000,320000 --nlists default,65536,131072

    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,1000000 --values-dtype float16   # 100M tokens

Writes ``results/scale_synthetic.json/.md`` from every run report under ``results/cache/scale`` (each
size's recall compared with the smallest size stored the same way). Not part of CI.
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

from plaidx.engine.clustering import default_nlist  # noqa: E402

BENCH = Path(__file__).resolve().parent
RUNS = CACHE_DIR / "scale"


def run_tag(nlist: str, values_dtype: str) -> str:
    return f"scale_nl{nlist}" + ("_f16" if values_dtype == "float16" else "")


def run_one(n_docs: int, nlist: str, nq: int, reuse: bool, nice: int, values_dtype: str, extra: list[str]) -> dict | None:
    tag = run_tag(nlist, values_dtype)
    cmd = [sys.executable, str(BENCH / "bench_engine.py"), "--dataset", "synthetic", "--ndocs", str(n_docs),
           "--nq", str(nq), "--peers", "none", "--tag", tag, "--out-dir", str(RUNS), "--nice", str(nice), *extra,
           *(["--nlist", nlist] if nlist != "default" else []), *(["--reuse"] if reuse else []),
           *(["--synthetic", "values_dtype=float16"] if values_dtype == "float16" else [])]
    print(f"[scale {time.strftime('%H:%M:%S')}] {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=False)
    path = RUNS / f"engine_synthetic_{n_docs}_{tag}.json"
    return json.loads(path.read_text()) if path.exists() else None


def all_runs() -> list[tuple[int, str, str, dict]]:
    """Every run report under RUNS: (documents, nlist argument, values dtype, report), in table order."""
    out = []
    for path in RUNS.glob("engine_synthetic_*_scale_nl*.json"):
        rep = json.loads(path.read_text())
        tag = path.stem.split("_scale_nl", 1)[1]
        nlist, f16 = (tag[:-4], "float16") if tag.endswith("_f16") else (tag, "float32")
        out.append((rep["collection"]["n_docs"], nlist, f16, rep))
    return sorted(out, key=lambda r: (r[2], r[0], r[1] != "default", int(r[1]) if r[1] != "default" else 0))


def summarize(runs: list[tuple[int, str, str, dict]], nq: int, note: str = "") -> None:
    rows = []
    for n_docs, nlist, vdt, rep in runs:
        row = next((r for r in rep["rows"] if r["engine"] == "plaidx" and not r.get("params")), None)
        if row is None or row.get("recall_at_k") is None:
            continue
        exh = next((r for r in rep["rows"] if r["engine"] == "plaidx" and (r.get("params") or {}).get("exact")), None)
        tier = next((r for r in rep["rows"] if r["engine"] == "plaidx-int8" and not r.get("params")), None)
        rows.append({"n_docs": n_docs, "values": vdt, "n_tokens": rep["collection"]["n_tokens"], "nlist_arg": nlist,
                     "nlist": row.get("nlist"), "recall": row["recall_at_k"], "p50_ms": row["p50_ms"],
                     "cpu_p50_ms": row.get("cpu_p50_ms"), "build_s": row.get("build_s"),
                     "build_peak_rss_mb": row.get("build_peak_rss_mb"), "rss_after_open_mb": row.get("rss_after_open_mb"),
                     "bytes_per_token": row.get("bytes_per_token"), "created": rep.get("created"),
                     "exhaustive_recall": exh and exh.get("recall_at_k"),
                     "tier_recall": tier and tier.get("recall_at_k"), "tier_p50_ms": tier and tier.get("p50_ms"),
                     "tier_bytes_per_token": tier and tier.get("bytes_per_token"),
                     "loadavg": rep["machine"].get("loadavg_1_5_15"),
                     "commit": ((rep.get("git") or {}).get("commit") or "?")[:7]
                     + ("+" if (rep.get("git") or {}).get("plaidx_dirty") else "")})
    def base(vdt: str) -> float | None:
        """Recall of the smallest collection stored as vdt, at its default nlist."""
        same = [r for r in rows if r["values"] == vdt and r["nlist"] == default_nlist(r["n_tokens"])]
        return min(same, key=lambda r: r["n_docs"])["recall"] if same else None

    newest = max(runs, key=lambda r: r[3].get("created") or "")[3] if runs else {}
    m = newest.get("machine") or {}
    lines = ["# Recall against collection size (synthetic family, nbits 2, default search)", "",
             f"- date: {dt.datetime.now().isoformat(timespec='seconds')}; each row's run and plaidx commit in its "
             f"last column (the newest: {((newest.get('git') or {}).get('commit') or '?')[:10]})",
             f"- machine: {m.get('cpu')} ({m.get('cpu_count')} cores), 2 threads; OPENBLAS_CORETYPE="
             f"{(m.get('env') or {}).get('OPENBLAS_CORETYPE')}",
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
             f"- {nq} queries of 32 tokens, k 10; recall@10 against exact MaxSim over the uncompressed float32 "
             "embeddings; each build and search in its own subprocess (bench_engine.py, reports in "
             "results/cache/scale); p50 of single-query searches after warm-up.", "",
             "\"(default)\" marks the nlist plaidx picks for that many tokens today; runs without an explicit nlist "
             "used the default of their commit (16,384 before the rule followed the tokens).", "",
             "| documents | stored as | tokens | nlist | recall@10 | vs smallest, default nlist | p50 ms | CPU p50 ms | "
             "build s | build peak RSS MiB | RSS after open MiB | bytes/token | exhaustive recall | int8 tier recall / "
             "p50 ms | run (UTC), commit |", "|" + "---|" * 15]
    for r in rows:
        b = base(r["values"])
        delta = f"{r['recall'] - b:+.3f}" if b is not None else "-"
        label = f"{r['nlist']:,}" + (" (default)" if r["nlist"] == default_nlist(r["n_tokens"]) else "")
        lines.append(f"| {r['n_docs']:,} | {r['values']} | {r['n_tokens']:,} | {label} | {r['recall']:.3f} | {delta} | "
                     f"{r['p50_ms']:.2f} | {r['cpu_p50_ms'] or 0:.2f} | {r['build_s']} | {r['build_peak_rss_mb']} | "
                     f"{r['rss_after_open_mb']} | {r['bytes_per_token']:.1f} | "
                     + (f"{r['exhaustive_recall']:.3f}" if r["exhaustive_recall"] is not None else "-") + " | "
                     + (f"{r['tier_recall']:.3f} / {r['tier_p50_ms']:.2f}" if r["tier_recall"] is not None else "-")
                     + f" | {(r['created'] or '?')[5:16]}, {r['commit']} |")
    if note:
        lines += ["", note]
    lines += ["", "Load average at the end of each run: " + "; ".join(
        f"{r['n_docs']}/{r['nlist_arg']}/{r['values']} {[round(x, 2) for x in r['loadavg'] or []]}" for r in rows)]
    (RESULTS_DIR / "scale_synthetic.md").write_text("\n".join(lines) + "\n")
    (RESULTS_DIR / "scale_synthetic.json").write_text(json.dumps({"rows": rows, "machine": m, "git": newest.get("git"),
                                                                  "nq": nq, "cli": sys.argv}, indent=1))
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,320000", help="documents per collection (~100 tokens each)")
    ap.add_argument("--nlists", default="default,65536,131072", help="'default' and/or explicit nlist values")
    ap.add_argument("--nq", type=int, default=100)
    ap.add_argument("--reuse", action="store_true", help="reuse earlier builds (search re-runs)")
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--values-dtype", choices=["float32", "float16"], default="float32",
                    help="how the collection's embeddings are stored (float16: 100M tokens in 25.6 GB)")
    ap.add_argument("--default-extra", default="--plaidx-exact --plaidx-keep-vectors int8",
                    help="bench_engine.py arguments for the default-nlist runs (exhaustive search, int8 tier)")
    ap.add_argument("--only", choices=["summary"], default=None, help="re-tabulate every run report")
    ap.add_argument("--note", default="", help="a paragraph for the report (what ran beside a run, say)")
    args = ap.parse_args(argv)
    if args.only != "summary":
        for n_docs in (int(x) for x in args.sizes.split(",")):
            coll = synthetic.ensure(n_docs=n_docs, nq=args.nq,
                                    **({"values_dtype": "float16"} if args.values_dtype == "float16" else {}))
            for nlist in args.nlists.split(","):
                if nlist != "default" and int(nlist) * 4 > coll.n_tokens:
                    continue
                run_one(n_docs, nlist, args.nq, args.reuse, args.nice, args.values_dtype,
                        args.default_extra.split() if nlist == "default" else [])
                summarize(all_runs(), args.nq)
    summarize(all_runs(), args.nq, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
