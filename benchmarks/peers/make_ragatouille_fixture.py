"""Regenerate tests/fixtures/ragatouille/: a small index made by RAGatouille 0.0.9.post2 itself, with its answers.

Two steps (the checkpoint is ~90 MB, so it is made, never committed):

    .venv/bin/python benchmarks/peers/make_stanford_checkpoint.py /tmp/minilm-colbert --seed 0
    bash benchmarks/peers/setup_ragatouille.sh
    .bench-venv-ragatouille/bin/python benchmarks/peers/make_ragatouille_fixture.py \
        --checkpoint /tmp/minilm-colbert [--out tests/fixtures/ragatouille]

What it writes under ``--out``:

- ``colbert/indexes/scifact_mini/``: RAGatouille's folder as it left it (colbert-ai 0.2.22 PLAID files,
  ``collection.json``, ``pid_docid_map.json``, ``docid_metadata_map.json``) for 48 short SciFact passages
  (title plus the first words of the abstract) with string ids and a metadata dict per document, indexed
  with ``split_documents=False``. RAGatouille chooses nbits 4 for it (under 10,000 passages).
- ``answers.json``: the queries, k and RAGatouille's result dicts for them, from a model reopened with
  ``RAGPretrainedModel.from_index`` (its search right after ``index()`` ignores ``index_root``), and the
  checkpoint path recorded in the index (tests rewrite it to their own copy).
- ``encoder.npz``: colbert-ai's own query vectors (float32, (n_queries, 32, dim)) and document vectors
  (float32, flattened, with ``doc_lens`` and the passage ids ``doc_pids``) from that checkpoint, so the test
  suite can check that plaidx's encoder gives the same vectors without colbert-ai installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PLAIDX_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scifact"
INDEX_NAME = "scifact_mini"
QUERY_IDS = ["1", "3", "13"]  # SciFact test queries with a relevant passage among the 48
N_DOCS = 48
WORDS = 45
K = 10
ENCODED_DOCS = 4


def load_scifact() -> tuple[list[dict], dict[str, str], dict[str, list[str]]]:
    corpus = [json.loads(line) for line in open(DATA / "corpus.jsonl", encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(DATA / "queries.jsonl", encoding="utf-8"))}
    qrels: dict[str, list[str]] = {}
    for line in open(DATA / "qrels" / "test.tsv", encoding="utf-8").read().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, []).append(did)
    return corpus, queries, qrels


def passages() -> tuple[list[str], list[str], list[dict], list[str]]:
    """(texts, document ids, metadatas, queries): the relevant passages of QUERY_IDS plus the first others."""
    corpus, queries, qrels = load_scifact()
    by_id = {d["_id"]: d for d in corpus}
    wanted = [did for q in QUERY_IDS for did in qrels[q] if did in by_id]
    for d in corpus:
        if len(wanted) >= N_DOCS:
            break
        if d["_id"] not in wanted:
            wanted.append(d["_id"])
    texts, metas = [], []
    for i, did in enumerate(wanted):
        d = by_id[did]
        body = " ".join(d["text"].split()[:WORDS])
        texts.append(f"{d['title']} {body}")
        metas.append({"source": "scifact", "title": d["title"][:60], "position": i})
    return texts, wanted, metas, [queries[q] for q in QUERY_IDS]


def encoder_vectors(checkpoint: str, queries: list[str], docs: list[str], doc_maxlen: int) -> dict[str, np.ndarray]:
    """colbert-ai's own vectors for queries and documents from the checkpoint."""
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint

    config = ColBERTConfig.from_existing(ColBERTConfig.load_from_checkpoint(checkpoint),
                                         ColBERTConfig(doc_maxlen=doc_maxlen, query_maxlen=32))
    ckpt = Checkpoint(checkpoint, colbert_config=config)
    with torch.inference_mode():
        Q = ckpt.queryFromText(queries).float().numpy()
        D, lens = ckpt.docFromText(docs, bsize=32, keep_dims="flatten")
    return {"queries": Q.astype(np.float32), "docs": D.float().numpy().astype(np.float32),
            "doc_lens": np.asarray(lens, dtype=np.int64)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="folder written by make_stanford_checkpoint.py")
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "ragatouille"))
    args = ap.parse_args()
    ckpt = str(Path(args.checkpoint).resolve())
    out = Path(args.out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".bench-venv-ragatouille" / "torch_extensions"))
    random.seed(0)
    np.random.seed(0)
    import torch

    torch.manual_seed(0)
    from ragatouille import RAGPretrainedModel

    texts, ids, metas, queries = passages()
    with tempfile.TemporaryDirectory() as tmp:
        rag = RAGPretrainedModel.from_pretrained(ckpt, index_root=tmp, verbose=0)  # n_gpu=-1: one CPU rank here
        path = Path(rag.index(collection=texts, document_ids=ids, document_metadatas=metas, index_name=INDEX_NAME,
                              max_document_length=256, split_documents=False))
        reopened = RAGPretrainedModel.from_index(path, verbose=0)
        answers = [reopened.search(q, k=K) for q in queries]
        for row in answers:
            for r in row:
                r["score"] = float(r["score"])
                r["passage_id"] = int(r["passage_id"])
        dst = out / "colbert" / "indexes" / INDEX_NAME
        if dst.exists():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(path, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    doc_maxlen = int(meta["config"]["doc_maxlen"])
    enc = encoder_vectors(ckpt, queries, texts[:ENCODED_DOCS], doc_maxlen)
    np.savez_compressed(out / "encoder.npz", queries=enc["queries"], docs=enc["docs"], doc_lens=enc["doc_lens"],
                        doc_pids=np.arange(ENCODED_DOCS, dtype=np.int64))
    (out / "answers.json").write_text(json.dumps({
        "made_by": {"ragatouille": "0.0.9.post2", "colbert-ai": "0.2.22", "torch": torch.__version__,
                    "python": sys.version.split()[0]},
        "checkpoint": ckpt, "index_name": INDEX_NAME, "k": K, "queries": queries, "answers": answers,
    }, indent=1, ensure_ascii=False), encoding="utf-8")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
