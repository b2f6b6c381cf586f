"""The rerank tier: every token's vector kept beside the codes (int8 or float16), stored, read and scored."""

from __future__ import annotations

import os
import weakref
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from . import kernels
from .cellq import MAX_QUANTIZED_DIM, quantize_int8
from .params import rerank_count
from .storage import advise_map

KEEP_VECTORS = ("int8", "float16")
VECTORS = "vectors"
SCALES = "vector_scales"
TIER_ARRAYS = (VECTORS, SCALES)
_EXACT_CHUNK_DOCS = 1 << 14  # documents scored per call of an exhaustive search (bounds its (nq, m) scores)


def check_keep_vectors(value: Any) -> str | None:
    """``value`` if it names a rerank tier (None, "int8", "float16"), else a ValueError saying what to pass."""
    if value is None or (isinstance(value, str) and value in KEEP_VECTORS):
        return value
    raise ValueError(f"keep_vectors must be None (no rerank tier), 'int8' (d + 4 bytes per token) or "
                     f"'float16' (2 d bytes per token), got {value!r}")


def check_kept_dim(kind: str | None, dim: int) -> None:
    """A ValueError before anything is written when the tier ``kind`` cannot be searched at dimension ``dim``."""
    if kind == "int8" and dim > MAX_QUANTIZED_DIM:
        raise ValueError(f"keep_vectors='int8' needs d <= {MAX_QUANTIZED_DIM} (the int8 kernels' bound), and these "
                         f"embeddings have d {dim}: keep 'float16' vectors instead, or none")


def check_rerank(rerank: Any, has_tier: bool) -> bool:
    """Whether a search with this ``rerank`` scores its candidates with the kept vectors (an index whose
    tier exists: ``has_tier``); a ValueError saying what to pass for a value that cannot be used.

    None: the tier wherever there is one. 0: none. A positive count needs a tier.
    """
    rerank = rerank_count(rerank)
    if rerank is None:
        return has_tier
    if rerank and not has_tier:
        raise ValueError(f"rerank={rerank} needs kept vectors, and this index has none: rebuild it with "
                         "Index.build(..., keep_vectors='int8') (or 'float16'; RAGPretrainedModel.index and "
                         "plaidx index take keep_vectors / --keep-vectors too), or search with rerank=None or 0")
    return bool(rerank)


class VectorWriter:
    """Streams a new generation's kept vectors (and int8 scales) into a storage Transaction."""

    def __init__(self, tx: Any, kind: str, n_tokens: int, dim: int):
        self.tx, self.kind = tx, check_keep_vectors(kind)
        self.vec = tx.stream(VECTORS, np.int8 if kind == "int8" else np.float16, (n_tokens, dim))
        self.scales = tx.stream(SCALES, np.float32, (n_tokens,)) if kind == "int8" else None

    def append(self, x: np.ndarray) -> None:
        """Store float32 (m, d) token vectors as the next m rows."""
        if self.kind == "int8":
            q, s = quantize_int8(x)
            self.vec.append(q)
            self.scales.append(s)  # type: ignore[union-attr]
        else:
            self.vec.append(np.asarray(x, dtype=np.float16))

    def copy(self, kept: KeptVectors, tokens: Any) -> None:
        """Append the stored rows ``tokens`` (a slice or int64 index array) of ``kept`` byte for byte."""
        if kept.kind != self.kind:
            raise ValueError(f"cannot copy {kept.kind} kept vectors into a {self.kind} tier")
        if isinstance(tokens, slice):
            for lo in range(tokens.start or 0, tokens.stop, 1 << 18):
                self.copy(kept, np.arange(lo, min(lo + (1 << 18), tokens.stop)))
            return
        tokens = np.asarray(tokens, dtype=np.int64)
        self.vec.append(np.asarray(kept.vectors[tokens]))
        if self.scales is not None:
            self.scales.append(np.asarray(kept.scales[tokens]))

    def finish(self) -> None:
        self.tx.finish(VECTORS, self.vec)
        if self.scales is not None:
            self.tx.finish(SCALES, self.scales)


