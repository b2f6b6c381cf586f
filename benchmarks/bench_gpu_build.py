"""Index build on one GPU against the same machine's CPU cores, in one run: synthetic tokens and SciFact text.

Per collection and device, in a child process each (so the host peak is that build's own):
  * stage times and tokens/s: encode (making the vectors: the synthetic generator, or the model on
    text), sample, k-means, assign + compress + write (the streamed pass; on the GPU it overlaps the
    next window's encoding), other (held-out set, codebooks, IVF, commit);
  * peak GPU memory (nvidia-smi, polled every 50 ms, above the level before the build) and peak host RSS;
  * GPU vs CPU agreement at sizes built on both: centroids within 1e-4, identical codes, top-10 overlap.
fast-plaid's published GPU index time (quora, 522,931 documents, 11.23 s on an H100, from embeddings,
README) is set beside the GPU run at about the same token count: the quora token count is not published,
so it is estimated as documents x ``--quora-tokens-per-doc`` (an assumption, stated in the report).

    # the lent GPU machine (scripts/gpu_check.sh): 10M tokens on both, 100M on the GPU, SciFact on both
    python benchmarks/bench_gpu_build.py --tokens 10M,100M --cpu-max-tokens 10M --scifact --out "$OUT"
    # anywhere (the CPU half at tiny size, to check the script)
    python benchmarks/bench_gpu_build.py --tokens 200k --devices cpu --out /tmp/bench-gpu-build

Writes gpu_build_<name>.json and .md into --out. SciFact is read from $PLAIDX_DATA/scifact/corpus.jsonl
(default /work/shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FASTPLAID_QUORA = {"docs": 522_931, "seconds": 11.23, "gpu": "H100", "source": "fast-plaid README (index from embeddings)"}


def log(msg: str) -> None:
    print(f"[bench-gpu-build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_count(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if text[-1:] in "kmg" else text) * mult)


# ------------------------------------------------------------------------------------ synthetic
class SyntheticCorpus:
    """Clustered unit vectors made on demand, a pure function of (document, token): any subset of documents
    encodes to the same rows on the CPU (numpy) and on the GPU (torch), so both builds see one collection
    and neither holds it (100M tokens x d 128 would be 51 GB of float32)."""

    def __init__(self, n_tokens: int, dim: int = 128, mean_len: int = 32, topics: int = 4096, seed: int = 0,
                 device: str | None = None):
        from plaidx.engine.gpu_build import EncodedCorpus

        rng = np.random.default_rng(seed)
        n_docs = max(1, n_tokens // mean_len)
        lengths = rng.integers(mean_len // 2, mean_len * 3 // 2 + 1, n_docs).astype(np.int64)
        lengths[-1] += n_tokens - int(lengths.sum())  # exactly n_tokens in all
        while lengths[-1] < 1:  # pragma: no cover - only for tiny n_tokens
            lengths = lengths[:-1]
            lengths[-1] += n_tokens - int(lengths.sum())
        centers = rng.standard_normal((topics, dim)).astype(np.float32)
        noise = (0.35 * rng.standard_normal((1 << 18, dim))).astype(np.float32)
        self.dim, self.topics, self.device = dim, topics, device
        self.offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.encode_s = 0.0
        self._lock = threading.Lock()
        if device is not None:
            import torch

            self.torch = torch
            self.centers = torch.from_numpy(centers).to(device)
            self.noise = torch.from_numpy(noise).to(device)
        else:
            self.centers, self.noise = centers, noise
        corpus = self

        class _Corpus(EncodedCorpus):
            def encode(self, indices):
                return corpus.encode(indices)

        self.corpus = _Corpus(lengths, dim)

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(topic, noise row) of every token of these documents, in order."""
        lens = self.offsets[indices + 1] - self.offsets[indices]
        doc = np.repeat(indices, lens)
        pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        topic = (doc * 2654435761 + (pos % 3) * 40503) % self.topics
        row = (doc * 7919 + pos * 104729) % (1 << 18)
        return topic, row

    def encode(self, indices: np.ndarray):
        t0 = time.perf_counter()
        topic, row = self.rows(np.asarray(indices, np.int64))
        if self.device is not None:
            torch = self.torch
            t = torch.from_numpy(topic).to(self.device)
            r = torch.from_numpy(row).to(self.device)
            x = torch.nn.functional.normalize(self.centers[t] + self.noise[r], dim=1).contiguous()
            torch.cuda.current_stream(x.device).synchronize()
        else:
            x = self.centers[topic] + self.noise[row]
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        with self._lock:
            self.encode_s += time.perf_counter() - t0
        return x

    def queries(self, n: int, qlen: int = 32, seed: int = 1) -> np.ndarray:
        """float32 (n, qlen, d): tokens of random documents, perturbed (numpy, any device)."""
        rng = np.random.default_rng(seed)
        docs = rng.integers(0, self.offsets.size - 1, n)
        centers = self.centers.cpu().numpy() if self.device is not None else self.centers
        q = np.empty((n, qlen, self.dim), np.float32)
        for i, doc in enumerate(docs):
            topic, _ = self.rows(np.array([doc]))
            v = centers[rng.choice(topic, qlen)] + 0.35 * rng.standard_normal((qlen, self.dim)).astype(np.float32)
            q[i] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return q


