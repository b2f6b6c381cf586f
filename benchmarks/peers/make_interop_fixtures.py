"""Regenerate tests/fixtures/interop/: small real colbert-ai 0.2.22 (and fast-plaid) indexes with the peer's answers.

Run inside the peer environments made by setup_peers.sh (each phase imports only its own peer)::

    .bench-venv-plaid/bin/python benchmarks/peers/make_interop_fixtures.py colbert
    .bench-venv-fastplaid/bin/python benchmarks/peers/make_interop_fixtures.py fastplaid

Each fixture folder holds ``index/`` (the peer's index exactly as it wrote it) and ``peer.npz``:
``queries`` float32 (nq, 32, d), ``doclens`` int64 (n_passages,) (0 = removed), ``vectors`` float16
(n_tokens, d): the peer's own decompression of every stored token in storage order, ``top_ids`` int64 and
``top_scores`` float32 (nq, 10): the peer's own search at its defaults for k=10. The embeddings are
synthetic (seeded topic clusters), so no model is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "interop"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# name: (dim, nbits, n_docs, pids removed with colbert-ai's IndexUpdater)
COLBERT = {"colbert_d128_b2": (128, 2, 64, [5, 63]), "colbert_d96_b4": (96, 4, 56, [])}
FASTPLAID = {"fastplaid_d96_b2": (96, 2, 56), "fastplaid_d128_b4": (128, 4, 48)}
# more documents than fast-plaid's start_from_scratch (999), so that an update leaves them pending in buffer.npy
FASTPLAID_BUFFER = ("fastplaid_buffer_d96_b2", 96, 2, 1001, 5)
CHECKPOINT = "fixture/synthetic-no-model"


def synthetic(dim: int, n_docs: int, seed: int, nq: int = 6) -> tuple[list[np.ndarray], np.ndarray]:
    """Documents of 8..32 unit tokens around one of 24 topics, and queries of 32 tokens drawn near a document."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((24, 6, dim)).astype(np.float32)
    docs = []
    for _ in range(n_docs):
        t = topics[rng.integers(24)]
        n = int(rng.integers(8, 33))
        x = t[rng.integers(6, size=n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
        docs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    queries = np.empty((nq, 32, dim), np.float32)
    for i in range(nq):
        d = docs[int(rng.integers(n_docs))]
        q = d[rng.integers(d.shape[0], size=32)] + 0.5 * rng.standard_normal((32, dim)).astype(np.float32)
        queries[i] = q / np.linalg.norm(q, axis=1, keepdims=True)
    return docs, queries


def colbert_fixture(name: str, dim: int, nbits: int, n_docs: int, remove: list[int]) -> None:
    import torch
    from colbert.data.collection import Collection
    from colbert.index_updater import IndexUpdater
    from colbert.indexing.codecs.residual import ResidualCodec
    from colbert.indexing.codecs.residual_embeddings import ResidualEmbeddings
    from colbert.indexing.index_saver import IndexSaver
    from colbert.infra import ColBERTConfig, Run, RunConfig
    from colbert.search.index_storage import IndexScorer
    from run_plaid import _indexer_class, _load_extensions, _StoredEncoder

    torch.set_num_threads(2)
    _load_extensions()
    docs, queries = synthetic(dim, n_docs, seed=dim * 10 + nbits)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    index = dest / "index"
    index.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        coll = Path(tmp)
        offsets = np.concatenate([[0], np.cumsum([d.shape[0] for d in docs])]).astype(np.int64)
        np.save(coll / "values.npy", np.concatenate(docs))
        np.save(coll / "offsets.npy", offsets)
        with Run().context(RunConfig(nranks=1, rank=0, experiment="fixtures", root=str(dest))):
            config = ColBERTConfig(nbits=nbits, dim=dim, kmeans_niters=4, index_path=str(index), checkpoint=CHECKPOINT,
                                   doc_maxlen=int(np.diff(offsets).max()), nranks=1, rank=0, gpus=0)
            Indexer = _indexer_class()
            ci = Indexer.__new__(Indexer)  # CollectionIndexer.__init__ would load a checkpoint
            ci.verbose, ci.config, ci.rank, ci.nranks, ci.use_gpu = 1, config, 0, 1, False
            ci.collection = Collection(data=[str(i) for i in range(n_docs)])
            ci.encoder = _StoredEncoder(coll, offsets)
            ci.saver = IndexSaver(config)
            with torch.inference_mode():
                for stage in ("setup", "train", "index", "finalize"):
                    getattr(ci, stage)([[None]]) if stage == "train" else getattr(ci, stage)()
    shutil.rmtree(dest / "fixtures", ignore_errors=True)  # Run() logs
    if remove:  # the updater only needs a searcher's index path and ranker
        searcher = types.SimpleNamespace(index=str(index), ranker=IndexScorer(str(index), use_gpu=False))
        updater = IndexUpdater(ColBERTConfig(gpus=0), searcher)
        updater.remove(remove)
        updater.persist_to_disk()
    meta = json.loads((index / "metadata.json").read_text())
    doclens = np.concatenate([json.loads((index / f"doclens.{i}.json").read_text())
                              for i in range(meta["num_chunks"])]).astype(np.int64)
    codec = ResidualCodec.load(str(index))
    vecs = []
    for i in range(meta["num_chunks"]):
        emb = ResidualEmbeddings.load(str(index), i)
        vecs.append(codec.decompress(emb).float().numpy())
    vectors = np.concatenate(vecs)
    assert vectors.shape[0] == doclens.sum(), (vectors.shape, doclens.sum())
    scorer = IndexScorer(str(index), use_gpu=False)
    search_cfg = ColBERTConfig(query_maxlen=32, dim=dim, gpus=0, ncells=1, centroid_score_threshold=0.5, ndocs=256)
    top_ids = np.full((len(queries), 10), -1, np.int64)
    top_scores = np.full((len(queries), 10), np.nan, np.float32)
    for i, q in enumerate(queries):
        pids, scores = scorer.rank(search_cfg, torch.from_numpy(q[None]))
        n = min(10, len(pids))
        top_ids[i, :n], top_scores[i, :n] = pids[:n], scores[:n]
    np.savez_compressed(dest / "peer.npz", queries=queries, doclens=doclens, vectors=vectors.astype(np.float16),
                        top_ids=top_ids, top_scores=top_scores, removed=np.asarray(remove, np.int64))
    for junk in ("plan.json",):  # not read by anyone; keeps the fixture small
        (index / junk).unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{name}: {len(doclens)} passages, {int(doclens.sum())} tokens, {codec.centroids.shape[0]} centroids, "
          f"{size / 1e3:.0f} kB", flush=True)


def fastplaid_fixture(name: str, dim: int, nbits: int, n_docs: int) -> None:
    import torch
    from fast_plaid import search as fp_search

    torch.manual_seed(0)
    docs, queries = synthetic(dim, n_docs, seed=dim * 10 + nbits + 1)
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    index = dest / "index"
    fp = fp_search.FastPlaid(index=str(index), device="cpu")
    fp.create(documents_embeddings=[torch.from_numpy(d) for d in docs], nbits=nbits, kmeans_niters=4, seed=0)
    top = fp.search(queries_embeddings=torch.from_numpy(queries), top_k=10)
    top_ids = np.full((len(queries), 10), -1, np.int64)
    top_scores = np.full((len(queries), 10), np.nan, np.float32)
    for i, row in enumerate(top):
        for j, (pid, score) in enumerate(row[:10]):
            top_ids[i, j], top_scores[i, j] = pid, score
    doclens = np.array([d.shape[0] for d in docs], np.int64)
    np.savez_compressed(dest / "peer.npz", queries=queries, doclens=doclens, top_ids=top_ids, top_scores=top_scores)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{name}: {n_docs} documents, {int(doclens.sum())} tokens, {size / 1e3:.0f} kB: "
          f"{sorted(p.name for p in index.rglob('*') if p.is_file())}", flush=True)


