"""Exact MaxSim of queries against documents given as float embeddings (no index)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import gpu, kernels
from .inputs import as_document, as_queries, query_parts, ragged_queries, to_numpy


def maxsim(query: Any, documents: Any, *, device: Any = None) -> np.ndarray:
    """Exact late-interaction scores: sum over query tokens of the best dot product with a document token.

    Parameters
    ----------
    query : float (q_tokens, d) or (nq, q_tokens, d), numpy or torch, or a list of (q_tokens, d) matrices of
        different lengths
    documents : sequence of float (n_tokens_i, d) arrays, or one float (n_docs, n_tokens, d) array
    device : None/"cpu" (native CPU kernel) or "cuda"/"cuda:N" (the GPU twin; equal to float rounding)

    Returns
    -------
    float32 (n_docs,) for one query, (nq, n_docs) for several.
    """
    dev = gpu.resolve_device(device)
    mats = ragged_queries(query)  # queries of different lengths: scored length by length below
    q0 = mats[0] if mats is not None else to_numpy(query)
    dim = q0.shape[-1] if q0.ndim in (2, 3) else -1
    q, single = as_queries(q0, dim) if mats is None else (None, False)
    docs = list(documents) if not hasattr(documents, "ndim") else list(to_numpy(documents))
    if not docs:
        raise ValueError("documents: empty; pass at least one document")
    arrays = [as_document(doc, dim, f"documents[{i}]") for i, doc in enumerate(docs)]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
    values = np.ascontiguousarray(np.concatenate(arrays, axis=0))

    def score(qs: np.ndarray) -> np.ndarray:
        if dev is not None:
            return gpu.module().maxsim(qs, values, offsets, device=dev)
        return kernels.maxsim(qs, values, offsets)

    if mats is not None:
        out = np.zeros((len(mats), len(arrays)), np.float32)
        for rows, qs, _ in query_parts(mats, None, dim):
            out[rows] = score(as_queries(qs, dim)[0])
        return out
    scores = score(q)
    return scores[0] if single else scores
