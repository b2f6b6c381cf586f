"""Side-by-side engine benchmark: plaidx vs Stanford PLAID (and fast-plaid) on the same embeddings.

Every engine runs in its own subprocesses (build, then open + search) with the same thread count, so
peak RSS is clean and no engine shares state with another. Measured per engine and search setting:
recall@k against exact MaxSim over the uncompressed float32 embeddings, single-query p50/p95 latency
(after warm-up), batched QPS (plaidx: all queries in one call; peers without a batched CPU search:
sequential), build time, index bytes per token, peak RSS of the build, RSS right after opening.

    .venv/bin/python benchmarks/bench_engine.py --dataset synthetic --ndocs 10000 --peers plaid,fastplaid
    .venv/bin/python benchmarks/bench_engine.py --dataset scifact --peers plaid
    .venv/bin/python benchmarks/bench_engine.py --dataset cranfield --peers plaid --plaidx-exact \
        --plaidx-keep-vectors int8 --exact-float 20 --plaid-configs "1,0.5,256;4,0.4,4096" --tag real
    .venv/bin/python benchmarks/bench_engine.py --dataset synthetic --ndocs 10000 --peers none \
        --nprobe 1,2,4 --threshold 0.5,0.45,0.4 --search-ndocs 256,1024,4096     # plaidx parameter grid

``--plaidx-keep-vectors int8`` adds a second plaidx index built with that rerank tier (engine
``plaidx-int8``, searched at its defaults and the grid's settings); ``--exact-float N`` adds a row for
exact MaxSim over the float32 embeddings themselves (recall 1 by definition; its nDCG@k is the ceiling
of every engine; p50 of a brute-force search timed on the first N queries). When PLAID and that row are
present, the report ends with the issue-15 target checks.

Writes benchmarks/results/engine_<dataset>_<ndocs>[_<tag>].json and .md (``_STUB`` suffix with --plaidx-stub).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection import (  # noqa: E402
    CACHE_DIR,
    RESULTS_DIR,
    Collection,
    exact_topk_cached,
    is_complete,
    load_collection,
    recall_at_k,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = {
    "plaid": {"venv": REPO / ".bench-venv-plaid", "runner": BENCH / "peers" / "run_plaid.py"},
    "fastplaid": {"venv": REPO / ".bench-venv-fastplaid", "runner": BENCH / "peers" / "run_fastplaid.py"},
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------- inputs
def synthetic_overrides(args) -> dict:
    """Generator parameters that differ from synthetic.default_params (--mean-len, --synthetic k=v)."""
    extra: dict = {} if args.mean_len is None else {"mean_len": args.mean_len}
    for item in args.synthetic or []:
        key, _, value = item.partition("=")
        try:
            extra[key] = int(value)
        except ValueError:
            try:
                extra[key] = float(value)
            except ValueError:
                extra[key] = value  # e.g. values_dtype=float16
    return extra


def get_collection(args) -> Collection:
    if args.dataset == "synthetic":
        import synthetic

        extra = synthetic_overrides(args)
        return synthetic.ensure(n_docs=args.ndocs, dim=args.dim, nq=args.nq, seed=args.seed, **extra)
    if args.collection:
        return load_collection(args.collection)
    # Prefer embeddings from the project's encoder; the transformers fallback has the same model.
    for tag in ("plaidx", "minilm"):
        if is_complete(CACHE_DIR / f"{args.dataset}_{tag}"):
            return load_collection(CACHE_DIR / f"{args.dataset}_{tag}")
    log(f"no cached {args.dataset} embeddings: encoding them (benchmarks/real_embeddings.py)")
    subprocess.run([sys.executable, str(BENCH / "real_embeddings.py"), "--dataset", args.dataset,
                    "--threads", str(args.threads)], check=True)
    for tag in ("plaidx", "minilm"):
        if is_complete(CACHE_DIR / f"{args.dataset}_{tag}"):
            return load_collection(CACHE_DIR / f"{args.dataset}_{tag}")
    raise SystemExit(f"encoding {args.dataset} produced no collection")


def git_info() -> dict:
    """Commit of the checkout the plaidx runner imported, and whether plaidx/ or csrc/ had local changes."""
    def git(*a: str) -> str:
        p = subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO)
        return p.stdout.strip() if p.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "plaidx_dirty": bool(git("status", "--porcelain", "plaidx", "csrc"))}


def machine_info(threads: int) -> dict:
    import psutil

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "threads": threads, "numpy": np.__version__, "loadavg_1_5_15": list(os.getloadavg()),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile") if f in flags]
    except OSError:
        pass
    try:
        import plaidx

        bi = plaidx.build_info()
        info["plaidx_kernels"] = {k: bi.get(k) for k in ("backend", "int8_vnni", "int8_amx", "adc_copy")}
    except Exception as e:  # noqa: BLE001
        info["plaidx_kernels"] = {"error": str(e)}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_config_blas"] = [ln.strip() for ln in torch.__config__.show().splitlines()
                                     if "BLAS" in ln or "LAPACK" in ln][:4]
        torch.ones(8, 8) @ torch.ones(8, 8)
        np.ones((8, 8)) @ np.ones((8, 8))
        from threadpoolctl import threadpool_info

        info["blas_harness"] = [{k: d.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                        "architecture", "prefix")} for d in threadpool_info()]
    except Exception as e:  # noqa: BLE001
        info["blas_error"] = str(e)
    return info


def write_stamped_report(stem: str, title: str, body: list[str], payload: dict, threads: int,
                         load_start: list[float]) -> None:
    """results/<stem>.md (title, a line stamping date, commit, machine, threads and load, the command, then body)
    and results/<stem>.json (payload plus machine, git, cli and created); prints the markdown."""
    m = machine_info(threads)
    m["loadavg_at_start"] = load_start
    git = git_info()
    lines = [f"# {title}", "",
             f"{dt.datetime.now().isoformat(timespec='seconds')} | plaidx commit {git.get('commit', '?')[:10]} | "
             f"{m.get('cpu')} ({m.get('cpu_count')} cores) | {threads} threads | load average at start "
             f"{[round(x, 2) for x in load_start]}, at end {[round(x, 2) for x in os.getloadavg()]} | "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} | plaidx kernels "
             f"{m.get('plaidx_kernels')}", "",
             "Command: `" + " ".join([Path(sys.executable).name, *sys.argv]) + "`", "", *body]
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(
        {**payload, "machine": m, "git": git, "cli": sys.argv[1:],
         "created": dt.datetime.now().isoformat(timespec="seconds")}, indent=1))
    print("\n".join(lines), flush=True)


# ------------------------------------------------------------------------------------- subprocess
def child_env(threads: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra or {})
    return env


def run_child(cmd: list[str], out: Path, logf: Path, threads: int, timeout: int, nice: int) -> dict:
    """Run one runner phase; returns its JSON, or {"error": ...} (never raises)."""
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        with open(logf, "w") as lf:
            rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=child_env(threads),
                                timeout=timeout, cwd=REPO).returncode
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s (log {logf})"}
    wall = time.perf_counter() - t0
    if rc != 0 or not out.exists():
        tail = logf.read_text(errors="replace").strip().splitlines()[-5:]
        return {"error": f"exit {rc} (log {logf})", "log_tail": tail}
    res = json.loads(out.read_text())
    res["process_wall_s"] = round(wall, 2)
    return res


# ---------------------------------------------------------------------------------------- engines
def plaidx_available(stub: bool) -> tuple[bool, str]:
    if stub:
        return True, "stub"
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import plaidx; plaidx.Index; "
            "print(getattr(plaidx, '__version__', '?'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        return False, (p.stderr.strip().splitlines() or ["import failed"])[-1]
    return True, p.stdout.strip()


def plaidx_grid(args, exact: bool | None = None) -> list[dict]:
    grid: list[dict] = [{}]  # plaidx's own defaults first
    axes = [("nprobe", args.nprobe, int), ("centroid_score_threshold", args.threshold, float),
            ("ndocs", args.search_ndocs, int)]
    given = [(name, [conv(v) for v in vals.split(",")]) for name, vals, conv in axes if vals]
    if given:
        names = [n for n, _ in given]
        for combo in itertools.product(*[v for _, v in given]):
            grid.append(dict(zip(names, combo)))
    for extra in json.loads(getattr(args, "plaidx_settings", None) or "[]"):
        if extra not in grid:
            grid.append(extra)
    if args.plaidx_exact if exact is None else exact:
        grid.append({"exact": True})
    return grid


def tier_name(args) -> str | None:
    """Engine name of the plaidx index with a rerank tier (``plaidx-int8``), or None without one."""
    kv = getattr(args, "plaidx_keep_vectors", None)
    return f"plaidx-{kv}" if kv else None


def run_engine(name: str, args, coll: Collection, work: Path) -> dict:
    """Build (unless reused) and search one engine. Returns {"build": ..., "search": ...}."""
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index"
    if name.startswith("plaidx"):
        py, runner = sys.executable, BENCH / "run_plaidx.py"
        common = ["--threads", str(args.threads)] + (["--stub"] if args.plaidx_stub else [])
        build_args = ["--nbits", str(args.nbits), "--kmeans-niters", str(args.kmeans_niters), "--seed", str(args.seed)]
        if args.nlist:
            build_args += ["--nlist", str(args.nlist)]
        tier = name == tier_name(args)
        if tier:  # same build otherwise; exhaustive search left to the index without the tier
            build_args += ["--keep-vectors", args.plaidx_keep_vectors]
        search_args = ["--k", str(args.k), "--grid", json.dumps(plaidx_grid(args, exact=False if tier else None))]
    else:
        peer = PEERS[name]
        py, runner = str(peer["venv"] / "bin" / "python"), peer["runner"]
        common = ["--threads", str(args.threads)]
        build_args = ["--nbits", str(args.nbits), "--kmeans-niters", str(args.kmeans_niters)]
        search_args = ["--k", str(args.k)]
        configs = args.plaid_configs if name == "plaid" else args.fastplaid_configs
        if configs:
            search_args += ["--configs", configs]
    base = [py, str(runner)]
    io = ["--coll", str(coll.path), "--index", str(index)]
    build_json = work / "build.json"
    build = None
    if args.reuse and build_json.exists() and index.exists():
        build = json.loads(build_json.read_text())
        if "error" not in build:
            build["reused_from"] = dt.datetime.fromtimestamp(build_json.stat().st_mtime).isoformat(timespec="seconds")
            log(f"{name}: reusing build from {build['reused_from']} ({work})")
        else:
            build = None
    if build is None:
        if index.exists():
            import shutil

            shutil.rmtree(index)
        log(f"{name}: building ({coll.n_tokens:,} tokens)")
        build = run_child(base + ["build", *io, "--out", str(work / "build.out.json"), *common, *build_args],
                          work / "build.out.json", work / "build.log", args.threads, args.timeout, args.nice)
        if "error" not in build:
            build_json.write_text(json.dumps(build))
    if "error" in build:
        log(f"{name}: build FAILED: {build['error']}")
        return {"build": build, "search": None}
    log(f"{name}: built in {build['build_s']}s, peak RSS {build['peak_rss_mb']} MiB; searching")
    search_args += ["--warmup", str(args.warmup)]
    search = run_child(base + ["search", *io, "--out", str(work / "search.json"), *common, *search_args],
                       work / "search.json", work / "search.log", args.threads, args.timeout, args.nice)
    if "error" in search:
        log(f"{name}: search FAILED: {search['error']}")
    return {"build": build, "search": search}


def peer_available(name: str) -> tuple[bool, str]:
    if name not in PEERS:
        return False, f"unknown peer {name!r} (known: {', '.join(PEERS)})"
    venv = PEERS[name]["venv"]
    if not (venv / "bin" / "python").exists() or not (venv / ".ok").exists():
        return False, f"{venv.name} not set up (bash benchmarks/peers/setup_peers.sh {name})"
    return True, "ok"


# ---------------------------------------------------------------------------------------- scoring
def ndcg_at_k(ids: np.ndarray, coll: Collection, k: int) -> float | None:
    """nDCG@k against the dataset's qrels (real collections only)."""
    qrels_p, dids_p, qids_p = (coll.path / n for n in ("qrels.json", "doc_ids.json", "query_ids.json"))
    if not (qrels_p.exists() and dids_p.exists() and qids_p.exists()):
        return None
    qrels, doc_ids, q_ids = (json.loads(p.read_text()) for p in (qrels_p, dids_p, qids_p))
    vals = []
    for qi, row in zip(q_ids, ids):
        rel = qrels.get(qi, {})
        gains = [rel.get(doc_ids[d], 0) if d >= 0 else 0 for d in row[:k]]
        dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / np.log2(r + 2) for r, g in enumerate(ideal))
        vals.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(vals))