def fastplaid_buffer_fixture(name: str, dim: int, nbits: int, n_docs: int, n_pending: int) -> None:
    """Short documents (2-3 tokens), then an update of a few more that fast-plaid keeps pending in buffer.npy."""
    import torch
    from fast_plaid import search as fp_search

    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    docs, queries = synthetic(dim, n_docs + n_pending, seed=dim + nbits + 2)
    docs = [d[: int(rng.integers(2, 4))] for d in docs]
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    index = dest / "index"
    fp = fp_search.FastPlaid(index=str(index), device="cpu")
    fp.create(documents_embeddings=[torch.from_numpy(d) for d in docs[:n_docs]], nbits=nbits, kmeans_niters=4, seed=0)
    fp.update(documents_embeddings=[torch.from_numpy(d) for d in docs[n_docs:]])
    assert (index / "buffer.npy").is_file(), sorted(p.name for p in index.iterdir())
    top = fp.search(queries_embeddings=torch.from_numpy(queries), top_k=10)
    top_ids = np.full((len(queries), 10), -1, np.int64)
    top_scores = np.full((len(queries), 10), np.nan, np.float32)
    for i, row in enumerate(top):
        for j, (pid, score) in enumerate(row[:10]):
            top_ids[i, j], top_scores[i, j] = pid, score
    doclens = np.array([d.shape[0] for d in docs], np.int64)
    np.savez_compressed(dest / "peer.npz", queries=queries, doclens=doclens, top_ids=top_ids, top_scores=top_scores,
                        pending=np.concatenate(docs[n_docs:]).astype(np.float32), n_pending=n_pending)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{name}: {len(docs)} documents ({n_pending} pending), {int(doclens.sum())} tokens, {size / 1e3:.0f} kB: "
          f"{sorted(p.name for p in index.rglob('*') if p.is_file())}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer", choices=["colbert", "fastplaid"])
    ap.add_argument("--only-buffer", action="store_true", help="fast-plaid: only the pending-buffer fixture")
    args = ap.parse_args(argv)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / "benchmarks" / "results" / "cache" / "torch_ext_plaid"))
    if args.peer == "colbert":
        for name, spec in COLBERT.items():
            colbert_fixture(name, *spec)
    else:
        if not args.only_buffer:
            for name, spec in FASTPLAID.items():
                fastplaid_fixture(name, *spec)
        fastplaid_buffer_fixture(*FASTPLAID_BUFFER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
