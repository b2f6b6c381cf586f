"""Seeded synthetic multi-vector collections with real cluster structure, for the engine tests."""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered_collection(n_docs: int = 300, dim: int = 64, n_topics: int = 48, mean_len: int = 40,
                         n_queries: int = 20, q_len: int = 16, noise: float = 0.35, seed: int = 0):
    """Documents mixing a few Zipf-popular topics; queries built from a source document plus noise.

    Returns (docs: list of float32 (n_i, dim), queries: float32 (n_queries, q_len, dim), sources: int array).
    """
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((n_topics, dim)))
    popularity = 1.0 / np.arange(1, n_topics + 1) ** 1.1
    popularity /= popularity.sum()
    docs = []
    for _ in range(n_docs):
        n = int(np.clip(rng.poisson(mean_len), 4, 4 * mean_len))
        topics = rng.choice(n_topics, size=rng.integers(2, 5), replace=False, p=popularity)
        tok_topics = rng.choice(topics, size=n)
        docs.append(_unit(centres[tok_topics] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim) * 4))
    sources = rng.choice(n_docs, size=n_queries, replace=False)
    queries = np.stack([
        _unit(docs[s][rng.integers(0, len(docs[s]), size=q_len)] + 0.25 * rng.standard_normal((q_len, dim))
              / np.sqrt(dim) * 4)
        for s in sources])
    return docs, queries, sources


def exact_topk(queries: np.ndarray, docs: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive MaxSim over float32 embeddings with numpy (the test oracle)."""
    scores = np.stack([[float((q @ d.T).max(axis=1).sum()) for d in docs] for q in queries])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order
