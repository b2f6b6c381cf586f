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


def build_timings(path: Path) -> dict:
    """Seconds the codec index took (sample, k-means, its own compression) and each shard's compression."""
    m = json.loads((path / "sharded.json").read_text())
    codec = json.loads((path / m["codec"]["dir"] / "manifest.json").read_text())["build"]["timings"]
    shards = [json.loads((path / sh["dir"] / "manifest.json").read_text())["build"]["timings"] for sh in m["shards"]]
    return {"codec_s": round(sum(codec.values()), 2), "codec_timings": codec,
            "compress_s_per_shard": [t.get("assign_compress_s") for t in shards]}


def actor_rss(index: ShardedIndex) -> list[int]:
    import psutil

    out = []
    for pids in index.executor.actor_pids():
        out.append(int(sum(psutil.Process(p).memory_info().rss for p in pids)))
    return out


def measure_overhead(work: Path, shard_counts: list[int], n: int = 200) -> dict:
    """Ray's cost per query apart from search work: tiny shards (one short document each) searched through
    actors vs in-process, p50 of ``n`` single queries, per shard count (needs a connected Ray)."""
    rng = np.random.default_rng(0)
    out = {}
    for s in shard_counts:
        docs = [rng.standard_normal((8, 128)).astype(np.float32) for _ in range(s * 4)]
        path = work / f"tiny_{s}"
        shutil.rmtree(path, ignore_errors=True)
        local = build(path, docs, s, nlist=4, seed=0)
        remote = ShardedIndex.open(path, executor="ray", actor_cpus=0.5)
        q = rng.standard_normal((32, 128)).astype(np.float32)
        lat_l = latency(local.search, q[None], 10, n, warm=20)
        lat_r = latency(remote.search, q[None], 10, n, warm=20)
        out[str(s)] = {"in_process_p50_ms": lat_l["p50_ms"], "ray_p50_ms": lat_r["p50_ms"],
                       "ray_p95_ms": lat_r["p95_ms"], "overhead_p50_ms": round(lat_r["p50_ms"] - lat_l["p50_ms"], 3)}
        remote.close()
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
    ap.add_argument("--project", metavar="JSON", help="only write the 1B-token projection from a result file")
    ap.add_argument("--overhead", metavar="JSON", help="only measure Ray's per-query overhead into a result file")
    args = ap.parse_args(argv)
    if args.project:
        return write_projection(Path(args.project))
    if args.overhead:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        f = Path(args.overhead)
        r = json.loads(f.read_text())
        r["ray_overhead"] = measure_overhead(Path(tempfile.mkdtemp(prefix="bench_sharded_")),
                                             [int(x) for x in args.shards.split(",")])
        r["ray_overhead_loadavg"] = list(os.getloadavg())
        f.write_text(json.dumps(r, indent=1))
        f.with_suffix(".md").write_text(render(r))
        print(r["ray_overhead"])
        return 0
    shard_counts = [int(s) for s in args.shards.split(",")]
    command = " ".join([".venv/bin/python", "benchmarks/bench_sharded.py", *(argv if argv is not None else sys.argv[1:])])
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    coll = synthetic.ensure(n_docs=args.ndocs)
    truth = exact_topk_cached(coll, args.k)[1]
    queries = np.ascontiguousarray(coll.queries)
    docs = [coll.doc(i) for i in range(coll.n_docs)]  # memory-mapped views: the page cache, not a copy
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
               **m_local, "bytes_per_shard": sizes, **build_timings(path)}
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

    overhead = measure_overhead(work, shard_counts) if ray is not None else None
    overhead_load = list(os.getloadavg())
    result = {"benchmark": "sharded", "dataset": f"synthetic_{args.ndocs}", "started": started,
              "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
              "git": git_info(), "machine": machine_info(os.cpu_count() or 1),
              "collection": {"n_docs": coll.n_docs, "n_tokens": coll.n_tokens, "dim": coll.dim,
                             "nq": int(queries.shape[0])},
              "k": args.k, "nbits": args.nbits, "ray_start_s": ray_start_s if ray is not None else None,
              "ray_version": getattr(ray, "__version__", None), "ray_overhead": overhead,
              "ray_overhead_loadavg": overhead_load if overhead is not None else None, "rows": rows}
    one = next((x for x in rows if x["executor"] == "local" and x["shards"] == 1), None)
    if one is not None and one.get("compress_s_per_shard"):
        result["codec_train_s"] = one["codec_s"]
        result["compress_tokens_per_core_s"] = coll.n_tokens / one["compress_s_per_shard"][0] / (os.cpu_count() or 1)
    name = f"sharded_synthetic_{args.ndocs}{('_' + args.tag) if args.tag else ''}"
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS_DIR / f"{name}.md").write_text(render(result))
    print(f"wrote {RESULTS_DIR / name}.md", flush=True)
    if ray is not None:
        ray.shutdown()
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# ------------------------------------------------------------------------------------------------ projection
def _lognormal_max_quantile(p50: float, p95: float, n: int, q: float) -> float:
    """Quantile q of the maximum of n independent lognormal latencies with the given p50 and p95."""
    from statistics import NormalDist

    z = NormalDist()
    mu, sigma = np.log(p50), (np.log(p95) - np.log(p50)) / z.inv_cdf(0.95)
    return float(np.exp(mu + sigma * z.inv_cdf(q ** (1.0 / n))))


