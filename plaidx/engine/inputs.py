"""Validation and conversion of user-supplied embeddings (numpy or torch) into the kernels' dtypes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of a numpy array, torch tensor (any device) or nested sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def as_document(doc: Any, dim: int | None, where: str) -> np.ndarray:
    """float32 (n_tokens, d) contiguous, checked: 2-D, non-empty, matching d, finite."""
    arr = to_numpy(doc)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{where}: expected a float array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{where}: expected shape (n_tokens, d), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{where}: the document has no token embeddings; drop empty documents before indexing")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{where}: dimension {arr.shape[1]} does not match the index dimension {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: contains NaN or inf values")
    return arr


def as_queries(queries: Any, dim: int) -> tuple[np.ndarray, bool]:
    """float32 (nq, q_tokens, d) and whether a single (q_tokens, d) query was given."""
    q = to_numpy(queries)
    if q.dtype.kind not in "fiu":
        raise TypeError(f"queries: expected a float array, got dtype {q.dtype}")
    single = q.ndim == 2
    if single:
        q = q[None]
    if q.ndim != 3:
        raise ValueError(f"queries: expected shape (nq, q_tokens, d) or (q_tokens, d), got {q.shape}")
    if q.shape[0] == 0:
        raise ValueError("queries: no query given (nq == 0)")
    if q.shape[1] == 0:
        raise ValueError("queries: a query has no token embeddings (q_tokens == 0)")
    if q.shape[2] != dim:
        raise ValueError(f"queries: dimension {q.shape[2]} does not match the index dimension {dim}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("queries: contain NaN or inf values")
    return q, single


def is_id_list(x: Any) -> bool:
    """True for a list of ids (a sequence, set, array of at least one dimension or tensor), not for one id."""
    if isinstance(x, (list, tuple, set, frozenset, range)):
        return True
    return (isinstance(x, np.ndarray) or hasattr(x, "detach")) and np.ndim(to_numpy(x)) >= 1


def id_array(ids: Any) -> np.ndarray:
    """Document ids given as a list, array, tensor, set or range, as a numpy array (a set sorted); the caller checks
    the dtype and shape."""
    return to_numpy(sorted(ids) if isinstance(ids, (set, frozenset)) else ids)


def as_filter(doc_ids: Any) -> np.ndarray:
    """One ``doc_ids`` filter as a 1-D array; the caller checks the dtype."""
    ids = id_array(doc_ids)
    if ids.ndim > 1:
        raise ValueError(f"doc_ids: expected a list of document ids, got an array of shape {ids.shape}")
    return ids.ravel()


def issued_filter(ids: Any, next_id: int) -> np.ndarray:
    """The ids of one search filter as int64; a TypeError for ids that are not integers, a KeyError naming those
    the index never issued (negative, or from ``next_id`` on). Ids it issued and deleted pass: a search skips
    them, before and after a compaction or a reshard removes them."""
    ids = np.asarray(ids)
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"doc_ids: document ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64).ravel()
    issued = (ids >= 0) & (ids < next_id)
    if not issued.all():
        bad = ids[~issued][:10].tolist()
        raise KeyError(f"doc_ids: unknown document ids {bad}{' ...' if (~issued).sum() > 10 else ''} (this index "
                       f"has issued ids 0 to {next_id - 1})")
    return ids


def per_query_lists(doc_ids: Any, nq: int) -> list[Any] | None:
    """The ``nq`` lists of ``doc_ids`` given one list per query, as given; None when ``doc_ids`` is None or one
    list for every query.

    ``doc_ids`` is per query when it is a 2-D array (one row per query) or a list whose items are lists of ids
    (lists, tuples, sets, arrays): exactly ``nq`` of them, any of them empty (that query allows no document).
    """
    if doc_ids is None or isinstance(doc_ids, (str, set, frozenset, range)):
        return None
    if isinstance(doc_ids, (list, tuple)):
        nested = [is_id_list(x) for x in doc_ids]
        if not any(nested):
            return None
        if not all(nested):
            raise TypeError("doc_ids mixes document ids and lists of them: give one list of ids for every query, "
                            "or one list per query")
        rows = list(doc_ids)
    else:
        arr = to_numpy(doc_ids)
        if arr.ndim <= 1:
            return None
        if arr.ndim > 2:
            raise ValueError(f"doc_ids: expected one list of ids, or one per query, got an array of shape {arr.shape}")
        rows = list(arr)
    if len(rows) != nq:
        raise ValueError(f"doc_ids: {len(rows)} list{'' if len(rows) == 1 else 's'} of ids for {nq} queries: give one "
                         "list per query, or one list of ids for every query")
    return rows


def per_query_filters(doc_ids: Any, nq: int) -> list[np.ndarray] | None:
    """:func:`per_query_lists` as sorted, distinct int64 arrays of engine ids."""
    rows = per_query_lists(doc_ids, nq)
    if rows is None:
        return None
    out = []
    for i, r in enumerate(rows):
        r = as_filter(r)
        if r.size and r.dtype.kind not in "iu":
            raise TypeError(f"doc_ids[{i}]: document ids must be integers, got dtype {r.dtype}")
        out.append(np.unique(r.astype(np.int64)))
    return out


def ragged_queries(queries: Any) -> list[np.ndarray] | None:
    """The (q_tokens, d) matrices of a list of queries whose lengths differ; None for anything else."""
    if not isinstance(queries, (list, tuple)) or len(queries) < 2:
        return None
    mats = [to_numpy(x) for x in queries]
    if any(m.ndim != 2 for m in mats) or len({m.shape[0] for m in mats}) == 1:
        return None
    return mats


def query_parts(queries: Any, doc_ids: Any, dim: int) -> list[tuple[np.ndarray, Any, Any]] | None:
    """A search split into parts ``[(query rows, their queries, their doc_ids)]`` when the queries are a list of
    matrices of different lengths or ``doc_ids`` is one list per query (:func:`per_query_filters`): the queries of
    one length and one filter form a part. None when one call searches them all."""
    mats = ragged_queries(queries)
    if mats is None:
        if doc_ids is None:  # the common call: nothing to split, and the queries are converted once, by the caller
            return None
        shape = np.shape(to_numpy(queries))
        filters = per_query_filters(doc_ids, shape[0] if len(shape) == 3 else 1)
        if filters is None:
            return None
        q, _ = as_queries(queries, dim)
        lengths = [q.shape[1]] * q.shape[0]
    else:
        lengths = [m.shape[0] for m in mats]
        filters = per_query_filters(doc_ids, len(lengths))
    groups: dict[tuple[int, bytes], list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault((n, b"" if filters is None else filters[i].tobytes()), []).append(i)
    parts = []
    for members in groups.values():
        rows = np.asarray(members, np.int64)
        qs = q[rows] if mats is None else np.stack([mats[i] for i in members])
        parts.append((rows, qs, doc_ids if filters is None else filters[members[0]]))
    return parts


def without_padding(q: np.ndarray, doc_ids: Any, k: int, search: Any) -> tuple[np.ndarray, Any]:
    """The queries ``q`` (nq, q_tokens, d) without their all-zero token rows: ``(those queries, None)`` when they
    keep one length (``q`` itself when no row is zero), else ``(q, their results)``, the queries of each length
    searched by ``search(queries, doc_ids)`` (:func:`query_parts`).

    Encoders without query augmentation pad short queries with zero rows. Such a row adds exactly 0 to every
    MaxSim score, but a search would still probe cells for it, every cell scoring 0, so the lowest-numbered ones
    by the tie order, and carry it through every stage. A query of zero rows only is searched as given."""
    live = q.any(axis=2)
    live[~live.any(axis=1)] = True
    if live.all():
        return q, None
    lengths = live.sum(axis=1)
    if (lengths == lengths[0]).all():
        return np.ascontiguousarray(q[live].reshape(q.shape[0], int(lengths[0]), q.shape[2])), None
    return q, search_parts(query_parts([row[keep] for row, keep in zip(q, live)], doc_ids, q.shape[2]), k, search)


def one_batch(queries: Any, doc_ids: Any, dim: int, k: int, search: Any) -> tuple[np.ndarray, Any]:
    """The queries as one float32 (nq, q_tokens, d) batch of one length, without zero rows, under one filter:
    ``(batch, None)``; or, where they are not (different lengths, different numbers of zero rows, one filter per
    query: :func:`query_parts`, :func:`without_padding`), ``(_, their (nq, k) results)``, each part searched by
    ``search(queries, doc_ids)``, which comes back here with one batch."""
    parts = query_parts(queries, doc_ids, dim)
    if parts is not None:
        return None, search_parts(parts, k, search)
    q, _ = as_queries(queries, dim)
    return without_padding(q, doc_ids, k, search)


def search_parts(parts: list[tuple[np.ndarray, Any, Any]], k: int, search: Any) -> tuple[np.ndarray, np.ndarray]:
    """The (nq, k) scores and ids of :func:`query_parts`' parts, each searched by ``search(queries, doc_ids)``."""
    nq = sum(len(rows) for rows, _, _ in parts)
    scores = np.full((nq, k), -np.inf, np.float32)
    ids = np.full((nq, k), -1, np.int64)
    for rows, qs, allowed in parts:
        scores[rows], ids[rows] = search(qs, allowed)
    return scores, ids


