"""The README's first command: index the bundled sample with the default model, then search it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=".plaidx/demo-index", help="where to write the demo index")
    parser.add_argument("--queries", type=int, default=3, help="example queries to print")
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args(argv)

    import plaidx
    from plaidx.rag.sample import doc_text, load_beir

    info = plaidx.build_info()
    print(f"plaidx {plaidx.__version__} | kernels: {info['backend']} | openmp: {info.get('openmp')}")
    corpus, queries, qrels = load_beir()
    doc_ids = list(corpus)
    texts = [doc_text(corpus[d]) for d in doc_ids]

    t0 = time.perf_counter()
    model = plaidx.ColBERT.from_pretrained()
    print(f"model: {model.name_or_path} (dim {model.dim}, query length {model.query_length}, "
          f"document length {model.document_length}) loaded in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    doc_emb = model.encode_documents(texts)
    n_tok = sum(len(e) for e in doc_emb)
    print(f"encoded {len(texts)} documents ({n_tok} tokens) in {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    index = plaidx.Index.build(Path(args.index), doc_emb, nbits=2, overwrite=True,
                               metadata={"model": model.config_dict(), "doc_ids": None})
    print(f"built {index} in {time.perf_counter() - t0:.2f}s "
          f"({index.info()['bytes_per_token']:.1f} bytes/token on disk)")

    qids = [q for q in queries if q in qrels]
    q_emb = model.encode_queries([queries[q] for q in qids])
    t0 = time.perf_counter()
    scores, ids = index.search(q_emb, k=10)
    dt = time.perf_counter() - t0
    print(f"searched {len(qids)} queries in {dt * 1000:.1f} ms\n")

    hits = 0
    for row, qid in enumerate(qids):
        found = [doc_ids[i] for i in ids[row] if i >= 0]
        hits += any(d in qrels[qid] for d in found)
        if row < args.queries:
            print(f"Q: {queries[qid]}")
            for rank in range(args.k):
                i = int(ids[row, rank])
                if i < 0:
                    break
                mark = "*" if doc_ids[i] in qrels[qid] else " "
                title = corpus[doc_ids[i]]["title"][:90]
                print(f"  {rank + 1}. {mark} {scores[row, rank]:6.2f}  [{doc_ids[i]}] {title}")
            print()
    print(f"* = judged relevant. Queries with a relevant document in the top 10: {hits}/{len(qids)} "
          f"({100.0 * hits / max(1, len(qids)):.0f}%)")
    return 0 if np.isfinite(scores[:, 0]).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