class _Rows:
    """Row runs of a memory-mapped array read with ``pread``: the pages land in the page cache, not in
    this process's RSS (a page fault on the map would also map its neighbours, 64 KiB or more at a time)."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        self.row_shape = tuple(arr.shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * arr.dtype.itemsize
        self.fd: int | None = None
        filename = getattr(arr, "filename", None)
        if filename is not None and isinstance(arr, np.memmap):
            try:
                self.fd = os.open(filename, os.O_RDONLY)
            except OSError:  # retired by a writer since it was mapped: read through the map instead
                self.fd = None
            else:
                self.offset = int(arr.offset)
                weakref.finalize(self, os.close, self.fd)

    def read(self, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The rows starts[i]:starts[i] + lens[i] of every run, concatenated: (sum(lens), *row_shape)."""
        total = int(lens.sum())
        if self.fd is None:
            idx = np.arange(total, dtype=np.int64) + np.repeat(starts - np.cumsum(lens) + lens, lens)
            return np.asarray(self.arr[idx])
        out = np.empty((total, *self.row_shape), dtype=self.arr.dtype)
        view = memoryview(out).cast("B")
        pos = 0
        for start, n in zip(starts.tolist(), lens.tolist()):
            want = n * self.row_bytes
            got = os.preadv(self.fd, [view[pos:pos + want]], self.offset + start * self.row_bytes)
            if got != want:
                raise IndexFormatError(f"{self.arr.filename}: truncated (read {got} of {want} bytes at row {start}); "
                                       "drop the tier with plaidx.Index.drop_vectors(path) or rebuild the index")
            pos += want
        return out