def summarise(name: str, res: dict, coll: Collection, truth: np.ndarray, k: int) -> list[dict]:
    build, search = res.get("build") or {}, res.get("search") or {}
    rows = []
    base = {"engine": name, "build_s": build.get("build_s"), "build_cpu_s": build.get("build_cpu_s"),
            "build_peak_rss_mb": build.get("peak_rss_mb"),
            "build_rss_before_mb": build.get("rss_before_build_mb"), "index_bytes": build.get("index_bytes"),
            "bytes_per_token": (build["index_bytes"] / coll.n_tokens) if build.get("index_bytes") else None,
            "nlist": build.get("nlist"), "rss_after_open_mb": search.get("rss_after_open_mb"),
            "rss_before_open_mb": search.get("rss_before_open_mb"), "build_reused_from": build.get("reused_from"),
            "error": build.get("error") or search.get("error")}
    for run in search.get("runs") or [{}]:
        row = dict(base, params=run.get("params"))
        if "ids" in run:
            ids = np.asarray(run["ids"], dtype=np.int64)
            row["recall_at_k"] = recall_at_k(ids, truth, k)
            row["ndcg_at_k"] = ndcg_at_k(ids, coll, k)
            lat = run["latency_ms"]
            row.update(p50_ms=lat["p50"], p95_ms=lat["p95"], mean_ms=lat["mean"],
                       cpu_p50_ms=(run.get("cpu_ms") or {}).get("p50"),
                       qps_batched=run.get("qps_batched"), qps_sequential=run.get("qps_sequential"),
                       batch_equals_single=run.get("batch_equals_single"))
        elif run.get("error"):
            row["error"] = run["error"]
        rows.append(row)
    return rows


