"""A small stored benchmark cache for the tests of the benchmark scripts: an index at runs/run/index and the
collection folder coll it was built from (its queries, and with ``truth`` its exact top ids)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np

import plaidx


def small_stored_cache(tmp_path: Path, monkeypatch, bench: types.ModuleType, *, nbits: int = 2,
                       truth: bool = False, n_docs: int = 60, complete: bool = False) -> Path:
    """Points ``bench.CACHE_DIR`` and the reports of ``bench_engine`` (imported by the caller's sys.path) at
    tmp_path and stores ``n_docs`` random documents there as a built index and their first tokens as 6 queries;
    with ``complete`` the collection folder holds the documents' embeddings too (``collection.is_complete``)."""
    import bench_engine

    monkeypatch.setattr(bench, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(bench_engine, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "results").mkdir()
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(n), 32)).astype(np.float32) for n in rng.integers(8, 20, n_docs)]
    plaidx.Index.build(tmp_path / "runs" / "run" / "index", docs, nbits=nbits, nlist=16, kmeans_niters=2)
    queries = np.stack([d[:4] for d in docs[:6]])
    (tmp_path / "coll").mkdir()
    np.save(tmp_path / "coll" / "queries.npy", queries)
    if complete:
        np.save(tmp_path / "coll" / "values.npy", np.concatenate(docs))
        np.save(tmp_path / "coll" / "offsets.npy", np.cumsum([0] + [len(d) for d in docs]).astype(np.int64))
        (tmp_path / "coll" / "meta.json").write_text(json.dumps({"n_docs": n_docs}))
    if truth:
        scores = np.array([[(q @ d.T).max(axis=1).sum() for d in docs] for q in queries])
        np.savez(tmp_path / "coll" / "gt_top100.npz", ids=np.argsort(-scores, axis=1, kind="stable"))
    return tmp_path