# ------------------------------------------------------------------------------------ measuring
class GpuMemory:
    """Peak used GPU memory (MiB) by polling nvidia-smi, above the level at start."""

    def __init__(self, index: int = 0, period: float = 0.05):
        self.index, self.period = index, period
        self.base = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _used(self) -> int | None:
        if shutil.which("nvidia-smi") is None:
            return None
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", str(self.index)], capture_output=True, text=True)
        try:
            return int(out.stdout.strip().splitlines()[0])
        except (ValueError, IndexError):
            return None

    def _poll(self) -> None:
        while not self._stop.wait(self.period):
            u = self._used()
            if u is not None and (self.peak is None or u > self.peak):
                self.peak = u

    def __enter__(self) -> GpuMemory:
        if self.base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mib(self) -> int | None:
        return None if self.base is None else int(self.peak - self.base)


def stages(index_path: Path, total_s: float, encode_s: float) -> dict:
    manifest = json.loads((index_path / "manifest.json").read_text())
    t = manifest["build"]["timings"]
    out = {"total_s": total_s, "encode_s": encode_s, "sample_s": t.get("sample_s", 0.0),
           "kmeans_s": t.get("kmeans_s", 0.0), "assign_compress_write_s": t.get("assign_compress_s", 0.0)}
    out["other_s"] = total_s - out["sample_s"] - out["kmeans_s"] - out["assign_compress_write_s"]
    for k, v in manifest["build"].get("stream_timings", {}).items():  # GPU builds: the streamed pass split up
        out[f"stream_{k}"] = v
    return {"stages": out, "nlist": manifest["nlist"], "n_tokens": manifest["n_tokens"],
            "n_docs": manifest["n_docs"], "device": manifest["build"].get("device", "cpu")}


def one_synthetic(n_tokens: int, device: str, work: Path, batch_tokens: int, mode: str) -> dict:
    """mode "memory": the vectors made first into host memory, then built (as from embeddings in RAM);
    "stream": an EncodedCorpus made window by window on the build's device while the previous window is
    compressed (the text pipeline's shape, with a generator for the model)."""
    import plaidx

    dev = device if device != "cpu" else None
    syn = SyntheticCorpus(n_tokens, device=dev if mode == "stream" else None)
    source = syn.corpus
    if mode == "memory":
        flat = np.concatenate([syn.encode(w) for w in syn.corpus.windows(np.arange(len(syn.corpus)), 1 << 20)])
        source = np.split(flat, syn.offsets[1:-1])
    path = work / f"syn_{n_tokens}_{device.replace(':', '')}_{mode}"
    with GpuMemory() as mem:
        t0 = time.perf_counter()
        plaidx.Index.build(path, source, nbits=2, overwrite=True, batch_tokens=batch_tokens, device=dev)
        total = time.perf_counter() - t0
    r = stages(path, total, syn.encode_s if mode == "stream" else 0.0)
    r.update({"path": str(path), "gpu_peak_mib": mem.mib(), "host_peak_mib": peak_rss_mib(),
              "batch_tokens": batch_tokens, "mode": mode, "made_in_memory_s": syn.encode_s if mode == "memory" else 0})
    return r