def exact_float_row(coll: Collection, truth: np.ndarray, k: int, threads: int, n_time: int) -> dict:
    """The reference row: exact MaxSim over the uncompressed float32 embeddings.

    Its top-k is ``truth`` (so recall 1 by definition) and its nDCG@k the ceiling of every engine. p50/p95:
    a brute-force search (one GEMM against every token held in memory, max per document, sum, top-k)
    timed one query per call on the first ``n_time`` queries after two warm-up queries.
    """
    import torch

    torch.set_num_threads(threads)
    values = torch.from_numpy(np.array(coll.values, dtype=np.float32))  # (n_tokens, d), read into memory
    starts = coll.offsets[:-1].astype(np.int64)
    queries = np.ascontiguousarray(coll.queries, dtype=np.float32)
    lat, cpu = [], []
    n = min(n_time, len(queries))
    for i in [0, min(1, n - 1)] + list(range(n)):  # two warm-up queries first
        t, c = time.perf_counter(), time.process_time()
        sim = (torch.from_numpy(queries[i]) @ values.T).numpy()  # (q_tokens, n_tokens)
        scores = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0)
        top = np.argpartition(-scores, k - 1)[:k]
        _ids = top[np.lexsort((top, -scores[top]))]  # ordered as exact_topk_cached orders them
        lat.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    lat, cpu = np.array(lat[2:]), np.array(cpu[2:])
    return {"engine": "exact-float32", "params": None, "recall_at_k": recall_at_k(truth, truth, k),
            "ndcg_at_k": ndcg_at_k(truth, coll, k), "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "mean_ms": float(lat.mean()),
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "qps_sequential": float(1e3 / lat.mean()),
            "timed_queries": n, "build_s": None, "build_peak_rss_mb": None, "rss_after_open_mb": None,
            "index_bytes": coll.n_tokens * coll.dim * 4, "bytes_per_token": float(coll.dim * 4)}


