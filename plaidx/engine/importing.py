"""Write an already-compressed collection (another engine's codes and packed residuals) as a new index."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from .build import check_metadata, check_target
from .clustering import MAX_NLIST
from .codec import NBITS, ResidualCodec, code_dtype
from .index import Index
from .storage import MANIFEST, Transaction, WriterLock, format_version_for, read_manifest, retire_unreferenced

_NORM_SAMPLE = 1 << 14  # tokens decompressed for the residual norm that drift is measured against


def import_compressed(path: str | os.PathLike, *, centroids: np.ndarray, cutoffs: np.ndarray, weights: np.ndarray,
                      avg_residual: np.ndarray, nbits: int, doc_lengths: np.ndarray,
                      chunks: Iterable[tuple[np.ndarray, np.ndarray]], metadata: dict[str, Any] | None = None,
                      source: dict[str, Any] | None = None, overwrite: bool = False) -> Index:
    """Create an index at ``path`` from compressed tokens, storing them as given (no re-encoding).

    Parameters
    ----------
    centroids : float16 (nlist, d)
        Stored as they are (float16 is a format plaidx reads at every nbits).
    cutoffs : float32 (d, 2**nbits - 1)
    weights : float32 (d, 2**nbits)
    avg_residual : float32 (d,)
    nbits : one of 1, 2, 4, 8.
    doc_lengths : int64 (n_docs,)
        Tokens of each document in order; ids are 0..n_docs-1. A length of 0 is a removed document:
        it keeps its id as a deleted document holding one placeholder token (code 0, zero bits).
    chunks : iterable of (codes, packed)
        codes int (n_i,) in [0, nlist), packed uint8 (n_i, d * nbits // 8) in plaidx's bit order (code of
        dimension j at bit j * nbits, least significant bit first); together they hold the tokens of the
        documents with a length > 0, in order. Chunk boundaries need not align with documents.
    metadata : JSON-serialisable dict stored in the manifest.
    source : JSON-serialisable description of where the index came from (stored under ``build``).
    """
    path = Path(path)
    centroids = np.asarray(centroids)
    if centroids.dtype != np.float16 or centroids.ndim != 2:
        raise ValueError(f"centroids must be float16 (nlist, d), got {centroids.dtype} {centroids.shape}")
    nlist, dim = centroids.shape
    if nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits!r}")
    nbits, metadata = int(nbits), check_metadata(metadata)
    if dim <= 0 or dim % 8:
        raise ValueError(f"embedding dimension {dim} is not a positive multiple of 8")
    if nlist == 0:
        raise IndexFormatError("the source index has no centroids: it is damaged or was never trained; rebuild it, "
                               "or build a plaidx index from the original embeddings")
    if not 1 <= nlist <= MAX_NLIST:
        raise ValueError(f"{nlist} centroids: plaidx stores at most {MAX_NLIST}, so this index cannot be converted "
                         "losslessly; build a plaidx index from the original embeddings instead")
    cutoffs = np.ascontiguousarray(cutoffs, dtype=np.float32)
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    avg_residual = np.ascontiguousarray(avg_residual, dtype=np.float32)
    if cutoffs.shape != (dim, (1 << nbits) - 1) or weights.shape != (dim, 1 << nbits) or avg_residual.shape != (dim,):
        raise ValueError(f"codec arrays do not fit d={dim}, nbits={nbits}: cutoffs {cutoffs.shape}, weights "
                         f"{weights.shape}, avg_residual {avg_residual.shape}")
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(cutoffs)) and np.all(np.isfinite(centroids))):
        raise ValueError("the codec (centroids, bucket cutoffs or weights) holds NaN or inf")
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    if lengths.ndim != 1 or lengths.size == 0 or np.any(lengths < 0):
        raise ValueError("doc_lengths must be a non-empty 1-D array of non-negative token counts")
    removed = lengths == 0
    if removed.all():
        raise ValueError("every document was removed: nothing to import")
    stored_lengths = np.where(removed, 1, lengths)
    n_docs = int(lengths.size)
    n_tokens = int(stored_lengths.sum())
    n_real = int(lengths.sum())
    pb = dim * nbits // 8
    codec = ResidualCodec(centroids.astype(np.float32), cutoffs, weights, nbits)
    check_target(path, overwrite)
    with WriterLock(path):
        base = read_manifest(path) if (path / MANIFEST).exists() else None
        retire_unreferenced(path, base)
        tx = Transaction(path, base, inherit_arrays=False)
        try:
            t0 = time.perf_counter()
            cdt = code_dtype(nlist)  # uint16, or uint32 above 65536 centroids
            codes_w = tx.stream("codes", cdt, (n_tokens,))
            res_w = tx.stream("residuals", np.uint8, (n_tokens, pb))
            # placeholder tokens go before the token at these real-token positions
            holes = np.concatenate([[0], np.cumsum(lengths)])[:-1][removed]
            seen = 0
            norm_sum, norm_n = 0.0, 0
            for codes, packed in chunks:
                codes = np.asarray(codes)
                packed = np.asarray(packed)
                if (codes.ndim != 1 or codes.dtype.kind not in "iu" or packed.shape != (codes.shape[0], pb)
                        or packed.dtype != np.uint8):
                    raise ValueError(f"a chunk has codes {codes.dtype} {codes.shape} and packed residuals "
                                     f"{packed.dtype} {packed.shape}; expected integer (n,) and uint8 (n, {pb})")
                if codes.size and (codes.min() < 0 or codes.max() >= nlist):
                    raise ValueError(f"a chunk holds codes outside [0, {nlist}) (min {codes.min()}, max "
                                     f"{codes.max()}); the source index is damaged")
                n = codes.shape[0]
                if seen + n > n_real:
                    raise ValueError(f"the chunks hold more tokens than the document lengths add up to ({n_real})")
                if norm_n < _NORM_SAMPLE and n:
                    take = min(n, _NORM_SAMPLE - norm_n)
                    c = np.ascontiguousarray(codes[:take], dtype=cdt)
                    r = codec.decompress(c, np.ascontiguousarray(packed[:take]), normalize=False)
                    r -= codec.centroids[c.astype(np.intp)]
                    norm_sum += float(np.linalg.norm(r, axis=1).sum())
                    norm_n += take
                codes_c = codes.astype(cdt)
                here = holes[(holes >= seen) & (holes < seen + n)]
                if here.size:
                    codes_c = np.insert(codes_c, here - seen, 0)
                    packed = np.insert(packed, here - seen, 0, axis=0)
                codes_w.append(codes_c)
                res_w.append(packed)
                seen += n
            if seen != n_real:
                raise ValueError(f"the chunks hold {seen} tokens, the document lengths add up to {n_real}; the "
                                 "source index is inconsistent")
            tail = int(np.count_nonzero(holes == n_real))  # removed documents after the last real token
            if tail:
                codes_w.append(np.zeros(tail, cdt))
                res_w.append(np.zeros((tail, pb), np.uint8))
            tx.finish("codes", codes_w)
            tx.finish("residuals", res_w)
            offsets = np.zeros(n_docs + 1, dtype=np.int64)
            np.cumsum(stored_lengths, out=offsets[1:])
            for name, arr in (("centroids", centroids), ("bucket_cutoffs", cutoffs), ("bucket_weights", weights),
                              ("avg_residual", avg_residual), ("doc_offsets", offsets),
                              ("doc_ids", np.arange(n_docs, dtype=np.int64)),
                              ("deleted", removed.astype(np.uint8))):
                tx.put(name, arr)
            ref_norm = norm_sum / max(norm_n, 1)
            fields = {"dim": int(dim), "nbits": int(nbits), "nlist": int(nlist), "n_docs": n_docs,
                      "n_tokens": n_tokens, "n_deleted": int(removed.sum()), "next_id": n_docs,
                      "metadata": dict(metadata or {}), "updates": {},
                      "build": {"imported_from": dict(source or {}), "n_tokens": n_tokens,
                                "residual_norm_mean": ref_norm, "residual_norm_mean_all_tokens": ref_norm,
                                "timings": {"import_s": round(time.perf_counter() - t0, 3)},
                                "format_version": format_version_for(cdt)}}
            tx.commit(fields)
        except BaseException:
            tx.abort()
            raise
    return Index.open(path)


def build_with_ids(path: str | os.PathLike, documents: Any, ids: Any, *, nbits: int = 2, nlist: int | None = None,
                   kmeans_niters: int = 4, seed: int = 0, metadata: dict[str, Any] | None = None,
                   overwrite: bool = False, progress: bool = False) -> Index:
    """Build an index like :meth:`Index.build`, but with given document ids instead of 0..n-1.

    Parameters
    ----------
    documents : sequence of float32/float16 (n_tokens_i, d) arrays, in the order of ``ids``.
    ids : int64 (n_docs,), strictly ascending and non-negative (e.g. the ids of an exported index).
    """
    from .build import build_generation, check_build_args

    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.size == 0 or ids[0] < 0 or np.any(np.diff(ids) <= 0):
        raise ValueError("ids must be non-empty, non-negative and strictly ascending")
    if len(documents) != ids.size:
        raise ValueError(f"{len(documents)} documents for {ids.size} ids")
    path = Path(path)
    nbits, nlist, kmeans_niters, _, seed, _ = check_build_args(nbits, nlist, kmeans_niters, 1 << 16, seed=seed)
    metadata = check_metadata(metadata)
    check_target(path, overwrite)
    with WriterLock(path):
        base = read_manifest(path) if (path / MANIFEST).exists() else None
        retire_unreferenced(path, base)
        build_generation(path, documents, ids, base, nbits=nbits, nlist=nlist, kmeans_niters=kmeans_niters,
                         seed=seed, kmeans_sample=None, batch_tokens=1 << 16, metadata=metadata, progress=progress,
                         next_id=int(ids[-1]) + 1)
    return Index.open(path)