# One index of the same synthetic generator on this machine when it was quiet (2 threads): tokens, CPU ms per
# query at p50 (all threads: about one thread's service time), p50 and p95 wall ms. The per-shard cost curve.
QUIET_REFERENCES = [
    {"tokens": 1_004_194, "cpu_ms": 2.12, "p50_ms": 1.75, "p95_ms": 2.34,
     "source": "benchmarks/results/engine_synthetic_10000_three_way_int8.md"},
    {"tokens": 9_960_126, "cpu_ms": 10.67, "p50_ms": 5.88, "p95_ms": 8.76,
     "source": "benchmarks/results/engine_synthetic_100000_fused.md"},
    {"tokens": 31_914_446, "cpu_ms": 22.35, "p50_ms": 11.22, "p95_ms": 17.22,
     "source": "benchmarks/results/engine_synthetic_1000000_fused.md"},
]


def project(r: dict, total_tokens: float = 1e9, nodes: tuple[int, ...] = (16, 100), cores: int = 16,
            refs: list[dict] | None = None) -> dict:
    """A projection (not a measurement) of memory, build time and fan-out latency for ``total_tokens``.

    From the run ``r``: bytes per token on disk; resident memory per actor as R0 + beta * shard tokens
    (least squares over the Ray rows); Ray's per-query overhead (the largest measured); build throughput
    per core and the codec time (scaled by k-means sample and nlist). From ``refs`` (one index measured on
    a quiet machine): per-shard service time c * (tokens / 1M) ** alpha, fitted in log space, and the tail
    ratio p95/p50. Fan-out latency: the maximum of n independent lognormal shard latencies, plus the
    overhead and an assumed network round trip. Each node runs ``shards_per_node`` single-threaded shards.
    """
    refs = refs or QUIET_REFERENCES
    rows = {(x["executor"], x["shards"]): x for x in r["rows"]}
    n_tok = r["collection"]["n_tokens"]
    s_max = max(s for _, s in rows)
    bpt = sum(rows[("local", s_max)]["bytes_per_shard"]) / n_tok
    ray_rows = [x for (e, _), x in rows.items() if e == "ray"]
    xs = np.array([n_tok / x["shards"] for x in ray_rows for _ in x["actor_rss_bytes"]])
    ys = np.array([b for x in ray_rows for b in x["actor_rss_bytes"]], dtype=float)
    beta, r0 = np.polyfit(xs, ys, 1) if len(set(xs.tolist())) > 1 else (bpt, float(ys.mean() - bpt * xs.mean()))
    ovh = r.get("ray_overhead") or {}
    overhead = max([0.0] + [float(v["overhead_p50_ms"]) for v in ovh.values()])
    lt = np.log(np.array([x["tokens"] for x in refs]) / 1e6)
    lc = np.log(np.array([x["cpu_ms"] for x in refs]))
    alpha, logc = np.polyfit(lt, lc, 1)
    ratio = float(np.mean([x["p95_ms"] / x["p50_ms"] for x in refs]))
    build_rate = r.get("compress_tokens_per_core_s")
    codec_s = r.get("codec_train_s")
    if codec_s:  # k-means work grows with the sample and nlist: scale the measured codec time to 1B tokens
        from plaidx.engine.clustering import default_kmeans_sample, default_nlist

        nl_m, nl_p = default_nlist(n_tok), default_nlist(int(total_tokens))
        codec_s *= (default_kmeans_sample(nl_p, int(total_tokens)) / default_kmeans_sample(nl_m, n_tok)) * nl_p / nl_m
    rtt = 0.3  # ms, assumed intra-datacenter round trip per fan-out (not measured here)
    out = {"total_tokens": total_tokens, "codec_s": codec_s, "bytes_per_token": bpt, "actor_r0_bytes": r0,
           "actor_beta": beta, "latency_c_ms": float(np.exp(logc)), "latency_alpha": float(alpha),
           "tail_ratio": ratio, "router_overhead_ms": overhead, "rtt_ms": rtt, "cores_per_node": cores,
           "references": refs, "layouts": []}
    for n in nodes:
        for shards_per_node in (1, cores):
            n_shards = n * shards_per_node
            t_shard = total_tokens / n_shards
            p50 = float(np.exp(logc) * (t_shard / 1e6) ** alpha)
            p95 = p50 * ratio
            layout = {"nodes": n, "shards": n_shards, "shard_tokens": t_shard,
                      "disk_gib_per_node": total_tokens / n * bpt / 2**30,
                      "ram_gib_per_node": shards_per_node * (r0 + beta * t_shard) / 2**30,
                      "shard_p50_ms": p50, "shard_p95_ms": p95,
                      "node_qps_ceiling": 1000.0 * cores / (shards_per_node * p50),
                      "fanout_p50_ms": _lognormal_max_quantile(p50, p95, n_shards, 0.5) + overhead + rtt,
                      "fanout_p95_ms": _lognormal_max_quantile(p50, p95, n_shards, 0.95) + overhead + rtt,
                      "fanout_p99_ms": _lognormal_max_quantile(p50, p95, n_shards, 0.99) + overhead + rtt}
            if build_rate:
                layout["compress_s"] = total_tokens / n / (cores * build_rate)
                layout["build_s"] = layout["compress_s"] + (codec_s or 0.0)
            out["layouts"].append(layout)
    return out