def plaid_targets(rows: list[dict]) -> dict | None:
    """Issue 15's two PLAID targets on one report's rows, or None without plaidx defaults and both PLAID rows.

    1. plaidx defaults >= PLAID defaults in recall@k at <= 1/3 of its p50;
    2. plaidx's best setting (highest recall among its non-exhaustive settings faster than PLAID's wide, on
       the same index: rows of a rerank-tier index, another and 5x larger index, are left out) >= PLAID's
       wide in recall@k.
    Returns the rows used ("defaults", "plaid_defaults", "plaid_wide", "best": None when no setting is
    faster than PLAID wide), the p50 and CPU ratios of target 1, and whether each target is met.
    """
    ok = [r for r in rows if r.get("recall_at_k") is not None]
    plaid = [r for r in ok if r["engine"] == "plaid"]
    pd = next((r for r in plaid if (r.get("params") or {}).get("ncells", 1) == 1), None)
    pw = next((r for r in plaid if (r.get("params") or {}).get("ncells", 1) > 1), None)
    same = [r for r in ok if r["engine"] == "plaidx" and not (r.get("params") or {}).get("exact")]
    xd = next((r for r in same if not r.get("params")), None)
    if not (xd and pd and pw):
        return None
    fast = [r for r in same if r["p50_ms"] < pw["p50_ms"]]
    best = max(fast, key=lambda r: (r["recall_at_k"], -r["p50_ms"])) if fast else None
    ratio = xd["p50_ms"] / pd["p50_ms"]
    cpu = xd["cpu_p50_ms"] / pd["cpu_p50_ms"] if xd.get("cpu_p50_ms") and pd.get("cpu_p50_ms") else None
    return {"defaults": xd, "plaid_defaults": pd, "plaid_wide": pw, "best": best, "p50_ratio": ratio,
            "cpu_ratio": cpu, "defaults_met": xd["recall_at_k"] >= pd["recall_at_k"] and ratio <= 1 / 3,
            "best_met": best is not None and best["recall_at_k"] >= pw["recall_at_k"]}


