"""Jina-API reranking with any late-interaction model: documents ordered by MaxSim with a query."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

from ..engine.inputs import check_k
from .checks import check_texts
from .model import RAGPretrainedModel, top_indices


def rerank(model: Any, query: str, documents: Sequence[Union[str, dict[str, str]]], top_n: Optional[int] = None,
           return_documents: bool = True) -> list[dict[str, Any]]:
    """Jina-API reranking: ``[{"index", "relevance_score", "document": {"text"}}]``, best first.

    Parameters
    ----------
    model : a :class:`plaidx.ColBERT`, a :class:`RAGPretrainedModel`, or a checkpoint name/path (None:
        the bundled default model).
    query : the query text.
    documents : texts, or ``{"text": ...}`` objects as the Jina API accepts.
    top_n : how many results (default all).
    return_documents : include ``"document": {"text": ...}`` in each result.
    """
    if isinstance(model, RAGPretrainedModel):
        rag = model
    elif hasattr(model, "encode_queries") and hasattr(model, "encode_documents"):
        rag = RAGPretrainedModel(model, verbose=0)
    elif model is None or isinstance(model, (str, os.PathLike)):
        rag = RAGPretrainedModel.from_pretrained(model, verbose=0)
    else:
        raise TypeError(f"model must be a plaidx.ColBERT, a RAGPretrainedModel or a checkpoint name, got "
                        f"{type(model).__name__}")
    if isinstance(query, dict):
        query = query.get("text")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty string")
    if isinstance(documents, (str, dict)) or documents is None or not hasattr(documents, "__iter__"):
        raise TypeError(f"documents must be a list of texts or {{\"text\": ...}} objects, got "
                        f"{'a single ' if isinstance(documents, (str, dict)) else ''}{type(documents).__name__}"
                        f"{'; wrap it in a list' if isinstance(documents, (str, dict)) else ''}")
    texts = []
    for i, d in enumerate(documents):
        if isinstance(d, dict) and "text" not in d:
            raise ValueError(f"documents[{i}] is an object without a \"text\" field (it has {sorted(d)[:5]})")
        texts.append(d["text"] if isinstance(d, dict) else d)
    texts = check_texts(texts, "documents")
    if top_n is not None:
        top_n = check_k(top_n)
    scores = rag.score([query], texts, "auto")[0]
    out = []
    for i in top_indices(scores, top_n or len(texts)):
        item: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
        if return_documents:
            item["document"] = {"text": texts[i]}
        out.append(item)
    return out