def write_projection(result_file: Path) -> int:
    r = json.loads(result_file.read_text())
    pj = project(r)
    pj["from"] = str(result_file)
    out = RESULTS_DIR / "sharded_projection_1B.json"
    out.write_text(json.dumps(pj, indent=1))
    lines = [f"# PROJECTION (not measured): {pj['total_tokens']:.0e} tokens, from {result_file.name}", "",
             f"bytes/token {pj['bytes_per_token']:.1f}; actor RSS = {pj['actor_r0_bytes'] / 2**20:.0f} MiB + "
             f"{pj['actor_beta']:.1f} B x shard tokens; shard service time = {pj['latency_c_ms']:.2f} ms x "
             f"(M tokens) ^ {pj['latency_alpha']:.2f}; tail p95/p50 {pj['tail_ratio']:.2f}; Ray overhead "
             f"{pj['router_overhead_ms']:.2f} ms; RTT {pj['rtt_ms']} ms (assumed); codec {pj['codec_s']:.0f} s; "
             f"{pj['cores_per_node']} cores per node", "",
             "| nodes | shards | M tokens/shard | disk GiB/node | RAM GiB/node | shard p50 ms | fan-out p50 ms | p95 | "
             "p99 | QPS ceiling/node | build s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in pj["layouts"]:
        lines.append(f"| {x['nodes']} | {x['shards']} | {x['shard_tokens'] / 1e6:.1f} | {x['disk_gib_per_node']:.1f} | "
                     f"{x['ram_gib_per_node']:.1f} | {x['shard_p50_ms']:.1f} | {x['fanout_p50_ms']:.1f} | "
                     f"{x['fanout_p95_ms']:.1f} | {x['fanout_p99_ms']:.1f} | {x['node_qps_ceiling']:.0f} | "
                     f"{x.get('build_s', float('nan')):.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def load_note(m: dict) -> str:
    """What the load average says about this run's latencies (it includes the run's own threads and actors,
    up to about twice the cores here, so only a higher one means other work shared the machine)."""
    if (m.get("loadavg_1_5_15") or [0])[0] > 2 * m.get("cpu_count", 1):
        return ("- The machine was shared and heavily loaded (load average above): a 2-thread OpenMP search waits "
                "at its barriers for descheduled threads, so one shard in-process (2 threads) can be slower than the "
                "same shard in one single-threaded actor. Compare rows of this run only.")
    return ("- No other work shared the machine (the load average above is this run's own): in-process, one shard uses "
            "every core, while each Ray actor searches with one thread and its shards share the cores with the "
            "other actors, so on this 2-core machine Ray's latency is the search at one thread plus the round "
            "trips measured below. On a cluster each actor has cores of its own.")


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
    if r.get("ray_overhead"):
        lines += ["", "Ray's cost per query apart from search work (tiny shards of 4 short documents, single "
                  f"queries, p50 of 200; load average then {r.get('ray_overhead_loadavg') or 'not recorded'}):", "",
                  "| shards | in-process p50 ms | Ray p50 ms | Ray p95 ms | overhead p50 ms |", "|---|---|---|---|---|"]
        for s_, v in sorted(r["ray_overhead"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {s_} | {v['in_process_p50_ms']:.2f} | {v['ray_p50_ms']:.2f} | {v['ray_p95_ms']:.2f} | "
                         f"{v['overhead_p50_ms']:+.2f} |")
    lines += ["", "Notes:",
              "- In-process, one shard is searched with all cores (OpenMP); several shards run side by side in a "
              "thread pool with a share of the cores each. Ray actors (0.5 CPU each) search their shards in "
              "parallel with one thread each, the query put in the object store once.",
              load_note(m),
              "- Every shard gets the search parameters one index of the whole collection would use (the same "
              "ndocs per shard), so recall does not fall with more shards; the work per query grows with them.",
              "- A Ray build equals the local build with the same seed (same codec hash: "
              f"{all(row.get('same_codec_as_local_build', True) for row in r['rows'])}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
