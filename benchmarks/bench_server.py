"""Load benchmark of `plaidx serve`: requests per second and p50/p95 latency of /v1/search under concurrent clients.

Indexes the bundled SciFact sample (300 abstracts) with the bundled model, starts `python -m plaidx serve` in
its own process on 127.0.0.1, and drives /v1/search from N client threads (keep-alive connections), by query
text (encoded on the server, micro-batched) and by query embeddings (search only). Every response is
checked against the answer the server gave to the same query when it was idle.

    .venv/bin/python benchmarks/bench_server.py                # 8 clients x 200 requests per scenario
    .venv/bin/python benchmarks/bench_server.py --clients 16 --requests 100

Writes benchmarks/results/server.json and server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_index(cache: Path, model_name: str | None) -> tuple[Path, list[str], str]:
    """The sample collection as a RAG index (reused when already built with the same model)."""
    import plaidx
    from plaidx.rag.sample import doc_text, load_beir

    corpus, queries, qrels = load_beir()
    query_texts = [queries[q] for q in queries if q in qrels]
    root = cache / "server-bench"
    path = root / "scifact-sample"
    rag = plaidx.RAGPretrainedModel.from_pretrained(model_name, verbose=0, index_root=root)
    cfg = path / "plaidx_rag.json"
    if cfg.is_file() and json.loads(cfg.read_text())["model"]["name_or_path"] == rag.model.name_or_path:
        from plaidx.errors import PlaidxError
        from plaidx.rag import IndexFolder

        try:  # an index cached by an older plaidx may no longer open: rebuild it then
            IndexFolder(path).close()
            return path, query_texts, rag.model.name_or_path
        except (PlaidxError, ValueError, OSError) as exc:
            print(f"rebuilding the cached index ({exc})", flush=True)
    ids = list(corpus)
    t0 = time.perf_counter()
    rag.index([doc_text(corpus[d]) for d in ids], document_ids=ids, index_name=path.name, overwrite_index=True)
    print(f"indexed {len(ids)} documents in {time.perf_counter() - t0:.1f}s -> {path}", flush=True)
    return path, query_texts, rag.model.name_or_path


class Server:
    """`python -m plaidx serve` in a subprocess on a free loopback port."""

    def __init__(self, index: Path, search_threads: int | None, torch_threads: int | None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "plaidx", "serve", "--index", f"bench={index}", "--port", str(self.port),
               "--log-level", "warning", "--quiet"]
        if search_threads:
            cmd += ["--search-threads", str(search_threads)]
        if torch_threads:
            cmd += ["--torch-threads", str(torch_threads)]
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
        env.pop("PLAIDX_API_KEY", None)
        self.log = open(HERE / "results" / "cache" / "server-bench.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plaidx serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"plaidx serve did not answer /health within {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _same(got: list[dict], want: list[dict], atol: float = 1e-4) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if abs(g["score"] - w["score"]) > atol:
            return False
        if g["id"] != w["id"] and abs(g["score"] - w["score"]) > atol / 10:
            return False
    return True


def load(url: str, payloads: list[dict], reference: list[list[dict]], clients: int, per_client: int,
         seed: int) -> dict:
    """``clients`` threads, each sending ``per_client`` requests drawn from ``payloads``; latency of each."""
    import httpx

    lat: list[list[float]] = [[] for _ in range(clients)]
    bad = [0] * clients
    errors = [0] * clients
    start = threading.Barrier(clients + 1)

    def worker(c: int) -> None:
        rng = np.random.default_rng(seed + c)
        picks = rng.integers(len(payloads), size=per_client)
        with httpx.Client(base_url=url, timeout=120) as cl:
            cl.get("/health")
            start.wait()
            for j in picks:
                t0 = time.perf_counter()
                r = cl.post("/v1/search", json=payloads[j])
                lat[c].append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[c] += 1
                elif not _same(r.json()["results"], reference[j]):
                    bad[c] += 1

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array([x for row in lat for x in row]) * 1000
    return {"clients": clients, "requests": int(ms.size), "wall_s": round(wall, 3),
            "rps": round(ms.size / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "http_errors": int(sum(errors)),
            "wrong_results": int(sum(bad))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="requests per client per scenario")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", help="checkpoint (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--search-threads", type=int, help="plaidx serve --search-threads (default: CPU count)")
    p.add_argument("--torch-threads", type=int, help="plaidx serve --torch-threads (default: serve's, 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "server"), help="output path without extension")
    args = p.parse_args(argv)

    import httpx

    import plaidx

    cache = HERE / "results" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    index, queries, model_name = build_index(cache, args.model)
    load_before = os.getloadavg()
    server = Server(index, args.search_threads, args.torch_threads)
    try:
        t0 = time.perf_counter()
        server.wait()
        startup = time.perf_counter() - t0
        print(f"server up in {startup:.1f}s at {server.url}", flush=True)
        with httpx.Client(base_url=server.url, timeout=120) as cl:
            emb = cl.post("/v1/multi-vector", json={"input": queries, "input_type": "query"}).json()["data"]
            text_payloads = [{"index": "bench", "query": q, "k": args.k} for q in queries]
            emb_payloads = [{"index": "bench", "query_embeddings": e["embeddings"], "k": args.k} for e in emb]
            # idle answers: the reference every loaded response must equal
            text_ref = [cl.post("/v1/search", json=pl).json()["results"] for pl in text_payloads]
            emb_ref = [cl.post("/v1/search", json=pl).json()["results"] for pl in emb_payloads]
            info = cl.get("/v1/indexes").json()["data"][0]
        scenarios = {}
        for name, payloads, ref, clients in (
                ("text, 1 client", text_payloads, text_ref, 1),
                (f"text, {args.clients} clients", text_payloads, text_ref, args.clients),
                ("embeddings, 1 client", emb_payloads, emb_ref, 1),
                (f"embeddings, {args.clients} clients", emb_payloads, emb_ref, args.clients)):
            load(server.url, payloads, ref, clients, 20, args.seed + 99)  # warm-up
            res = load(server.url, payloads, ref, clients, args.requests, args.seed)
            scenarios[name] = res
            print(f"{name:<24} {res['rps']:>8.1f} req/s  p50 {res['p50_ms']:>7.2f} ms  p95 {res['p95_ms']:>7.2f} ms"
                  f"  wrong {res['wrong_results']}  errors {res['http_errors']}", flush=True)
    finally:
        server.stop()

    bi = plaidx.build_info()
    report = {
        "benchmark": "plaidx serve /v1/search under concurrent load",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "plaidx": {"version": plaidx.__version__, "backend": bi.get("backend"), "openmp": bi.get("openmp")},
        "index": {"path": str(index.relative_to(REPO)) if index.is_relative_to(REPO) else str(index),
                  "passages": info["documents"], "tokens": info["tokens"], "dim": info["dim"],
                  "nbits": info["nbits"], "nlist": info["nlist"], "model": model_name},
        "setup": {"k": args.k, "requests_per_client": args.requests, "queries": len(queries),
                  "server": "python -m plaidx serve (one uvicorn process), clients: threads of this process "
                            "with keep-alive httpx connections, same machine",
                  "search_threads": args.search_threads or "CPU count",
                  "torch_threads": args.torch_threads or "plaidx serve default (1)", "server_startup_s": round(startup, 2)},
        "scenarios": scenarios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# plaidx serve: /v1/search under load ({report['date']})", "",
             f"{report['machine']['cpus']} CPUs ({report['machine']['platform']}), load average before "
             f"{', '.join(f'{x:.1f}' for x in load_before)}, after "
             f"{', '.join(f'{x:.1f}' for x in report['machine']['load_average_after'])} (above the CPU count: "
             f"other jobs shared the machine, so these figures are lower bounds); "
             f"kernels: {report['plaidx']['backend']}. Index: the "
             f"bundled SciFact sample, {info['documents']} passages, {info['tokens']} tokens, dim {info['dim']}, "
             f"nbits {info['nbits']}, model {model_name}. k={args.k}; {args.requests} requests per client; server "
             "and clients share the machine.", "",
             "| scenario | requests | req/s | p50 ms | p95 ms | p99 ms | wrong results | HTTP errors |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in scenarios.items():
        lines.append(f"| {name} | {r['requests']} | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
                     f"{r['wrong_results']} | {r['http_errors']} |")
    lines += ["", "*text*: the server encodes the query (requests waiting for the model share one call), then "
                  "searches. *embeddings*: query embeddings from /v1/multi-vector sent in the request (search and "
                  "HTTP only). *wrong results*: responses that differ from the server's idle answer to the same "
                  "query (tie-aware, scores within 1e-4).", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    bad = sum(r["wrong_results"] + r["http_errors"] for r in scenarios.values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