def one_scifact(device: str, work: Path, limit: int | None) -> dict:
    from plaidx import RAGPretrainedModel
    from plaidx.cli.corpus import read_corpus

    data = Path(os.environ.get("PLAIDX_DATA", "/work/shared/data")) / "scifact"
    ids, texts, _ = read_corpus(str(data), limit=limit)
    rag = RAGPretrainedModel.from_pretrained(None, n_gpu=-1 if device != "cpu" else 0, verbose=0,
                                             index_root=str(work / f"rag_{device.replace(':', '')}"))
    encode_s = [0.0]
    original = rag._encode_documents

    def timed(*a, **kw):  # the CPU path encodes through this; the GPU path through PassageCorpus.encode
        t0 = time.perf_counter()
        out = original(*a, **kw)
        encode_s[0] += time.perf_counter() - t0
        return out

    rag._encode_documents = timed
    from plaidx.rag import encoded

    enc_orig = encoded.PassageCorpus.encode

    def timed_corpus(self, indices):
        t0 = time.perf_counter()
        out = enc_orig(self, indices)
        encode_s[0] += time.perf_counter() - t0
        return out

    encoded.PassageCorpus.encode = timed_corpus
    kw = {"device": device} if device != "cpu" else {}
    with GpuMemory() as mem:
        t0 = time.perf_counter()
        folder = rag.index(texts, document_ids=[str(i) for i in ids], index_name="scifact", **kw)
        total = time.perf_counter() - t0
    r = stages(Path(folder) / "engine", total, encode_s[0])
    r.update({"path": str(Path(folder) / "engine"), "gpu_peak_mib": mem.mib(), "host_peak_mib": peak_rss_mib(),
              "model": rag.model.name_or_path, "n_texts": len(texts)})
    return r


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(args: argparse.Namespace) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.one == "scifact":
        r = one_scifact(args.device, work, args.scifact_limit)
    else:
        r = one_synthetic(parse_count(args.one), args.device, work, args.batch_tokens, args.mode)
    print("RESULT " + json.dumps(r), flush=True)
    return 0


def run_child(what: str, device: str, args: argparse.Namespace, mode: str = "memory") -> dict | None:
    cmd = [sys.executable, __file__, "--one", what, "--device", device, "--mode", mode, "--work", args.work,
           "--batch-tokens", str(args.batch_tokens if device == "cpu" else args.gpu_batch_tokens)]
    if args.scifact_limit:
        cmd += ["--scifact-limit", str(args.scifact_limit)]
    log(f"{what} on {device} ({mode})")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        log(f"{what} on {device} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return None
    r = json.loads(line[len("RESULT "):])
    s = r["stages"]
    log(f"{what} on {device}: {r['n_tokens']} tokens, nlist {r['nlist']}, total {s['total_s']:.1f} s "
        f"(k-means {s['kmeans_s']:.1f} s, assign+compress+write {s['assign_compress_write_s']:.1f} s), "
        f"GPU peak {r['gpu_peak_mib']} MiB, host peak {r['host_peak_mib']:.0f} MiB")
    return r


def agreement(cpu: dict, gpu: dict, queries: np.ndarray | None) -> dict:
    import plaidx

    a, b = plaidx.Index.open(cpu["path"]), plaidx.Index.open(gpu["path"])
    ca, cb = a._snap.codec.centroids, b._snap.codec.centroids
    out = {"centroids_within_1e-4": float((np.abs(ca - cb).max(axis=1) < 1e-4).mean()),
           "codes_identical": float(np.mean(np.asarray(a._snap.a["codes"]) == np.asarray(b._snap.a["codes"])))}
    if queries is not None:
        ia, ib = a.search(queries, k=10)[1], b.search(queries, k=10)[1]
        out["top10_overlap"] = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ia, ib)]))
    return out