class KeptVectors:
    """A generation's kept vectors, memory-mapped; searches read only their candidates' rows (with pread).

    Attributes
    ----------
    vectors : int8 or float16 (n_tokens, d), memory-mapped.
    scales : float32 (n_tokens,) for int8 (row t is ``vectors[t] * scales[t]``), None for float16.
    """

    def __init__(self, vectors: np.ndarray, scales: np.ndarray | None):
        self.vectors, self.scales = vectors, scales
        # The int8 search reads its candidates' rows through the map: no read-ahead around them (a query's
        # rows are scattered; read-ahead would page in the neighbours of each).
        advise_map(vectors, "MADV_RANDOM")
        self.kind = "int8" if vectors.dtype == np.int8 else "float16"
        self._vec_rows = _Rows(vectors)
        self._scale_rows = _Rows(scales) if scales is not None else None

    @property
    def bytes_per_token(self) -> int:
        return int(self.vectors.shape[1] * self.vectors.dtype.itemsize + (4 if self.scales is not None else 0))

    def runs(self, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """float32 (sum(lens), d): the kept vectors of the token runs starts[i]:starts[i] + lens[i]."""
        starts = np.asarray(starts, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        raw = self._vec_rows.read(starts, lens)
        if self._scale_rows is None:
            return raw.astype(np.float32)
        out = np.empty(raw.shape, dtype=np.float32)  # dequantized in one pass, no temporary
        np.multiply(raw, self._scale_rows.read(starts, lens)[:, None], out=out, casting="unsafe")
        return out

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The ``kept`` argument of the native search, as memory maps: (vectors int8 (n_tokens, d), scales
        f32 (n_tokens,)) or (vectors float16 (n_tokens, d), None). The search reads its candidates' rows
        through the map."""
        return self.vectors, self.scales

    def rows(self, tokens: Any) -> np.ndarray:
        """float32 (m, d): the kept vectors of ``tokens`` (a slice, or an int64 index array)."""
        if isinstance(tokens, slice):
            lo, hi = tokens.start or 0, tokens.stop
            return self.runs(np.array([lo]), np.array([hi - lo]))
        v = np.asarray(self.vectors[tokens]).astype(np.float32)
        if self.scales is not None:
            v *= np.asarray(self.scales[tokens], dtype=np.float32)[:, None]
        return v

    def rerank(self, q: np.ndarray, doc_offsets: np.ndarray, candidates: np.ndarray, k: int,
               num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Score each query's candidates by MaxSim over their kept vectors (the native search's step 5 with
        ``kept``: the same values); the top k of them. The route of searches whose PLAID stages ran elsewhere
        (a GPU).

        Parameters
        ----------
        q : float32 (nq, q_tokens, d)
        doc_offsets : int64 (n_docs + 1,)
        candidates : int64 (nq, m) document positions, -1 padding.
        k : results per query.

        Returns
        -------
        scores : float32 (nq, k), pos : int64 (nq, k); best first, ties by lower position, -inf / -1 padding.
        """
        nq = q.shape[0]
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_p = np.full((nq, k), -1, np.int64)
        offs = np.ascontiguousarray(doc_offsets, dtype=np.int64)
        for i in range(nq):
            cand = np.unique(candidates[i][candidates[i] >= 0])
            if cand.size == 0:
                continue
            s = kernels.kept_scores(np.ascontiguousarray(q[i:i + 1]), self.arrays(), offs, cand,
                                    num_threads=num_threads)
            out_s[i], out_p[i] = _top_k(s, cand[None], k)
        return out_s, out_p

    def exact_search(self, q: np.ndarray, doc_offsets: np.ndarray, allowed: np.ndarray, k: int,
                     num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive MaxSim of every allowed document over its kept vectors (step 5's scores), in chunks of
        documents.

        ``allowed``: uint8 (n_docs,) mask, or size 0 for every document. Returns as :meth:`rerank`.
        """
        offs = np.ascontiguousarray(doc_offsets, dtype=np.int64)
        docs = np.flatnonzero(allowed).astype(np.int64) if allowed.size else np.arange(offs.size - 1, dtype=np.int64)
        q = np.ascontiguousarray(q)
        best_s = np.full((q.shape[0], k), -np.inf, np.float32)
        best_p = np.full((q.shape[0], k), -1, np.int64)
        for lo in range(0, docs.size, _EXACT_CHUNK_DOCS):
            part = docs[lo:lo + _EXACT_CHUNK_DOCS]
            s = kernels.kept_scores(q, self.arrays(), offs, part, num_threads=num_threads)
            pos = np.broadcast_to(part, s.shape)
            best_s, best_p = _top_k(np.concatenate([best_s, s], axis=1), np.concatenate([best_p, pos], axis=1), k)
        return best_s, best_p


def _top_k(scores: np.ndarray, pos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (score descending, then position ascending); -inf entries become -1 padding."""
    key_pos = np.where(pos >= 0, pos, np.iinfo(np.int64).max)
    order = np.lexsort((key_pos, -scores.astype(np.float64)), axis=-1)[:, :k]
    s = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    p = np.take_along_axis(pos, order, axis=1)
    p = np.where(np.isneginf(s), -1, p)
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.concatenate([s, np.full((s.shape[0], pad), -np.inf, np.float32)], axis=1)
        p = np.concatenate([p, np.full((p.shape[0], pad), -1, np.int64)], axis=1)
    return s, p


def open_kept(arrays: dict[str, np.ndarray], n_tokens: int, dim: int, where: str) -> KeptVectors | None:
    """The kept vectors of a generation's arrays, checked, or None when it has no rerank tier."""
    if VECTORS not in arrays:
        if SCALES in arrays:
            raise IndexFormatError(f"{where}: array {SCALES!r} without {VECTORS!r}; the index is inconsistent "
                                   "(drop the tier with plaidx.Index.drop_vectors(path) or rebuild the index)")
        return None
    vec = arrays[VECTORS]
    if tuple(vec.shape) != (n_tokens, dim) or vec.dtype not in (np.int8, np.float16):
        raise IndexFormatError(f"{where}: kept vectors have dtype {vec.dtype} shape {vec.shape}, expected int8 or "
                               f"float16 ({n_tokens}, {dim}); drop the tier with plaidx.Index.drop_vectors(path) "
                               "or rebuild the index")
    scales = arrays.get(SCALES)
    if vec.dtype == np.int8:
        if scales is None or tuple(scales.shape) != (n_tokens,) or scales.dtype != np.float32:
            raise IndexFormatError(f"{where}: int8 kept vectors need float32 {SCALES!r} of shape ({n_tokens},); "
                                   "drop the tier with plaidx.Index.drop_vectors(path) or rebuild the index")
    elif scales is not None:
        raise IndexFormatError(f"{where}: float16 kept vectors come without {SCALES!r}; the index is inconsistent "
                               "(drop the tier with plaidx.Index.drop_vectors(path) or rebuild the index)")
    return KeptVectors(vec, scales)


def drop_tier(transaction: Any) -> dict[str, Any]:
    """Commit the transaction's generation without the kept vectors (the lock is held by the caller).

    Reads no array, so it also repairs an index whose vector file is missing or corrupt.
    """
    for name in TIER_ARRAYS:
        transaction.entries.pop(name, None)
    return transaction.commit({})


__all__ = ["KEEP_VECTORS", "KeptVectors", "VectorWriter", "check_keep_vectors", "drop_tier",
           "open_kept", "quantize_int8", "check_rerank"]
