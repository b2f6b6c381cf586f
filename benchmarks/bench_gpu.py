"""GPU vs CPU search on one machine, in one run: plaidx's CUDA twins against its native CPU kernels.

Same index, same queries, same default search parameters; the CPU uses every core of the machine.
Measured: recall@10 against exact MaxSim over the uncompressed float32 embeddings (computed on the GPU
with torch, an oracle independent of plaidx), agreement of the GPU and CPU top-10 lists, single-query
p50/p95 latency, batched QPS (the queries in one call, and a 10x batch on the GPU), the exhaustive
(exact=True) search time, and the one-off cost of copying the index to the GPU.

    python benchmarks/bench_gpu.py --ndocs 10000 --out benchmarks/results
    python benchmarks/bench_gpu.py --ndocs 10000,100000 --budget-s 420 --out "$OUT"

Writes gpu_synthetic_<ndocs>.json and .md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402
from collection import recall_at_k, topk_from_scores  # noqa: E402

import plaidx  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench-gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def exact_truth_torch(coll, k: int) -> np.ndarray:
    """Exact MaxSim top-k ids over the uncompressed embeddings, on the GPU with torch (ties: lower id)."""
    import torch

    dev = torch.device("cuda")
    q = torch.from_numpy(np.ascontiguousarray(coll.queries)).to(dev)
    nq, qt, d = q.shape
    qf = q.reshape(nq * qt, d)
    offsets = coll.offsets
    scores = torch.empty((nq, coll.n_docs), dtype=torch.float32, device=dev)
    lo_doc = 0
    chunk_tokens = 1 << 17
    while lo_doc < coll.n_docs:
        hi_doc = int(np.searchsorted(offsets, offsets[lo_doc] + chunk_tokens, side="right")) - 1
        hi_doc = max(hi_doc, lo_doc + 1)
        t0, t1 = int(offsets[lo_doc]), int(offsets[hi_doc])
        v = torch.from_numpy(np.ascontiguousarray(coll.values[t0:t1])).to(dev)
        sim = qf @ v.T  # (nq*qt, tokens)
        seg = torch.from_numpy(np.repeat(np.arange(hi_doc - lo_doc), np.diff(offsets[lo_doc:hi_doc + 1]))).to(dev)
        m = torch.full((nq * qt, hi_doc - lo_doc), -float("inf"), device=dev)
        m.scatter_reduce_(1, seg.expand(nq * qt, -1), sim, reduce="amax")
        scores[:, lo_doc:hi_doc] = m.reshape(nq, qt, -1).sum(dim=1)
        lo_doc = hi_doc
    return topk_from_scores(scores.cpu().numpy(), k)[1]


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return recall_at_k(ids, truth, truth.shape[1])


def time_single(index, queries, device, n: int) -> tuple[float, float]:
    for q in queries[:5]:
        index.search(q, k=10, device=device)
    lat = []
    for q in queries[:n]:
        t0 = time.perf_counter()
        index.search(q, k=10, device=device)
        lat.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


def time_batch(index, queries, device, repeats: int = 3, **kw) -> tuple[float, tuple]:
    index.search(queries[:8], k=10, device=device, **kw)
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = index.search(queries, k=10, device=device, **kw)
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(n_docs: int, work: Path, n_single: int, n_exact: int = 30) -> dict:
    t0 = time.perf_counter()
    coll = synthetic.ensure(n_docs=n_docs, log=False)
    gen_s = time.perf_counter() - t0
    log(f"{n_docs} docs, {coll.n_tokens} tokens (generated in {gen_s:.0f} s)")
    t0 = time.perf_counter()
    truth = exact_truth_torch(coll, 10)
    truth_s = time.perf_counter() - t0
    path = work / f"gpu_index_{n_docs}"
    t0 = time.perf_counter()
    plaidx.Index.build(path, coll.iter_batches(), nbits=2, overwrite=True)
    build_s = time.perf_counter() - t0
    log(f"truth {truth_s:.1f} s, build {build_s:.1f} s (CPU, {os.cpu_count()} cores)")
    index = plaidx.Index.open(path)
    queries = np.ascontiguousarray(coll.queries)
    t0 = time.perf_counter()
    index.search(queries[:1], k=10, device="cuda")
    upload_s = time.perf_counter() - t0
    rows = {}
    for device in ("cpu", "cuda"):
        bt, (_, ids) = time_batch(index, queries, device)
        p50, p95 = time_single(index, queries, device, n_single)
        et, _ = time_batch(index, queries[:n_exact], device, repeats=1, exact=True)
        rows[device] = {"recall@10": recall(ids, truth), "p50_ms": p50, "p95_ms": p95,
                        "qps_batch": len(queries) / bt, "exact_ms_per_query": 1e3 * et / n_exact, "ids": ids}
        log(f"{device}: recall {rows[device]['recall@10']:.3f} p50 {p50:.2f} ms "
            f"QPS {rows[device]['qps_batch']:.0f} exact {1e3 * et / n_exact:.1f} ms/query")
    _, (_, eids) = time_batch(index, queries, "cuda", repeats=1, exact=True)
    rows["cuda"]["exact_recall@10"] = recall(eids, truth)
    big = np.ascontiguousarray(np.tile(queries, (10, 1, 1)))
    bt_big, _ = time_batch(index, big, "cuda", repeats=2)
    rows["cuda"]["qps_batch_x10"] = len(big) / bt_big
    agree = float(np.mean(rows["cpu"]["ids"] == rows["cuda"]["ids"]))
    for r in rows.values():
        r.pop("ids")
    info = plaidx.build_info()
    return {"n_docs": n_docs, "n_tokens": coll.n_tokens, "dim": coll.dim, "nq": len(queries), "nbits": 2,
            "k": 10, "build_s_cpu": build_s, "gpu_upload_s": upload_s, "truth_s_torch_gpu": truth_s,
            "gpu_cpu_top10_agreement": agree, "cpu": rows["cpu"], "cuda": rows["cuda"],
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "gpu": info.get("cuda_name"), "cuda_runtime": info.get("cuda_runtime_version"),
                        "cuda_driver": info.get("cuda_driver_version"), "archs": info.get("cuda_compiled_archs"),
                        "simd_dispatch": info.get("simd_dispatch"), "date": time.strftime("%Y-%m-%d %H:%M")}}


def markdown(r: dict) -> str:
    c, g = r["cpu"], r["cuda"]
    m = r["machine"]
    lines = [f"# GPU vs CPU: synthetic {r['n_docs']} documents, {r['n_tokens']} tokens, d {r['dim']}, nbits 2, k 10",
             "",
             f"{m['gpu']} (CUDA runtime {m['cuda_runtime']}, archs {m['archs']}) against the native CPU kernels on "
             f"{m['cpu_count']} cores ({m['simd_dispatch']}), {m['date']}. Same index, queries and default "
             "parameters, one run.", "",
             "| | CPU | GPU | GPU / CPU |", "|---|---|---|---|",
             f"| recall@10 vs exact MaxSim | {c['recall@10']:.3f} | {g['recall@10']:.3f} | |",
             f"| single-query p50 | {c['p50_ms']:.2f} ms | {g['p50_ms']:.2f} ms | {g['p50_ms'] / c['p50_ms']:.2f} |",
             f"| single-query p95 | {c['p95_ms']:.2f} ms | {g['p95_ms']:.2f} ms | {g['p95_ms'] / c['p95_ms']:.2f} |",
             f"| batched QPS ({r['nq']} queries) | {c['qps_batch']:.0f} | {g['qps_batch']:.0f} | "
             f"{g['qps_batch'] / c['qps_batch']:.1f}x |",
             f"| batched QPS ({10 * r['nq']} queries) | | {g['qps_batch_x10']:.0f} | |",
             f"| exhaustive search (exact=True), per query in a batch of 30 | {c['exact_ms_per_query']:.1f} ms | "
             f"{g['exact_ms_per_query']:.2f} ms | {g['exact_ms_per_query'] / c['exact_ms_per_query']:.3f} |",
             f"| exhaustive recall@10 (the codec's ceiling) | | {g['exact_recall@10']:.3f} | |",
             "",
             f"GPU and CPU top-10 lists agree on {100 * r['gpu_cpu_top10_agreement']:.1f}% of positions. "
             f"Index built on the CPU in {r['build_s_cpu']:.1f} s; copying it to the GPU took "
             f"{r['gpu_upload_s']:.2f} s (once per opened generation).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ndocs", default="10000", help="comma-separated collection sizes (synthetic documents)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--work", default="/tmp/plaidx-bench-gpu")
    ap.add_argument("--single", type=int, default=100, help="queries timed one by one")
    ap.add_argument("--budget-s", type=float, default=0, help="skip further sizes past this many seconds")
    args = ap.parse_args(argv)
    if not plaidx.build_info()["cuda"]:
        print(f"no usable GPU: {plaidx.build_info()['cuda_reason']}", file=sys.stderr)
        return 2
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, n in enumerate(int(x) for x in args.ndocs.split(",")):
        if i and args.budget_s and time.perf_counter() - start > args.budget_s:
            log(f"budget spent, skipping {n}")
            continue
        r = run(n, work, args.single)
        (out / f"gpu_synthetic_{n}.json").write_text(json.dumps(r, indent=1))
        (out / f"gpu_synthetic_{n}.md").write_text(markdown(r))
        print(markdown(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