def target_lines(rows: list[dict]) -> list[str]:
    """Issue 15's targets checked on one report's rows (:func:`plaid_targets`; nDCG needs the exact-float32
    row): nDCG@k of plaidx (defaults, exhaustive, rerank tier) within 0.005 of exact MaxSim."""
    ok = [r for r in rows if r.get("recall_at_k") is not None]
    ex = next((r for r in ok if r["engine"] == "exact-float32"), None)

    def name(r: dict) -> str:
        return f"{r['engine']} {json.dumps(r['params']) if r.get('params') else 'defaults'}"

    def verdict(flag: bool) -> str:
        return "**met**" if flag else "**not met**"

    lines = []
    t = plaid_targets(rows)
    if t is not None:
        xd, pd, pw, best = t["defaults"], t["plaid_defaults"], t["plaid_wide"], t["best"]
        lines.append(f"- plaidx defaults vs PLAID defaults: recall {xd['recall_at_k']:.3f} vs {pd['recall_at_k']:.3f}, "
                     f"p50 {xd['p50_ms']:.2f} vs {pd['p50_ms']:.2f} ms (ratio {_f(t['p50_ratio'], '{:.2f}')}, CPU ratio "
                     f"{_f(t['cpu_ratio'], '{:.2f}')}; target recall >= and ratio <= 0.33): " + verdict(t["defaults_met"]))
        if best is None:
            lines.append(f"- plaidx best vs PLAID wide ({pw['recall_at_k']:.3f}, {pw['p50_ms']:.2f} ms): no plaidx "
                         "setting is faster than PLAID wide: **not met**")
        else:
            lines.append(f"- plaidx best setting, same index ({name(best)}: recall {best['recall_at_k']:.3f}, p50 "
                         f"{best['p50_ms']:.2f} ms) vs PLAID wide (recall {pw['recall_at_k']:.3f}, p50 "
                         f"{pw['p50_ms']:.2f} ms): " + verdict(t["best_met"]))
    if ex and ex.get("ndcg_at_k") is not None:
        for r in ok:  # plaidx defaults, exhaustive and every rerank-tier setting (the grid's others: table above)
            if r.get("ndcg_at_k") is None or not r["engine"].startswith("plaidx") or (
                    r["engine"] == "plaidx" and (r.get("params") or {}) not in ({}, {"exact": True})):
                continue
            gap = r["ndcg_at_k"] - ex["ndcg_at_k"]
            lines.append(f"- nDCG@k of {name(r)}: {r['ndcg_at_k']:.4f} vs exact MaxSim {ex['ndcg_at_k']:.4f} "
                         f"({gap:+.4f}; target within 0.005): " + verdict(gap >= -0.005))
    return lines


def _f(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)