def machine() -> dict:
    import plaidx

    info = plaidx.build_info()
    m = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "platform": platform.platform(), "cpu_count": os.cpu_count(),
         "gpu": info.get("cuda_name") or None, "cuda_runtime": info.get("cuda_runtime_version"),
         "cuda_driver": info.get("cuda_driver_version"), "archs": info.get("cuda_compiled_archs"),
         "simd": info.get("simd_dispatch"), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        with open("/proc/cpuinfo") as f:
            m["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        m["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                     for d in threadpool_info()]
    except Exception:  # noqa: BLE001
        pass
    try:
        m["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() or None
    except OSError:
        m["commit"] = None
    return m


def _opt(r: dict, key: str) -> str:
    v = r["stages"].get(key)
    return "-" if v is None else f"{v:.1f}"


def rate(r: dict, key: str) -> str:
    s = r["stages"].get(key, 0.0)
    return f"{r['n_tokens'] / s / 1e6:.2f}" if s > 0 else "-"


def markdown(name: str, runs: dict, agree: dict | None, m: dict, command: str, quora_tpd: float) -> str:
    lines = [f"# Build on one GPU vs {m['cpu_count']} CPU cores: {name}", "",
             f"{m['date']}, commit {m.get('commit')}, {m.get('gpu')} (CUDA runtime {m.get('cuda_runtime')}, driver "
             f"{m.get('cuda_driver')}, archs {m.get('archs')}); CPU {m.get('cpu')} ({m['cpu_count']} cores, "
             f"{m.get('simd')}, BLAS {m.get('blas')}, OPENBLAS_CORETYPE={m.get('OPENBLAS_CORETYPE')}).", "",
             f"Command: `{command}`", "",
             "| | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    rows = [("tokens", lambda r: f"{r['n_tokens']:,}"), ("documents", lambda r: f"{r['n_docs']:,}"),
            ("nlist", lambda r: str(r["nlist"])), ("total (s)", lambda r: f"{r['stages']['total_s']:.1f}"),
            ("vectors made before the build (s)", lambda r: f"{r.get('made_in_memory_s', 0):.1f}"),
            ("encode during the build (s; overlapped in stream mode)", lambda r: f"{r['stages']['encode_s']:.1f}"),
            ("sample (s)", lambda r: f"{r['stages']['sample_s']:.1f}"),
            ("k-means (s)", lambda r: f"{r['stages']['kmeans_s']:.1f}"),
            ("assign + compress + write (s)", lambda r: f"{r['stages']['assign_compress_write_s']:.1f}"),
            ("- of which waiting for input (s)", lambda r: _opt(r, "stream_wait_s")),
            ("- of which on the device (s)", lambda r: _opt(r, "stream_device_s")),
            ("- of which writing (s)", lambda r: _opt(r, "stream_write_s")),
            ("other (s)", lambda r: f"{r['stages']['other_s']:.1f}"),
            ("M tokens/s, whole build", lambda r: rate(r, "total_s")),
            ("M tokens/s, encode", lambda r: rate(r, "encode_s")),
            ("M tokens/s, k-means (collection tokens per k-means second)", lambda r: rate(r, "kmeans_s")),
            ("M tokens/s, assign + compress + write", lambda r: rate(r, "assign_compress_write_s")),
            ("M tokens/s, of which on the device / writing", lambda r: f"{rate(r, 'stream_device_s')} / "
                                                                      f"{rate(r, 'stream_write_s')}"),
            ("peak GPU memory (MiB)", lambda r: str(r.get("gpu_peak_mib"))),
            ("peak host RSS (MiB)", lambda r: f"{r['host_peak_mib']:.0f}")]
    for label, f in rows:
        lines.append(f"| {label} | " + " | ".join(f(r) for r in runs.values()) + " |")
    cpu = next((r for k, r in runs.items() if k == "cpu"), None)
    gpu = next((r for k, r in runs.items() if k != "cpu" and "stream" not in k), None)
    stream = next((r for k, r in runs.items() if "stream" in k), None)
    lines.append("")
    if cpu and gpu:
        lines.append(f"GPU / CPU whole-build time: {gpu['stages']['total_s'] / cpu['stages']['total_s']:.3f}; "
                     f"k-means {gpu['stages']['kmeans_s'] / max(cpu['stages']['kmeans_s'], 1e-9):.3f}; assign + "
                     f"compress + write {gpu['stages']['assign_compress_write_s'] / max(cpu['stages']['assign_compress_write_s'], 1e-9):.3f}.")
    if agree:
        lines.append(f"GPU vs CPU index: {100 * agree['centroids_within_1e-4']:.2f}% of centroids within 1e-4, "
                     f"{100 * agree['codes_identical']:.3f}% identical codes"
                     + (f", top-10 overlap {agree['top10_overlap']:.3f}" if "top10_overlap" in agree else "") + ".")
    ref = gpu or stream
    if ref and name.startswith("synthetic"):
        gpu = ref
        est = FASTPLAID_QUORA["docs"] * quora_tpd
        ours = gpu["stages"]["total_s"]  # from vectors made on the device (the generator's time is in it)
        lines.append(f"fast-plaid's published quora build ({FASTPLAID_QUORA['docs']:,} documents, "
                     f"{FASTPLAID_QUORA['seconds']} s on an {FASTPLAID_QUORA['gpu']}, from embeddings): at an assumed "
                     f"{quora_tpd:g} tokens per document ({est / 1e6:.1f}M tokens) this build's rate gives "
                     f"{ours * est / gpu['n_tokens']:.2f} s on this GPU (ratio "
                     f"{ours * est / gpu['n_tokens'] / FASTPLAID_QUORA['seconds']:.3f}; different GPUs, the quora token "
                     "count is an estimate, not a measurement).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="10M", help="comma-separated synthetic sizes (e.g. 10M,100M)")
    ap.add_argument("--devices", default="cuda,cpu", help="devices to build on")
    ap.add_argument("--cpu-max-tokens", default="10M", help="largest synthetic size also built on the CPU")
    ap.add_argument("--scifact", action="store_true", help="also SciFact text with the bundled model")
    ap.add_argument("--scifact-limit", type=int, default=0, help="first N SciFact documents (0: all)")
    ap.add_argument("--batch-tokens", type=int, default=1 << 16, help="CPU build batch (Index.build default)")
    ap.add_argument("--gpu-batch-tokens", type=int, default=1 << 20, help="GPU build window")
    ap.add_argument("--quora-tokens-per-doc", type=float, default=20.0,
                    help="assumed average tokens per quora document, for the fast-plaid comparison")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--timeout-s", type=int, default=900)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--work", default="/tmp/plaidx-bench-gpu-build")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return child(args)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    command = "python benchmarks/bench_gpu_build.py " + " ".join(argv if argv is not None else sys.argv[1:])
    cpu_max = parse_count(args.cpu_max_tokens)
    jobs = [(f"synthetic_{t}", t) for t in (x.strip() for x in args.tokens.split(",")) if t]
    if args.scifact:
        jobs.append(("scifact", "scifact"))
    for name, what in jobs:
        runs = {}
        for dev in devices:
            if what == "scifact":
                r = run_child(what, dev, args)
                if r is not None:
                    runs[dev] = r
                continue
            n = parse_count(what)
            if n <= cpu_max:  # from vectors in host memory, on every device
                r = run_child(str(n), dev, args, "memory")
                if r is not None:
                    runs[dev] = r
            if dev != "cpu":  # made on the device window by window, overlapped with compression
                r = run_child(str(n), dev, args, "stream")
                if r is not None:
                    runs[f"{dev} (stream)"] = r
        if not runs:
            continue
        agree = None
        if "cpu" in runs and len(runs) > 1:
            gpu_run = next(r for k, r in runs.items() if k != "cpu" and "stream" not in k)
            q = SyntheticCorpus(parse_count(what)).queries(args.queries) if what != "scifact" else None
            agree = agreement(runs["cpu"], gpu_run, q)
        report = {"name": name, "machine": m, "command": command, "runs": runs, "agreement": agree,
                  "fastplaid_quora": FASTPLAID_QUORA, "quora_tokens_per_doc_assumed": args.quora_tokens_per_doc}
        (out / f"gpu_build_{name}.json").write_text(json.dumps(report, indent=1))
        md = markdown(name, runs, agree, m, command, args.quora_tokens_per_doc)
        (out / f"gpu_build_{name}.md").write_text(md)
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
