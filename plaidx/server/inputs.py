"""Checks of request values against the server's limits: texts, Matryoshka dimensions, query embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .errors import ApiError
from .models import TextInput


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond is answered 413 (sizes) or 400 (values).

    Attributes
    ----------
    max_body_bytes : bytes of one request body.
    max_inputs : texts of one /v1/multi-vector request, documents of one /v1/rerank request.
    max_input_chars : characters of one text (bounds tokenization before the token count is known).
    max_tokens : tokens the model reads for one request, after truncation at query/document length.
    max_k : results of one search.
    max_query_tokens : rows of ``query_embeddings`` in one search.
    max_doc_ids : ids in one search's ``doc_ids`` filter.
    """

    max_body_bytes: int = 4 << 20
    max_inputs: int = 256
    max_input_chars: int = 50_000
    max_tokens: int = 131_072
    max_k: int = 1000
    max_query_tokens: int = 1024
    max_doc_ids: int = 100_000


def request_texts(items: Any, what: str, limits: Limits) -> list[str]:
    """The texts of a request field (a string, ``{"text"}`` objects or a list of them), each non-blank and
    within the limits; ``what`` names the field in errors."""
    items = [items] if isinstance(items, (str, TextInput)) else list(items)
    if not items:
        raise ApiError(400, "invalid_request", f"'{what}' is empty: send at least one text", what)
    if len(items) > limits.max_inputs:
        raise ApiError(413, "too_many_inputs", f"'{what}' holds {len(items)} texts; this server accepts at most "
                                               f"{limits.max_inputs} per request: split the request", what)
    texts = [x.text if isinstance(x, TextInput) else x for x in items]
    for i, t in enumerate(texts):
        if not t.strip():
            raise ApiError(400, "invalid_request", f"{what}[{i}] is empty: every text needs some content",
                           f"{what}.{i}")
        if len(t) > limits.max_input_chars:
            raise ApiError(413, "input_too_long", f"{what}[{i}] has {len(t)} characters; this server accepts at "
                                                  f"most {limits.max_input_chars} per text", f"{what}.{i}")
    return texts


def check_dimensions(dimensions: Optional[int], model: Any) -> None:
    """A requested Matryoshka size is between 1 and the model's dimension."""
    if dimensions is not None and not 0 < dimensions <= model.dim:
        raise ApiError(400, "invalid_request", f"dimensions={dimensions} is not available: use 1 to {model.dim} "
                                               f"(dedicated heads: {getattr(model, 'head_dimensions', [model.dim])})",
                       "dimensions")


def is_matrix(value: list) -> bool:
    """Whether ``query_embeddings`` is one (q_tokens, dim) matrix (rows of numbers), not a list of them."""
    return not value or not value[0] or not isinstance(value[0][0], list)


def query_matrices(value: list, limits: Limits) -> list[np.ndarray]:
    """``query_embeddings`` as float32 matrices: one for a (q_tokens, dim) matrix, one per matrix of a list."""
    if not value:
        raise ApiError(400, "invalid_request", "query_embeddings is empty: send a (q_tokens, dim) matrix or a "
                                               "list of them", "query_embeddings")
    if is_matrix(value):
        return [query_matrix(value, limits, "query_embeddings")]
    if len(value) > limits.max_inputs:
        raise ApiError(413, "too_many_inputs", f"query_embeddings holds {len(value)} queries; at most "
                                               f"{limits.max_inputs} per request: split the request",
                       "query_embeddings")
    out = [query_matrix(m, limits, f"query_embeddings.{i}") for i, m in enumerate(value)]
    widths = {m.shape[1] for m in out}
    if len(widths) > 1:
        raise ApiError(400, "invalid_request", f"the query matrices have different widths {sorted(widths)}: every "
                                               "query's vectors must have the index's dimension", "query_embeddings")
    return out


def query_matrix(rows: list[list[float]], limits: Limits, where: str) -> np.ndarray:
    """float32 (q_tokens, dim) from nested lists: rectangular, within the limits, finite (NaN and infinities
    named apart from values too large for float32)."""
    if not rows:
        raise ApiError(400, "invalid_request", f"{where} is empty: send (q_tokens, dim) numbers", where)
    if len(rows) > limits.max_query_tokens:
        raise ApiError(413, "too_many_query_tokens", f"{where} holds {len(rows)} vectors; at most "
                                                     f"{limits.max_query_tokens}", where)
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise ApiError(400, "invalid_request", f"{where} must be a non-empty rectangular (q_tokens, dim) list: "
                                               "every row the same length", where)
    try:
        wide = np.asarray(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        raise ApiError(400, "invalid_request", f"{where} contains values too large for float32 (above about "
                                               "3.4e38)", where) from None
    if not np.isfinite(wide).all():
        raise ApiError(400, "invalid_request", f"{where} contains NaN or infinite values: send finite numbers",
                       where)
    with np.errstate(over="ignore"):
        q = wide.astype(np.float32)
    if not np.isfinite(q).all():
        raise ApiError(400, "invalid_request", f"{where} contains values too large for float32 (above about "
                                               "3.4e38)", where)
    return q