def markdown(report: dict) -> str:
    c, m = report["collection"], report["machine"]
    lines = [f"# Engine benchmark: {c['dataset']} ({c['n_docs']:,} docs, {c['n_tokens']:,} tokens, d {c['dim']})",
             "",
             f"{report['created']} | k {report['k']} | nbits {report['nbits']} | threads {report['threads']} | "
             f"{c['nq']} queries | {m.get('cpu')} ({m.get('cpu_count')} cores, {m.get('mem_total_gib')} GiB) | "
             f"load average at start {m.get('loadavg_at_start')}, at end {m.get('loadavg_1_5_15')}",
             "",
             "recall@k: overlap with exact MaxSim top-k over the uncompressed float32 embeddings. Latency: one "
             "query per call, after warm-up (`--warmup` single-query searches before each setting, 10 unless the "
             "command sets it; CPU ms: process CPU time per query, all threads, less sensitive to a busy machine). QPS: plaidx one batched call; peers marked * run queries "
             "sequentially (no batched CPU search). RSS in MiB; build RSS is the peak of the build process.",
             "",
             "| engine | search params | recall@k | nDCG@k | p50 ms | p95 ms | CPU ms p50 | QPS | build s | "
             "build CPU s | build peak RSS | RSS after open | index MiB | bytes/token |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r.get("recall_at_k") is None:
            lines.append(f"| {r['engine']} | {json.dumps(r.get('params'))} | FAILED: {r.get('error')} |"
                         + " |" * 11)
            continue
        qps = _f(r.get("qps_batched")) if r.get("qps_batched") else _f(r.get("qps_sequential")) + "*"
        reused = " (reused)" if r.get("build_reused_from") else ""
        setting = "brute force" if r["engine"] == "exact-float32" else json.dumps(r["params"]) if r["params"] else "defaults"
        lines.append(
            f"| {r['engine']} | {setting} | {r['recall_at_k']:.3f} "
            f"| {_f(r.get('ndcg_at_k'), '{:.3f}')} | {_f(r['p50_ms'], '{:.2f}')} | {_f(r['p95_ms'], '{:.2f}')} "
            f"| {_f(r.get('cpu_p50_ms'), '{:.2f}')} | {qps} | {_f(r['build_s'])}{reused} "
            f"| {_f(r.get('build_cpu_s'))} | {_f(r['build_peak_rss_mb'], '{:.0f}')} "
            f"| {_f(r['rss_after_open_mb'], '{:.0f}')} | {_f((r['index_bytes'] or 0) / 2**20)} "
            f"| {_f(r['bytes_per_token'])} |")
    for name, why in report["skipped"].items():
        lines.append(f"\nSkipped {name}: {why}")
    checks = target_lines(report["rows"])
    if checks:
        lines += ["", "Issue 15 targets (this run):", "", *checks]
    g = report.get("git") or {}
    lines += ["", f"plaidx at commit {g.get('commit', '?')[:10]}" + (" with local changes" if g.get("plaidx_dirty") else "")]
    lines += ["", "BLAS (harness): " + ", ".join(
        f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} x{b.get('num_threads')}"
        for b in m.get("blas_harness", []))]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic", help="synthetic, or a BEIR folder in benchmarks/results/cache/data")
    ap.add_argument("--collection", default=None, help="explicit cached collection folder (real datasets)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="single-query searches each engine runs before each setting is timed (the number of queries: "
                         "every query once, so that pages a setting reads are mapped before it is timed)")
    ap.add_argument("--ndocs", type=int, default=10_000, help="synthetic documents (ignored for real sets)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--mean-len", type=int, default=None, help="synthetic mean document length (default 100)")
    ap.add_argument("--synthetic", action="append", metavar="KEY=VALUE",
                    help="another synthetic generator parameter (synthetic.default_params), e.g. noise=0.4")
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peers", default="plaid,fastplaid", help="comma list, or 'none'")
    ap.add_argument("--no-plaidx", action="store_true", help="run the peers only")
    ap.add_argument("--plaidx-stub", action="store_true", help="brute-force stand-in for plaidx (harness tests)")
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--nlist", type=int, default=None, help="plaidx nlist (default: its own)")
    ap.add_argument("--kmeans-niters", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", default=None, help="plaidx grid: comma list")
    ap.add_argument("--threshold", default=None, help="plaidx grid: centroid_score_threshold comma list")
    ap.add_argument("--search-ndocs", default=None, help="plaidx grid: ndocs comma list")
    ap.add_argument("--plaidx-exact", action="store_true", help="also run plaidx exact=True")
    ap.add_argument("--plaidx-settings", default=None, metavar="JSON",
                    help='more plaidx settings beside the grid: a JSON list of search-parameter dicts, e.g. '
                         '\'[{"nprobe": 4, "ndocs": 2048}]\'')
    ap.add_argument("--plaidx-keep-vectors", default=None, choices=["int8", "float16"],
                    help="also build and search a plaidx index with this rerank tier (engine plaidx-<kind>)")
    ap.add_argument("--exact-float", type=int, default=0, metavar="N",
                    help="add the exact-MaxSim row over the float32 embeddings, its latency timed on N queries")
    ap.add_argument("--plaid-configs", default=None, help="PLAID ncells,threshold,ndocs;... (default: its k<=10 defaults)")
    ap.add_argument("--fastplaid-configs", default=None, help="fast-plaid n_ivf_probe,n_full_scores;...")
    ap.add_argument("--reuse", action="store_true", help="reuse earlier builds in the work folder (search re-runs)")
    ap.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per subprocess")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the engine subprocesses")
    ap.add_argument("--out-dir", default=str(RESULTS_DIR))
    ap.add_argument("--tag", default="", help="suffix of the output files (e.g. grid), so a run keeps others")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    git_at_start = git_info()
    coll = get_collection(args)
    label = f"{args.dataset}_{coll.n_docs}" + (f"_{args.tag}" if args.tag else "") + ("_STUB" if args.plaidx_stub else "")
    log(f"collection {coll.path}: {coll.n_docs:,} docs, {coll.n_tokens:,} tokens, d {coll.dim}, "
        f"{len(coll.queries)} queries")
    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    _, truth = exact_topk_cached(coll, args.k, threads=args.threads)
    log(f"exact ground truth ready ({time.perf_counter() - t0:.1f}s)")

    engines, skipped = [], {}
    if not args.no_plaidx:
        ok, why = plaidx_available(args.plaidx_stub)
        if ok:
            engines.append("plaidx-STUB" if args.plaidx_stub else "plaidx")
            if tier_name(args) and not args.plaidx_stub:
                engines.append(tier_name(args))
        else:
            skipped["plaidx"] = f"import plaidx failed: {why}"
            log(f"SKIPPING plaidx: import plaidx failed: {why}")
    for peer in [p.strip() for p in args.peers.split(",") if p.strip() and p.strip() != "none"]:
        ok, why = peer_available(peer)
        if ok:
            engines.append(peer)
        else:
            skipped[peer] = why
            log(f"SKIPPING {peer}: {why}")

    over = synthetic_overrides(args) if args.dataset == "synthetic" else {}
    runs_root = CACHE_DIR / "runs" / (f"{args.dataset}_{coll.n_docs}_d{coll.dim}"
                                      + (f"_len{args.mean_len}" if args.mean_len else "")
                                      + "".join(f"_{k}{v}" for k, v in sorted(over.items()) if k != "mean_len"))
    results = {}
    for name in engines:
        work = runs_root / f"{name}_nb{args.nbits}_t{args.threads}"
        results[name] = run_engine(name, args, coll, work)

    rows = [row for name in engines for row in summarise(name, results[name], coll, truth, args.k)]
    if args.exact_float:
        log(f"exact MaxSim over float32: timing {args.exact_float} queries")
        rows.append(exact_float_row(coll, truth, args.k, args.threads, args.exact_float))
    report = {"created": dt.datetime.now().isoformat(timespec="seconds"), "k": args.k, "nbits": args.nbits,
              "threads": args.threads, "stub": args.plaidx_stub, "git": git_at_start,
              "collection": {"dataset": args.dataset, "path": str(coll.path), "n_docs": coll.n_docs,
                             "n_tokens": coll.n_tokens, "dim": coll.dim, "nq": int(len(coll.queries)),
                             "meta": coll.meta},
              "machine": dict(machine_info(args.threads), loadavg_at_start=load_start), "skipped": skipped, "rows": rows,
              "engines": {n: {ph: ({k: v for k, v in (r or {}).items() if k != "runs"} if r else None)
                              for ph, r in res.items()} for n, res in results.items()},
              "cli": sys.argv[1:] if argv is None else argv}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"engine_{label}.json").write_text(json.dumps(report, indent=1, default=float))
    (out_dir / f"engine_{label}.md").write_text(markdown(report))
    print(markdown(report))
    log(f"wrote {out_dir / f'engine_{label}.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