def check_flag(value: Any, name: str, none_ok: bool = False) -> Optional[bool]:
    """``value`` as a bool (numpy's too), or None where ``none_ok``; a TypeError for anything else (a string such as
    "no" would otherwise count as true)."""
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False{' or None' if none_ok else ''}, got {value!r}")


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


def iter_documents(documents: Any) -> tuple[Iterator[Any], int | None]:
    """Flatten a sequence of documents or an iterable of batches into documents; returns (iter, count).

    A list/tuple (or anything with len and indexing) is a sequence of documents. Any other iterable
    yields either single documents (2-D arrays) or batches (lists/tuples of 2-D arrays, or 3-D arrays).
    """
    if isinstance(documents, (str, bytes)) or documents is None:
        raise TypeError("documents must be a sequence of (n_tokens, d) arrays or an iterable of batches")
    if isinstance(documents, Sequence) or (hasattr(documents, "__len__") and hasattr(documents, "__getitem__")
                                           and not hasattr(documents, "ndim")):
        return iter(documents), len(documents)
    arr_like = hasattr(documents, "ndim")
    if arr_like:
        arr = to_numpy(documents)
        if arr.ndim == 3:
            return iter(list(arr)), arr.shape[0]
        raise ValueError(f"documents: a single array must have shape (n_docs, n_tokens, d), got {arr.shape}")
    if not isinstance(documents, Iterable):
        raise TypeError("documents must be a sequence of (n_tokens, d) arrays or an iterable of batches")

    def flatten() -> Iterator[Any]:
        for item in documents:
            if isinstance(item, (list, tuple)):
                yield from item
            elif hasattr(item, "ndim") and item.ndim == 3:
                yield from to_numpy(item)
            else:
                yield item

    return flatten(), None


PREFETCH_BATCHES = 2  # batches a reader thread may hold ready ahead of the assigner (CPU) or the GPU

_DONE = object()


def batches(docs: Iterable[Any], dim: int, batch_tokens: int, lengths_out: list[int] | None = None) -> Iterable[np.ndarray]:
    """float32 (>= batch_tokens or the rest, d) blocks of consecutive documents' tokens, in order."""
    batch: list[np.ndarray] = []
    n = 0
    for i, doc in enumerate(docs):
        arr = as_document(doc, dim, f"documents[{i}]")
        if lengths_out is not None:
            lengths_out.append(arr.shape[0])
        batch.append(arr)
        n += arr.shape[0]
        if n >= batch_tokens:
            yield np.concatenate(batch, axis=0)
            batch, n = [], 0
    if batch:
        yield np.concatenate(batch, axis=0)


def prefetch(items: Iterable[Any], depth: int = PREFETCH_BATCHES) -> Iterable[Any]:
    """The items of ``items``, produced by a worker thread up to ``depth`` ahead of the consumer.

    An exception in the worker is raised in the consumer, and a consumer that stops early stops the
    worker, so no thread outlives the build.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((False, exc))

    worker = threading.Thread(target=work, name="plaidx-build-reader", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()
