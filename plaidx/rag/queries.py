"""How query texts are read for a search: as RAGatouille reads them, a long query is not cut at the model's query
length. RAGatouille sets the query length of each search to ``int(words * 1.35)`` (at least the model's
``query_length``, at most its positions); Stanford ColBERT cuts every query at ``query_length`` (32). On 100
Cranfield and CISI queries, a quarter of them over 32 tokens, reading them whole lifts nDCG@10 from 0.305 to
0.321 with the same index (benchmarks/results/ragatouille.md, "Long queries").

Each query is read at its own length, so its results do not depend on the other queries searched with it.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

TOKENS_PER_WORD = 1.35  # RAGatouille's estimate of a query's tokens from its words


def query_length_for(model: Any, text: str) -> int:
    """The length a query is read at: ``int(words * 1.35)``, at least ``model.query_length``, at most the model's
    positions."""
    n = max(int(len(text.split(" ")) * TOKENS_PER_WORD), int(model.query_length))
    limit = getattr(model, "max_length", None)
    return min(n, int(limit)) if limit else n


def encode_queries(model: Any, queries: list[str], bsize: int = 32) -> Union[np.ndarray, list[np.ndarray]]:
    """float32 (nq, L, d) query embeddings, or a list of (L_i, d) ones when the queries' lengths differ (the
    engine searches each as it would be alone). Models other than plaidx's :class:`ColBERT` (PyLate or
    sentence-transformers objects) read queries their own way."""
    from ..encoder import ColBERT  # torch: only once queries are encoded

    if not isinstance(model, ColBERT):
        return model.encode_queries(queries, bsize=bsize, show_progress_bar=False)
    lengths = [query_length_for(model, q) for q in queries]
    if len(set(lengths)) == 1:
        return model.encode_queries(queries, bsize=bsize, show_progress_bar=False, query_length=lengths[0])
    out: list[Any] = [None] * len(queries)
    for n in sorted(set(lengths)):
        idx = [i for i, m in enumerate(lengths) if m == n]
        q = model.encode_queries([queries[i] for i in idx], bsize=bsize, show_progress_bar=False, query_length=n)
        for i, row in zip(idx, q):
            out[i] = row
    return out
