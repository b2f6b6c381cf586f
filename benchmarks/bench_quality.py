"""Retrieval quality of RAGPretrainedModel.search vs exhaustive MaxSim vs BM25 on BEIR-layout collections.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_quality.py [--datasets cranfield cisi scifact]
        [--model NAME_OR_PATH] [--k 20] [--threads 2]

For each collection (``/work/shared/data/<name>``, or ``$PLAIDX_DATA``): documents (title + text) are
split into passages by ``RAGPretrainedModel``'s own path (default splitter, max_document_length 256) and
encoded with the model (default: the bundled all-MiniLM-L6-v2); the passage embeddings are cached under
``benchmarks/results/cache/quality_<dataset>_<key>/`` (float16, resumable), so reruns skip the slow part
(``--index-root`` keeps the built indexes too).
The index is then built from them exactly as ``RAG.index`` builds it, and the judged test queries are run:

- ``rag_search``: ``RAG.search(queries, k=K)`` with its defaults (PLAID at these sizes);
- ``rag_search_fast``: the same with ``force_fast=True``;
- ``exhaustive``: exact MaxSim over every passage of the same index (``Index.search(exact=True)``), the queries
  read as ``RAG.search`` reads them (long ones whole, ``plaidx.rag.queries``);
- ``exhaustive_queries_cut``: ``exhaustive`` with every query cut at the model's ``query_length`` (as Stanford
  ColBERT reads queries, and plaidx did before ``plaidx.rag.queries``);
- ``exhaustive_float``: exact MaxSim over the uncompressed (float16-cached) passage embeddings;
- ``bm25``: bm25s over the documents (English stopwords; Snowball stemming when PyStemmer is installed:
  ``pip install PyStemmer``, as for the committed figures).

Passage results become document results by keeping each document's first (best) passage; nDCG@10 is
computed with ranx on the test qrels. Writes ``benchmarks/results/quality.json`` and ``quality.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo's plaidx, even when not installed

DATA_ROOT = Path(os.environ.get("PLAIDX_DATA", "/work/shared/data"))
RESULTS = HERE / "results"
CACHE = Path(os.environ.get("PLAIDX_BENCH_CACHE", RESULTS / "cache"))
PART = 256  # passages per cached part
MAX_DOCUMENT_LENGTH = 256  # RAGatouille's default


def load_beir(name: str, split: str = "test"):
    root = DATA_ROOT / name
    doc_ids, texts = [], []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            title, text = (r.get("title") or "").strip(), (r.get("text") or "").strip()
            body = text if (not title or text.startswith(title)) else f"{title} {text}"
            if body.strip():
                doc_ids.append(str(r["_id"]))
                texts.append(body)
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    q_ids, q_texts = [], []
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if str(r["_id"]) in qrels and r["text"].strip():
                q_ids.append(str(r["_id"]))
                q_texts.append(r["text"])
    return doc_ids, texts, q_ids, q_texts, {q: qrels[q] for q in q_ids}


def cached_embeddings(folder: Path, enc, passages: list[str], bsize: int) -> list[np.ndarray]:
    """Passage embeddings, encoded part by part into ``folder`` (resumable), returned float16."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray] = []
    n_parts = -(-len(passages) // PART)
    t0, done_now = time.time(), 0
    for p in range(n_parts):
        f = folder / f"part-{p:05d}.npz"
        chunk = passages[p * PART:(p + 1) * PART]
        if not f.exists():
            embs = enc.encode_documents(chunk, bsize=bsize, show_progress_bar=False)
            lengths = np.array([e.shape[0] for e in embs], dtype=np.int64)
            tmp = folder / f".part-{p:05d}.tmp.npz"
            np.savez(tmp, values=np.concatenate(embs).astype(np.float16), lengths=lengths)
            os.replace(tmp, f)
            done_now += len(chunk)
            rate = done_now / max(time.time() - t0, 1e-9)
            print(f"  encoded {min((p + 1) * PART, len(passages))}/{len(passages)} passages ({rate:.1f}/s)",
                  flush=True)
        with np.load(f) as z:
            values, lengths = z["values"], z["lengths"]
        if lengths.size != len(chunk):
            raise RuntimeError(f"{f}: cached part holds {lengths.size} passages, expected {len(chunk)}; delete it")
        out.extend(np.split(values, np.cumsum(lengths)[:-1]))
    return out


def doc_run(ranked_pids, pid_doc: dict[int, str], scores, n: int = 10) -> dict[str, float]:
    """{doc_id: score} of the first n distinct documents of a ranked passage list."""
    run: dict[str, float] = {}
    for pid, s in zip(ranked_pids, scores):
        if pid < 0:
            break
        d = pid_doc[int(pid)]
        if d not in run:
            run[d] = float(s)
            if len(run) == n:
                break
    return run


def ndcg10(qrels, runs) -> float:
    from ranx import Qrels, Run, evaluate

    runs = {q: (r if r else {"__none__": 0.0}) for q, r in runs.items()}
    return float(evaluate(Qrels(qrels), Run(runs), "ndcg@10"))


def bm25_runs(doc_ids, texts, q_ids, q_texts) -> tuple[dict, str]:
    import bm25s

    try:
        import Stemmer

        stemmer, stem_name = Stemmer.Stemmer("english"), "snowball english (PyStemmer)"
    except ImportError:
        stemmer, stem_name = None, "none (PyStemmer not installed)"
    corpus_tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    q_tokens = bm25s.tokenize(q_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    idx, scores = retriever.retrieve(q_tokens, k=min(100, len(texts)), show_progress=False)
    runs = {q: {doc_ids[int(i)]: float(s) for i, s in zip(ir, sr) if s > 0} for q, ir, sr in zip(q_ids, idx, scores)}
    return runs, f"bm25s {bm25s.__version__}, stopwords en, stemmer {stem_name}"


def float_exhaustive(Q: np.ndarray, embs: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    from plaidx.engine.scoring import maxsim

    parts = []
    for lo in range(0, len(embs), 2048):
        parts.append(np.atleast_2d(maxsim(Q, [e.astype(np.float32) for e in embs[lo:lo + 2048]])))
    S = np.concatenate(parts, axis=1)
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, axis=1), order


def run_dataset(name: str, args, rag) -> dict:
    from plaidx.rag import splitter

    print(f"[{name}] loading", flush=True)
    doc_ids, texts, q_ids, q_texts, qrels = load_beir(name)
    enc, documents, passages = rag._prepare(texts, doc_ids, None, MAX_DOCUMENT_LENGTH, True,
                                            splitter.split_documents, None)
    contents = [c for _, c in passages]
    key = hashlib.sha1(json.dumps([enc.config_dict(), contents], sort_keys=True).encode()).hexdigest()[:12]
    folder = CACHE / f"quality_{name}_{key}"
    print(f"[{name}] {len(texts)} documents -> {len(passages)} passages; cache {folder}", flush=True)
    t = time.time()
    embs = cached_embeddings(folder, enc, contents, args.bsize)
    encode_s = time.time() - t
    n_tokens = int(sum(e.shape[0] for e in embs))

    cfg_file = Path(rag.index_root) / name / "plaidx_rag.json"
    if args.index_root and cfg_file.exists() and \
            json.loads(cfg_file.read_text())["passages"].get("bench_cache_key") == key:
        rag._open(name)  # built by an earlier run from the same passages and embeddings
        build_s = json.loads(cfg_file.read_text())["passages"].get("bench_build_s")
    else:
        t = time.time()
        rag._write_index(name, enc, documents, passages, embs, passages_config={"bench_cache_key": key})
        build_s = round(time.time() - t, 1)
        cfg = json.loads(cfg_file.read_text())
        cfg["passages"]["bench_build_s"] = build_s
        cfg_file.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    h = rag._handle(name)
    pid_doc = {int(p): d for p, (d, _c, _m) in h.store.lookup(h.engine.ids.tolist()).items()}
    K = args.k
    out = {"dataset": name, "documents": len(texts), "passages": len(passages), "tokens": n_tokens,
           "queries": len(q_ids), "nbits": h.engine.nbits, "nlist": h.engine.nlist, "k_passages": K,
           "encode_s_this_run": round(encode_s, 1), "build_s": build_s, "ndcg@10": {}, "ms_per_query": {}}

    def from_rag(results) -> dict:
        return {q: doc_run([r["passage_id"] for r in res], pid_doc, [r["score"] for r in res])
                for q, res in zip(q_ids, results)}

    for label, k, kwargs in (("rag_search", K, {}), ("rag_search_fast", K, {"force_fast": True}),
                             ("rag_search_k10", 10, {})):
        rag.search(q_texts[:2], index_name=name, k=k, **kwargs)  # warm-up
        t = time.time()
        results = rag.search(q_texts, index_name=name, k=k, **kwargs)
        out["ms_per_query"][label] = round((time.time() - t) * 1000 / len(q_ids), 2)
        out["ndcg@10"][label] = ndcg10(qrels, from_rag(results))

    from plaidx.rag.queries import encode_queries

    Q = encode_queries(rag.model, q_texts)  # as RAG.search reads them
    cut = rag.model.encode_queries(q_texts)  # each cut at the model's query_length (Stanford ColBERT's reading)
    out["queries_over_query_length"] = int(sum(n > rag.model.query_length for n in rag.model.count_tokens(
        q_texts, add_special_tokens=True)))
    for label, k, q in (("exhaustive", K, Q), ("exhaustive_k10", 10, Q), ("exhaustive_queries_cut", K, cut)):
        t = time.time()
        scores, pids = h.engine.search(q, k, exact=True)
        out["ms_per_query"][label] = round((time.time() - t) * 1000 / len(q_ids), 2)
        out["ndcg@10"][label] = ndcg10(qrels, {q: doc_run(p, pid_doc, s) for q, p, s in zip(q_ids, pids, scores)})
    if not args.skip_float:
        t = time.time()
        scores, order = float_exhaustive(Q, embs, K)
        out["ms_per_query"]["exhaustive_float"] = round((time.time() - t) * 1000 / len(q_ids), 2)
        ids = h.engine.ids  # passage i of the build is engine id ids[i]
        out["ndcg@10"]["exhaustive_float"] = ndcg10(
            qrels, {q: doc_run(ids[o], pid_doc, s) for q, o, s in zip(q_ids, order, scores)})
    runs, how = bm25_runs(doc_ids, texts, q_ids, q_texts)
    out["ndcg@10"]["bm25"] = ndcg10(qrels, runs)
    out["bm25"] = how
    out["ndcg@10"] = {k: round(v, 4) for k, v in out["ndcg@10"].items()}
    out["rag_minus_exhaustive"] = round(out["ndcg@10"]["rag_search"] - out["ndcg@10"]["exhaustive"], 4)
    out["rag_minus_exhaustive_k10"] = round(out["ndcg@10"]["rag_search_k10"] - out["ndcg@10"]["exhaustive_k10"], 4)
    print(f"[{name}] {json.dumps(out)}", flush=True)
    return out


def write_report(results: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    cols = ["rag_search", "rag_search_fast", "exhaustive", "exhaustive_queries_cut", "exhaustive_float",
            "rag_search_k10", "exhaustive_k10", "bm25"]
    lines = [
        "# Retrieval quality: RAG.search vs exhaustive MaxSim vs BM25",
        "",
        f"Written by `benchmarks/bench_quality.py` on {meta['date']} at commit {meta.get('commit', '?')} "
        f"({meta.get('cpu') or meta['machine']}; {meta['threads']} threads; backend {meta['backend']}). Command: "
        f"`{meta.get('command', '.venv/bin/python benchmarks/bench_quality.py')}`. Model: `{meta['model']}`; "
        "passages of at most "
        f"{MAX_DOCUMENT_LENGTH} tokens (RAGatouille's default max_document_length) from the default splitter; "
        f"index built as `RAG.index` builds it. Test-split queries with judgements; nDCG@10 by ranx over "
        "documents (a document's best passage counts).",
        "",
        "| dataset | docs | passages | tokens | nbits | nlist | queries (over query_length) | " + " | ".join(cols)
        + " | RAG - exhaustive (k, k=10) |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cols) + "---:|",
    ]
    for r in results:
        vals = [f"{r['ndcg@10'][c]:.4f}" if c in r["ndcg@10"] else "" for c in cols]
        lines.append(f"| {r['dataset']} | {r['documents']} | {r['passages']} | {r['tokens']} | {r['nbits']} | "
                     f"{r['nlist']} | {r['queries']} ({r.get('queries_over_query_length', '-')}) | " + " | ".join(vals)
                     + f" | {r['rag_minus_exhaustive']:+.4f}, {r['rag_minus_exhaustive_k10']:+.4f} |")
    lines += ["", "Milliseconds per query (batched over all queries, encoding included for RAG.search; "
              "timings on a shared 2-core machine, indicative only):", "",
              "| dataset | " + " | ".join(c for c in cols if c != "bm25") + " |",
              "|---|" + "---:|" * (len(cols) - 1)]
    for r in results:
        lines.append(f"| {r['dataset']} | " + " | ".join(str(r["ms_per_query"].get(c, "")) for c in cols
                                                      if c != "bm25") + " |")
    lines += ["", "Columns:", "",
              f"- `rag_search`: `RAG.search(queries, k={meta['k_passages']})` with its defaults (PLAID at these "
              "sizes); passages are folded into documents by their best passage.",
              "- `rag_search_fast`: the same with `force_fast=True`.",
              "- `rag_search_k10`, `exhaustive_k10`: the same searches with k=10 passages (RAG.search's default "
              "k and its search parameters for k <= 10); documents split into several passages leave fewer "
              "than 10 distinct documents, for both alike.",
              "- `exhaustive`: exact MaxSim over every passage of the same compressed index "
              "(`Index.search(exact=True)`): the reference RAG.search is held to (within 0.005). Queries are read "
              "as RAG.search reads them: a long one whole (`plaidx.rag.queries`).",
              "- `exhaustive_queries_cut`: the same with every query cut at the model's query_length (32), as "
              "Stanford ColBERT reads queries and plaidx did before: what reading long queries whole changes.",
              "- `exhaustive_float`: exact MaxSim over the uncompressed passage embeddings (float16 cache), "
              "i.e. what compression costs.",
              f"- `bm25`: {results[0]['bm25'] if results else ''}.", ""]
    (RESULTS / "quality.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cranfield", "cisi", "scifact"])
    ap.add_argument("--model", default=None, help="checkpoint name or folder (default: bundled all-MiniLM-L6-v2)")
    ap.add_argument("--k", type=int, default=20, help="passages retrieved per query before folding into documents")
    ap.add_argument("--bsize", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-float", action="store_true", help="skip the uncompressed exhaustive baseline")
    ap.add_argument("--index-root", default=None,
                    help="keep the indexes here and reuse them when built from the same cached embeddings "
                         "(default: a temporary folder)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from plaidx import RAGPretrainedModel
    from plaidx.engine import kernels as _kernels

    with tempfile.TemporaryDirectory(dir=CACHE if CACHE.exists() else None) as tmp:
        root = args.index_root or tmp
        rag = RAGPretrainedModel.from_pretrained(args.model, n_gpu=0, verbose=0, index_root=root)
        results = [run_dataset(name, args, rag) for name in args.datasets]
        from bench_engine import git_info, machine_info

        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "commit": git_info().get("commit", "?")[:10], "cpu": machine_info(args.threads).get("cpu"),
                "command": " ".join([".venv/bin/python", "benchmarks/bench_quality.py", *sys.argv[1:]]),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "threads": args.threads, "backend": _kernels.BACKEND_NAME, "model": rag.model.name_or_path,
                "model_config": rag.model.config_dict(), "k_passages": args.k}
    write_report(results, meta)


if __name__ == "__main__":
    main()
