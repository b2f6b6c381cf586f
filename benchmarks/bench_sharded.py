"""Sharded indexes, 1 vs 2 vs 4 shards, in-process and on a local Ray cluster, against one in-process index.

Measured in one run on one synthetic collection (benchmarks/synthetic.py; exact float MaxSim as ground truth):
build time (local executor: shards one after another; Ray: one task per shard), single-query p50/p95
latency, batched QPS (all queries in one call), recall@k, bytes per shard and the resident memory of each
Ray shard actor, and Ray's overhead per query (Ray p50 minus the in-process p50 of the same shards, and
minus one ordinary in-process index). No PLAID-family peer shards an index, so there is no peer row.

    .venv/bin/python benchmarks/bench_sharded.py --ndocs 10000            # about 1M tokens
    .venv/bin/python benchmarks/bench_sharded.py --ndocs 20000 --shards 1,2,4 --no-ray

Writes benchmarks/results/sharded_synthetic_<ndocs>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402
from bench_engine import git_info, machine_info  # noqa: E402
from collection import RESULTS_DIR, exact_topk_cached, recall_at_k  # noqa: E402

import plaidx  # noqa: E402
from plaidx.distributed import ShardedIndex, build  # noqa: E402


def latency(search, queries: np.ndarray, k: int, n: int, warm: int = 5) -> dict:
    """p50/p95/mean milliseconds of one query per call (after ``warm`` calls)."""
    for i in range(warm):
        search(queries[i % len(queries)], k)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        search(queries[i % len(queries)], k)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.array(times)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p95_ms": round(float(np.percentile(t, 95)), 3),
            "mean_ms": round(float(t.mean()), 3), "n": n}


def batched(search, queries: np.ndarray, k: int, reps: int = 2) -> tuple[float, np.ndarray]:
    """Best-of-``reps`` QPS of all queries in one call, and its ids."""
    best, ids = 0.0, None
    for _ in range(reps):
        t0 = time.perf_counter()
        _, ids = search(queries, k)
        best = max(best, len(queries) / (time.perf_counter() - t0))
    return round(best, 1), ids


def measure(index, queries: np.ndarray, truth: np.ndarray, k: int, n_lat: int) -> dict:
    def fn(q, kk):
        return index.search(q, kk)

    qps, ids = batched(fn, queries, k)
    return {"recall": round(recall_at_k(ids, truth, k), 4), "batched_qps": qps, **latency(fn, queries, k, n_lat)}


def actor_rss(index: ShardedIndex) -> list[int]:
    import psutil

    out = []
    for pids in index.executor.actor_pids():
        out.append(int(sum(psutil.Process(p).memory_info().rss for p in pids)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nq-latency", type=int, default=100)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--workdir", default=None, help="where the indexes go (default: a temporary folder)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    shard_counts = [int(s) for s in args.shards.split(",")]
    command = " ".join([".venv/bin/python", "benchmarks/bench_sharded.py", *(argv if argv is not None else sys.argv[1:])])
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    coll = synthetic.ensure(n_docs=args.ndocs)
    truth = exact_topk_cached(coll, args.k)[1]
    queries = np.ascontiguousarray(coll.queries)
    docs = [np.array(coll.doc(i)) for i in range(coll.n_docs)]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sharded_"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    print(f"{coll.n_docs} documents, {coll.n_tokens} tokens, d={coll.dim}; indexes under {work}", flush=True)

    t0 = time.perf_counter()
    single = plaidx.Index.build(work / "single", docs, nbits=args.nbits, seed=0, overwrite=True)
    row = {"config": "one index (in-process)", "shards": 0, "executor": "in-process",
           "build_s": round(time.perf_counter() - t0, 1), **measure(single, queries, truth, args.k, args.nq_latency),
           "bytes_per_shard": [int(single.info()["bytes_on_disk"])]}
    rows.append(row)
    print(row, flush=True)

    ray = None
    if args.ray:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
        ray_start_s = round(time.perf_counter() - t0, 1)
    for s in shard_counts:
        path = work / f"local_{s}"
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        local = build(path, docs, s, nbits=args.nbits, seed=0)
        build_s = round(time.perf_counter() - t0, 1)
        m_local = measure(local, queries, truth, args.k, args.nq_latency)
        sizes = [int(i["bytes_on_disk"]) for i in local.info()["per_shard"]]
        row = {"config": f"{s} shards, in-process", "shards": s, "executor": "local", "build_s": build_s,
               **m_local, "bytes_per_shard": sizes}
        rows.append(row)
        print(row, flush=True)
        if ray is None:
            continue
        rpath = work / f"ray_{s}"
        shutil.rmtree(rpath, ignore_errors=True)
        t0 = time.perf_counter()
        remote = build(rpath, docs, s, nbits=args.nbits, seed=0, executor="ray", actor_cpus=0.5)
        rbuild_s = round(time.perf_counter() - t0, 1)
        same = remote.manifest["codec"]["hash"] == local.manifest["codec"]["hash"]
        m_ray = measure(remote, queries, truth, args.k, args.nq_latency)
        row = {"config": f"{s} shards, Ray actors", "shards": s, "executor": "ray", "build_s": rbuild_s,
               **m_ray, "bytes_per_shard": sizes, "actor_rss_bytes": actor_rss(remote),
               "same_codec_as_local_build": same,
               "ray_overhead_vs_same_shards_in_process_ms": round(m_ray["p50_ms"] - m_local["p50_ms"], 3),
               "ray_overhead_vs_one_index_ms": round(m_ray["p50_ms"] - rows[0]["p50_ms"], 3)}
        rows.append(row)
        print(row, flush=True)
        remote.close()

    result = {"benchmark": "sharded", "dataset": f"synthetic_{args.ndocs}", "started": started,
              "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
              "git": git_info(), "machine": machine_info(os.cpu_count() or 1),
              "collection": {"n_docs": coll.n_docs, "n_tokens": coll.n_tokens, "dim": coll.dim,
                             "nq": int(queries.shape[0])},
              "k": args.k, "nbits": args.nbits, "ray_start_s": ray_start_s if ray is not None else None,
              "ray_version": getattr(ray, "__version__", None), "rows": rows}
    name = f"sharded_synthetic_{args.ndocs}{('_' + args.tag) if args.tag else ''}"
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS_DIR / f"{name}.md").write_text(render(result))
    print(f"wrote {RESULTS_DIR / name}.md", flush=True)
    if ray is not None:
        ray.shutdown()
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def render(r: dict) -> str:
    m, c = r["machine"], r["collection"]
    blas = [f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} ({b.get('num_threads')} threads)"
            for b in m.get("blas_harness", [])]
    lines = [
        f"# Sharded search: 1 vs 2 vs 4 shards, in-process and on Ray ({r['dataset']})", "",
        f"- date: {r['started']} to {r['finished']}; git {r['git']['commit'][:12]}"
        f"{' (plaidx/ modified)' if r['git']['plaidx_dirty'] else ''}",
        f"- machine: {m.get('cpu')}, {m['cpu_count']} cores, {m['mem_total_gib']} GiB, load average "
        f"{m['loadavg_1_5_15']} (shared, noisy: compare ratios within this run); BLAS: {'; '.join(blas) or 'n/a'}; "
        f"OPENBLAS_CORETYPE={m['env'].get('OPENBLAS_CORETYPE')}",
        f"- collection: {c['n_docs']} documents, {c['n_tokens']} tokens, d={c['dim']}, {c['nq']} queries, "
        f"k={r['k']}, nbits={r['nbits']}; recall@{r['k']} against exact MaxSim over the float embeddings",
        f"- Ray {r['ray_version']} (local cluster started in {r['ray_start_s']} s, not counted in any build)",
        f"- command: `{r['command']}`", "",
        "| configuration | build s | recall | p50 ms | p95 ms | batched QPS | MiB per shard | actor RSS MiB | "
        "Ray overhead p50 ms (vs same shards / vs one index) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        mib = ", ".join(f"{b / 2**20:.1f}" for b in row["bytes_per_shard"])
        rss = ", ".join(f"{b / 2**20:.0f}" for b in row.get("actor_rss_bytes", [])) or "-"
        over = (f"{row['ray_overhead_vs_same_shards_in_process_ms']:+.2f} / {row['ray_overhead_vs_one_index_ms']:+.2f}"
                if "ray_overhead_vs_one_index_ms" in row else "-")
        lines.append(f"| {row['config']} | {row['build_s']} | {row['recall']:.4f} | {row['p50_ms']:.2f} | "
                     f"{row['p95_ms']:.2f} | {row['batched_qps']} | {mib} | {rss} | {over} |")
    lines += ["", "Notes:",
              "- In-process shards are searched one after another, each with all cores; Ray actors (0.5 CPU each) "
              "search their shards in parallel with one thread each, the query put in the object store once.",
              "- Every shard gets the search parameters one index of the whole collection would use (the same "
              "ndocs per shard), so recall does not fall with more shards; the work per query grows with them.",
              "- A Ray build equals the local build with the same seed (same codec hash: "
              f"{all(row.get('same_codec_as_local_build', True) for row in r['rows'])}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
