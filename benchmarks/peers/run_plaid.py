"""Stanford PLAID (colbert-ai 0.2.22) from precomputed embeddings: build or search, results as JSON.

Runs inside .bench-venv-plaid (see setup_peers.sh), one phase per process so the harness gets a clean
peak RSS for each::

    python run_plaid.py build  --coll DIR --index DIR --out build.json [--nbits 2 --threads 2]
    python run_plaid.py search --coll DIR --index DIR --out search.json [--k 10 --configs "1,0.5,256"]

``--coll`` holds values.npy float32 (n_tokens, d), offsets.npy int64 (n_docs + 1,), queries.npy float32
(nq, 32, d) (the benchmark cache format). Build drives CollectionIndexer's stages (setup, train, index,
finalize) with an encoder that returns the stored embeddings, since its constructor loads a model.
Search calls IndexScorer.rank one query at a time (its CPU path has no batched search). The C++
extensions compile on first use into TORCH_EXTENSIONS_DIR (default cache/torch_ext_plaid) and are
loaded before any timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: procstats
from procstats import cpu_s, dir_bytes, open_values, peak_rss_mb, read_rows, rss_mb  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / "results" / "cache"
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(CACHE / "torch_ext_plaid"))


def _setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except Exception:  # noqa: BLE001 - faiss thread control is best effort
        pass


def _load_extensions() -> float:
    """Compile (first time) and load every CPU extension PLAID uses; returns the seconds it took."""
    from colbert.indexing.codecs.residual import ResidualCodec
    from colbert.modeling.colbert import ColBERT
    from colbert.search.index_storage import IndexScorer
    from colbert.search.strided_tensor import StridedTensor

    t0 = time.perf_counter()
    for cls in (ColBERT, IndexScorer, StridedTensor, ResidualCodec):
        cls.try_load_torch_extensions(False)
    return time.perf_counter() - t0


class _StoredEncoder:
    """Stands in for CollectionEncoder: passages are pid strings, embeddings come from the cache."""

    def __init__(self, coll: Path, offsets):
        self.coll, self.offsets = coll, offsets
        (_, self.dim), self.off = open_values(coll)

    def encode_passages(self, passages):
        import numpy as np
        import torch

        pids = [int(p) for p in passages]
        if not pids:
            return torch.empty(0, self.dim), []
        doclens = [int(self.offsets[p + 1] - self.offsets[p]) for p in pids]
        if pids == list(range(pids[0], pids[-1] + 1)):  # a chunk: one contiguous read
            embs = read_rows(self.coll, self.off, self.dim, self.offsets[pids[0]], self.offsets[pids[-1] + 1])
        else:  # the k-means sample
            embs = np.concatenate([read_rows(self.coll, self.off, self.dim, self.offsets[p], self.offsets[p + 1])
                                   for p in pids])
        return torch.from_numpy(embs), doclens


_QUANTILE_MAX = 2**24 - 1  # torch.quantile refuses larger inputs


def _indexer_class():
    """CollectionIndexer whose held-out sample fits torch.quantile.

    colbert-ai 0.2.22 holds out min(5% of the k-means sample, 50k) tokens and calls torch.quantile on
    all their residual values, which fails above 2^24 values (50k x d=384 = 19.2M: "quantile() input
    tensor is too large"). The held-out rows are capped at 2^24 // d; at d=128 nothing changes.
    """
    from colbert.indexing.collection_indexer import CollectionIndexer

    class _Indexer(CollectionIndexer):
        heldout_capped_to = None

        def _concatenate_and_split_sample(self):
            sample, heldout = super()._concatenate_and_split_sample()
            cap = _QUANTILE_MAX // heldout.shape[1]
            if heldout.shape[0] > cap:
                type(self).heldout_capped_to = cap
                heldout = heldout[:cap]
            return sample, heldout

    return _Indexer


def build(args) -> dict:
    import numpy as np
    import torch
    from colbert.data.collection import Collection
    from colbert.indexing.index_saver import IndexSaver
    from colbert.infra import ColBERTConfig, Run, RunConfig

    _setup(args.threads)
    ext_s = _load_extensions()
    offsets = np.load(Path(args.coll) / "offsets.npy")
    (_, dim), _ = open_values(Path(args.coll))
    n_docs = len(offsets) - 1
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    index = Path(args.index)
    index.mkdir(parents=True, exist_ok=True)
    rss0 = rss_mb()
    stages = {}
    with Run().context(RunConfig(nranks=1, rank=0, experiment="bench", root=str(index.parent))):
        config = ColBERTConfig(nbits=args.nbits, dim=dim, kmeans_niters=args.kmeans_niters,
                               index_path=str(index), doc_maxlen=int(np.diff(offsets).max()), nranks=1,
                               rank=0, gpus=0)
        Indexer = _indexer_class()
        ci = Indexer.__new__(Indexer)  # CollectionIndexer.__init__ would load a checkpoint
        ci.verbose, ci.config, ci.rank, ci.nranks, ci.use_gpu = 1, config, 0, 1, False
        ci.collection = Collection(data=[str(i) for i in range(n_docs)])
        ci.encoder = _StoredEncoder(Path(args.coll), offsets)
        ci.saver = IndexSaver(config)
        t_all, c_all = time.perf_counter(), cpu_s()
        with torch.inference_mode():
            for stage in ("setup", "train", "index", "finalize"):
                t0 = time.perf_counter()
                getattr(ci, stage)([[None]]) if stage == "train" else getattr(ci, stage)()
                stages[stage] = round(time.perf_counter() - t0, 2)
                print(f"[plaid] {stage} {stages[stage]}s", flush=True)
        build_s, build_cpu = time.perf_counter() - t_all, cpu_s() - c_all
    return {"engine": "plaid", "phase": "build", "build_s": round(build_s, 2), "build_cpu_s": round(build_cpu, 2), "stages_s": stages,
            "extensions_load_s": round(ext_s, 2), "rss_before_build_mb": round(rss0, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "index_bytes": dir_bytes(index),
            "n_docs": n_docs, "n_tokens": int(offsets[-1]), "dim": int(dim), "nbits": args.nbits,
            "nlist": int(ci.num_partitions), "kmeans_niters": args.kmeans_niters,
            "heldout_capped_to": Indexer.heldout_capped_to}


def _parse_configs(text: str) -> list[dict]:
    out = []
    for part in text.split(";"):
        if part.strip():
            ncells, thr, ndocs = part.split(",")
            out.append({"ncells": int(ncells), "centroid_score_threshold": float(thr), "ndocs": int(ndocs)})
    return out


def search(args) -> dict:
    import numpy as np
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.search.index_storage import IndexScorer

    _setup(args.threads)
    ext_s = _load_extensions()
    queries = np.load(Path(args.coll) / "queries.npy")
    rss0 = rss_mb()
    t0 = time.perf_counter()
    scorer = IndexScorer(str(args.index), use_gpu=False)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb()
    Q = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(queries, np.float32)), dim=-1)
    nq = Q.shape[0]
    runs = []
    for cfg in _parse_configs(args.configs):
        config = ColBERTConfig(query_maxlen=Q.shape[1], dim=Q.shape[2], gpus=0, **cfg)
        for i in range(min(args.warmup, nq)):
            scorer.rank(config, Q[i:i + 1])
        ids = np.full((nq, args.k), -1, np.int64)
        scores = np.full((nq, args.k), -np.inf, np.float32)
        lat, cpu = np.empty(nq), np.empty(nq)
        for i in range(nq):
            t, c = time.perf_counter(), time.process_time()
            pids, sc = scorer.rank(config, Q[i:i + 1])
            lat[i] = time.perf_counter() - t
            cpu[i] = time.process_time() - c
            n = min(args.k, len(pids))
            ids[i, :n], scores[i, :n] = pids[:n], sc[:n]
        ms = lat * 1e3
        runs.append({"params": cfg, "latency_ms": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                                                   "p95": float(np.percentile(ms, 95)), "max": float(ms.max())},
                     "cpu_ms": {"mean": float(cpu.mean() * 1e3), "p50": float(np.percentile(cpu, 50) * 1e3)},
                     "qps_sequential": float(nq / lat.sum()), "ids": ids.tolist(),
                     "scores": np.where(np.isfinite(scores), scores, None).tolist()})
        print(f"[plaid] {cfg}: p50 {runs[-1]['latency_ms']['p50']:.1f} ms, "
              f"p95 {runs[-1]['latency_ms']['p95']:.1f} ms", flush=True)
    return {"engine": "plaid", "phase": "search", "extensions_load_s": round(ext_s, 2),
            "open_s": round(open_s, 3), "rss_before_open_mb": round(rss0, 1), "rss_after_open_mb": round(rss_open, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "nq": int(nq), "k": args.k, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Stanford PLAID peer runner")
    ap.add_argument("phase", choices=["build", "search", "warmup"])
    ap.add_argument("--coll", help="collection folder (values.npy, offsets.npy, queries.npy)")
    ap.add_argument("--index", help="index folder")
    ap.add_argument("--out", help="JSON result file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--kmeans-niters", type=int, default=4)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--configs", default="1,0.5,256",
                    help="ncells,centroid_score_threshold,ndocs;... (default: PLAID's k<=10 defaults)")
    args = ap.parse_args(argv)
    import torch

    if args.phase == "warmup":
        _setup(args.threads)
        print(f"[plaid] extensions ready in {_load_extensions():.1f}s")
        return 0
    res = build(args) if args.phase == "build" else search(args)
    import colbert

    res.update({"threads": args.threads, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "colbert_version": getattr(colbert, "__version__", "0.2.22"), "python": platform.python_version(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    Path(args.out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
