"""Token pooling: a document's token vectors merged by Ward clustering into ceil(n / pool_factor) unit means."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import require


def check_pool_factor(value: Any) -> int:
    """``value`` as an int >= 1, or a ValueError saying what to pass (1 keeps every token)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"pool_factor must be a whole number >= 1 (1 keeps every token; 2 keeps about half, "
                         f"as in PyLate and ColBERT's token pooling), got {value!r}")
    return int(value)


def pool_tokens(tokens: np.ndarray, pool_factor: int) -> np.ndarray:
    """Merge one document's token vectors into ``ceil(n / pool_factor)`` vectors.

    Ward's hierarchical clustering (scipy) groups the tokens; each group becomes the mean of its tokens,
    scaled back to unit length. Groups come out in the order of their first token, and the result
    depends only on the input (no randomness). ``pool_factor`` 1 returns ``tokens`` unchanged.

    Parameters
    ----------
    tokens : float32 (n, d), L2-normalised rows (as ``encode_documents`` returns them).
    pool_factor : int >= 1

    Returns
    -------
    float32 (ceil(n / pool_factor), d), L2-normalised rows.
    """
    pool_factor = check_pool_factor(pool_factor)
    x = np.asarray(tokens, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"tokens: expected shape (n_tokens, d), got {x.shape}")
    n = x.shape[0]
    target = math.ceil(n / pool_factor)
    if pool_factor == 1 or n <= 1 or target >= n:
        return x
    hierarchy = require("scipy.cluster.hierarchy", "text", "token pooling (pool_factor > 1)")
    links = hierarchy.linkage(x.astype(np.float64), method="ward")
    labels = hierarchy.fcluster(links, t=target, criterion="maxclust")
    # number the groups by their first token, so the output follows the text
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    group = rank[inverse]
    sums = np.zeros((order.size, x.shape[1]), dtype=np.float64)
    np.add.at(sums, group, x)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def pool_documents(documents: list[np.ndarray], pool_factor: int) -> list[np.ndarray]:
    """:func:`pool_tokens` of every document (the list itself when ``pool_factor`` is 1)."""
    pool_factor = check_pool_factor(pool_factor)
    if pool_factor == 1:
        return documents
    return [pool_tokens(d, pool_factor) for d in documents]


__all__ = ["check_pool_factor", "pool_documents", "pool_tokens"]
