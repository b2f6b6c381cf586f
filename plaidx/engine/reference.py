"""Reference kernels in plain numpy/numba loops: the test oracle and the fallback without plaidx._core.

Same functions, arguments and results as the native module; the contract is the docstring of
plaidx/kernels.py. Written for obviousness, not speed: single-threaded (``num_threads`` is
accepted and validated, then ignored), float32 arithmetic in the contract's order (dot products and
sums over query tokens accumulate sequentially); the one exception is centroid_scores, numpy's BLAS
GEMM. Inputs are checked with the same exception types as the native module: TypeError for a wrong
type or dtype, ValueError for shapes, layout and values.
Rankings treat a NaN score as -inf; other NaN behaviour is unspecified (inputs should be finite).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit

from . import cellq

_NEG_INF = np.float32(-np.inf)
_NORM_EPS = np.float32(1e-12)


# ---------------------------------------------------------------------------------------- validation
def _array(x: Any, fn: str, name: str, dtype: Any, ndim: int, dims: str) -> np.ndarray:
    """``x`` after checking it is a C-contiguous, aligned, native-endian ``dtype`` array of ``ndim`` dims."""
    dt = np.dtype(dtype)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of {dt} {dims}, got {type(x).__name__}; "
                        f"convert it with np.ascontiguousarray({name}, dtype=np.{dt})")
    if x.dtype != dt or not x.dtype.isnative:
        raise TypeError(f"{fn}: {name} must be {dt} {dims}, got dtype {x.dtype}; convert it on purpose "
                        f"with np.ascontiguousarray({name}, dtype=np.{dt})")
    if x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must have shape {dims} ({ndim}-D), got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if not x.flags.aligned:
        raise ValueError(f"{fn}: {name} is not aligned to its dtype; pass np.require({name}, requirements='CA')")
    return x


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_nbits(fn: str, nbits: Any) -> None:
    _check_int(fn, "nbits", nbits, 1)
    _expect(nbits in (1, 2, 4, 8), f"{fn}: nbits must be 1, 2, 4 or 8, got {nbits}")


def _check_dim(fn: str, d: int) -> None:
    _expect(d > 0 and d % 8 == 0, f"{fn}: d must be a positive multiple of 8, got {d}")


def _check_threads(fn: str, num_threads: Any) -> None:
    _check_int(fn, "num_threads", num_threads, 0)


def _check_int(fn: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    _expect(int(value) >= minimum, f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_offsets(offsets: np.ndarray, total: int, name: str) -> None:
    _expect(offsets[0] == 0, f"{name}[0] must be 0, got {offsets[0]}")
    _expect(offsets[-1] == total, f"{name}[-1] must equal {total}, got {offsets[-1]}")
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        raise ValueError(f"{name} must be non-decreasing; it decreases at position {drops[0] + 1}")


_MAX_NLIST_U32 = 1 << 32


def _codes(x: Any, fn: str, name: str = "codes") -> np.ndarray:
    """``x`` checked like :func:`_array` as the centroid ids (n,): uint16 (nlist <= 65536) or uint32."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint32:
        return _array(x, fn, name, np.uint32, 1, "(n,)")
    if isinstance(x, np.ndarray) and x.dtype != np.uint16:
        raise TypeError(f"{fn}: {name} must be uint16 (nlist <= 65536) or uint32 (n,), got dtype {x.dtype}; "
                        f"convert it on purpose with np.ascontiguousarray({name}, dtype=np.uint16)")
    return _array(x, fn, name, np.uint16, 1, "(n,)")


def _check_nlist(fn: str, nlist: int, codes: np.ndarray, what: str = "nlist (centroids.shape[0])") -> None:
    """nlist within what the codes' dtype addresses: 65536 for uint16, 2**32 for uint32."""
    top = 1 << (8 * codes.dtype.itemsize)
    _expect(1 <= nlist <= top, f"{fn}: {what} must be in [1, {top}] for {codes.dtype} codes, got {nlist}")


def _check_codes(codes: np.ndarray, nlist: int) -> None:
    _expect(codes.size == 0 or int(codes.max()) < nlist, f"codes: a centroid id is >= nlist ({nlist})")


def _codebook(fn: str, weights: Any, d: int, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """The decode table f32 (pb, 256, dpb) and per-token scale levels f32 (16,) of a ``weights`` argument:
    bucket weights (d, 2**nbits), whose table expands every byte value and whose levels are all 1, or the pq
    codec's pair (table, levels or None). Decoding is then one rule: centroid + level * table entry."""
    dpb = 8 // nbits
    pb = d // dpb
    if isinstance(weights, tuple):
        _expect(len(weights) == 2, f"{fn}: a pq codebook is the pair (table (pb, 256, dpb), levels (16,) or None)")
        table = _array(weights[0], fn, "weights[0]", np.float32, 3, "(pb, 256, dpb)")
        _expect(table.shape == (pb, 256, dpb),
                f"{fn}: the pq table must have shape (d * nbits // 8, 256, 8 // nbits) = {(pb, 256, dpb)}, "
                f"got {table.shape}")
        if weights[1] is None:
            return table, np.ones(16, np.float32)
        levels = _array(weights[1], fn, "weights[1]", np.float32, 1, "(16,)")
        _expect(levels.shape == (16,), f"{fn}: the pq scale levels must have shape (16,), got {levels.shape}")
        return table, levels
    weights = _array(weights, fn, "weights", np.float32, 2, "(d, 2**nbits)")
    _expect(weights.shape == (d, 1 << nbits),
            f"{fn}: weights must have shape (d, 2**nbits) = {(d, 1 << nbits)}, got {weights.shape}")
    b = np.arange(256)
    u = np.arange(dpb)
    bucket = (b[:, None] >> (u[None, :] * nbits)) & ((1 << nbits) - 1)  # (256, dpb)
    j = np.arange(pb)[:, None, None] * dpb + u[None, None, :]  # (pb, 1, dpb)
    table = np.ascontiguousarray(weights[j, bucket[None]], dtype=np.float32)
    return table, np.ones(16, np.float32)


def _collection(fn, codes, packed, doc_offsets, centroids, weights, nbits, allowed, d):
    _check_nbits(fn, nbits)
    codes = _codes(codes, fn)
    packed = _array(packed, fn, "packed", np.uint8, 2, "(n, d * nbits // 8)")
    doc_offsets = _array(doc_offsets, fn, "doc_offsets", np.int64, 1, "(ndocs + 1,)")
    centroids = _array(centroids, fn, "centroids", np.float32, 2, "(nlist, d)")
    allowed = _array(allowed, fn, "allowed", np.uint8, 1, "(ndocs,) or (0,)")
    n, nlist = codes.shape[0], centroids.shape[0]
    _expect(packed.shape == (n, d * nbits // 8),
            f"{fn}: packed must have shape (n, d * nbits // 8) = {(n, d * nbits // 8)}, got {packed.shape}")
    _expect(doc_offsets.shape[0] >= 1, f"{fn}: doc_offsets must have ndocs + 1 >= 1 entries, got 0")
    _expect(centroids.shape[1] == d, f"{fn}: centroids must have shape (nlist, d) with d = {d}, got {centroids.shape}")
    _check_nlist(fn, nlist, codes)
    book = _codebook(fn, weights, d, nbits)
    ndocs = doc_offsets.shape[0] - 1
    _expect(allowed.shape[0] in (ndocs, 0),
            f"{fn}: allowed must have shape (ndocs,) = ({ndocs},) or (0,), got {allowed.shape}")
    _check_offsets(doc_offsets, n, "doc_offsets")
    _check_codes(codes, nlist)
    return codes, packed, doc_offsets, centroids, book, allowed


def _queries(fn: str, Q: Any) -> np.ndarray:
    Q = _array(Q, fn, "Q", np.float32, 3, "(nq, qlen, d)")
    _check_dim(fn, Q.shape[2])
    _expect(Q.shape[1] >= 1, f"{fn}: queries need at least one token (Q.shape[1] >= 1)")
    return Q


# ------------------------------------------------------------------------------------ numba kernels
@njit(cache=False)
def _decode(codes, packed, centroids, table, levels, t, out):
    """out (d,) = centroids[codes[t]] + s * table[p, byte p of token t, u] for j = p * dpb + u, with
    s = levels[high nibble of the token's last byte] (all 1 for bucket weights: then out = centroid + weight)."""
    pb, dpb = table.shape[0], table.shape[2]
    c = codes[t]
    s = levels[packed[t, pb - 1] >> 4]
    for p in range(pb):
        b = packed[t, p]
        for u in range(dpb):
            out[p * dpb + u] = centroids[c, p * dpb + u] + s * table[p, b, u]


@njit(cache=False)
def _normalize(v):
    """v /= max(||v||, 1e-12), the squared norm summed sequentially in float32."""
    s = np.float32(0.0)
    for j in range(v.shape[0]):
        s += v[j] * v[j]
    norm = np.sqrt(s)
    denom = np.float32(1e-12) if norm < np.float32(1e-12) else norm
    for j in range(v.shape[0]):
        v[j] = v[j] / denom


@njit(cache=False)
def _decompress_loop(codes, packed, centroids, table, levels, normalize, out):
    for t in range(codes.shape[0]):
        _decode(codes, packed, centroids, table, levels, t, out[t])
        if normalize:
            _normalize(out[t])


@njit(cache=False)
def _maxsim_one(Qq, vectors, out_max):
    """out_max[a] = max(out_max[a], max_t <Qq[a], vectors[t]>), dot products summed sequentially in float32."""
    for t in range(vectors.shape[0]):
        for a in range(Qq.shape[0]):
            dot = np.float32(0.0)
            for j in range(Qq.shape[1]):
                dot += Qq[a, j] * vectors[t, j]
            if dot > out_max[a]:
                out_max[a] = dot


@njit(cache=False)
def _sum_f32(m):
    s = np.float32(0.0)
    for a in range(m.shape[0]):
        s += m[a]
    return s


@njit(cache=False)
def _maxsim_loop(Q, values, doc_offsets, out):
    m = np.empty(Q.shape[1], np.float32)
    for q in range(Q.shape[0]):
        for i in range(doc_offsets.shape[0] - 1):
            lo, hi = doc_offsets[i], doc_offsets[i + 1]
            m[:] = -np.inf
            _maxsim_one(Q[q], values[lo:hi], m)
            out[q, i] = _sum_f32(m) if hi > lo else np.float32(0.0)


@njit(cache=False)
def _centroid_scores(Sq, codes, doc_offsets, docs, keep):
    """sum_a max over the tokens t of each document with keep[codes[t]] of Sq[a, codes[t]] (0 if none)."""
    out = np.zeros(docs.shape[0], np.float32)
    m = np.empty(Sq.shape[0], np.float32)
    for i in range(docs.shape[0]):
        m[:] = -np.inf
        used = False
        for t in range(doc_offsets[docs[i]], doc_offsets[docs[i] + 1]):
            c = codes[t]
            if keep[c]:
                used = True
                for a in range(Sq.shape[0]):
                    if Sq[a, c] > m[a]:
                        m[a] = Sq[a, c]
        out[i] = _sum_f32(m) if used else np.float32(0.0)
    return out


@njit(cache=False)
def _exact_scores(Qq, codes, packed, doc_offsets, docs, centroids, table, levels):
    """MaxSim of one query (qlen, d) against the decompressed, normalized tokens of each document."""
    out = np.zeros(docs.shape[0], np.float32)
    m = np.empty(Qq.shape[0], np.float32)
    v = np.empty((1, Qq.shape[1]), np.float32)
    for i in range(docs.shape[0]):
        lo, hi = doc_offsets[docs[i]], doc_offsets[docs[i] + 1]
        m[:] = -np.inf
        for t in range(lo, hi):
            _decode(codes, packed, centroids, table, levels, t, v[0])
            _normalize(v[0])
            _maxsim_one(Qq, v, m)
        out[i] = _sum_f32(m) if hi > lo else np.float32(0.0)
    return out


# ------------------------------------------------------------------------------------------ ranking
def _top(scores: np.ndarray, docs: np.ndarray, m: int) -> np.ndarray:
    """Positions of the best ``m`` entries: score descending (NaN as -inf), then document ascending."""
    key = np.where(np.isnan(scores), -np.inf, scores.astype(np.float64))
    return np.lexsort((docs, -key))[:m]


def _write_top(scores: np.ndarray, docs: np.ndarray, k: int, out_s: np.ndarray, out_d: np.ndarray) -> None:
    order = _top(scores, docs, k)
    out_s[: order.size] = scores[order]
    out_d[: order.size] = docs[order]


# ---------------------------------------------------------------------------------------- functions
def compress(residuals: np.ndarray, cutoffs: np.ndarray, nbits: int) -> np.ndarray:
    """Bucketize and bit-pack residuals f32 (n, d) with cutoffs f32 (d, 2**nbits - 1) -> u8 (n, d*nbits//8)."""
    fn = "compress"
    _check_nbits(fn, nbits)
    residuals = _array(residuals, fn, "residuals", np.float32, 2, "(n, d)")
    cutoffs = _array(cutoffs, fn, "cutoffs", np.float32, 2, "(d, 2**nbits - 1)")
    n, d = residuals.shape
    _check_dim(fn, d)
    _expect(cutoffs.shape == (d, (1 << nbits) - 1),
            f"{fn}: cutoffs must have shape (d, 2**nbits - 1) = {(d, (1 << nbits) - 1)}, got {cutoffs.shape}")
    _expect(bool(np.all(cutoffs[:, 1:] >= cutoffs[:, :-1])),
            "cutoffs must be ascending (and not NaN) along each row")
    packed = np.zeros((n, d * nbits // 8), np.uint8)
    for j in range(d):
        # For an ascending row, searchsorted(side="right") is the number of cutoffs <= r; NaN codes as 0.
        code = np.searchsorted(cutoffs[j], residuals[:, j], side="right").astype(np.uint8)
        code[np.isnan(residuals[:, j])] = 0
        bit = j * nbits
        packed[:, bit // 8] |= code << np.uint8(bit % 8)
    return packed


@njit(cache=False)
def _pq_encode_loop(r, table, mids, out):
    pb, dpb = table.shape[0], table.shape[2]
    for t in range(r.shape[0]):
        num = 0.0
        den = 0.0
        for p in range(pb):
            K = 256 if p + 1 < pb else 16
            best = np.float32(np.inf)
            bi = 0
            for k in range(K):
                acc = np.float32(0.0)
                for u in range(dpb):
                    e = r[t, p * dpb + u] - table[p, k, u]
                    acc += e * e
                if acc < best:
                    best = acc
                    bi = k
            out[t, p] = bi
            for u in range(dpb):
                c = np.float64(table[p, bi, u])
                num += np.float64(r[t, p * dpb + u]) * c
                den += c * c
        s = num / den if den > 0.0 else 1.0
        level = 0
        for i in range(15):
            if mids[i] < s:
                level += 1
        out[t, pb - 1] |= level << 4


def pq_encode(residuals: np.ndarray, table: np.ndarray, levels: np.ndarray, nbits: int) -> np.ndarray:
    """The pq codec's bytes u8 (n, pb) of residuals f32 (n, d) (the native kernel's contract, kernels.py)."""
    fn = "pq_encode"
    _check_nbits(fn, nbits)
    _expect(nbits != 8, f"{fn}: nbits must be 1, 2 or 4 (a byte codes 8 / nbits dimensions of the pq codec), got 8")
    residuals = _array(residuals, fn, "residuals", np.float32, 2, "(n, d)")
    d = residuals.shape[1]
    _check_dim(fn, d)
    _expect(levels is not None, f"{fn}: levels must be given (16,)")
    table, levels = _codebook(fn, (table, levels), d, nbits)
    _expect(bool(np.all(levels[:-1] <= levels[1:])), f"{fn}: levels must be ascending (and not NaN)")
    mids = 0.5 * (levels[:-1].astype(np.float64) + levels[1:].astype(np.float64))
    out = np.zeros((residuals.shape[0], table.shape[0]), np.uint8)
    _pq_encode_loop(residuals, table, mids, out)
    return out


def _tokens(fn: str, codes: Any, packed: Any, centroids: Any, weights: Any, nbits: int) -> tuple:
    """Tokens to decode, checked against each other: (codes, packed, centroids, table, levels) (decompress's and
    token_scales's arguments)."""
    _check_nbits(fn, nbits)
    codes = _codes(codes, fn)
    packed = _array(packed, fn, "packed", np.uint8, 2, "(n, d * nbits // 8)")
    centroids = _array(centroids, fn, "centroids", np.float32, 2, "(nlist, d)")
    (n,), (nlist, d) = codes.shape, centroids.shape
    _check_dim(fn, d)
    _expect(packed.shape == (n, d * nbits // 8),
            f"{fn}: packed must have shape (n, d * nbits // 8) = {(n, d * nbits // 8)}, got {packed.shape}")
    _check_nlist(fn, nlist, codes)
    table, levels = _codebook(fn, weights, d, nbits)
    _check_codes(codes, nlist)
    return codes, packed, centroids, table, levels


def decompress(codes: np.ndarray, packed: np.ndarray, centroids: np.ndarray, weights: np.ndarray, nbits: int,
               normalize: bool) -> np.ndarray:
    """Reconstructed embeddings f32 (n, d): centroid plus residual weights, unit length when ``normalize``."""
    codes, packed, centroids, table, levels = _tokens("decompress", codes, packed, centroids, weights, nbits)
    out = np.empty((codes.shape[0], centroids.shape[1]), np.float32)
    _decompress_loop(codes, packed, centroids, table, levels, bool(normalize), out)
    return out


def build_ivf(codes: np.ndarray, doc_offsets: np.ndarray, nlist: int, *,
              num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inverted file: (ivf i32 (npairs,), ivf_offsets i64 (nlist + 1,)), ascending distinct docs per cell."""
    fn = "build_ivf"
    _check_threads(fn, num_threads)
    codes = _codes(codes, fn)
    doc_offsets = _array(doc_offsets, fn, "doc_offsets", np.int64, 1, "(ndocs + 1,)")
    nlist = _check_int(fn, "nlist", nlist, 1)
    _check_nlist(fn, nlist, codes, "nlist")
    _expect(doc_offsets.shape[0] >= 1, f"{fn}: doc_offsets must have ndocs + 1 >= 1 entries, got 0")
    ndocs = doc_offsets.shape[0] - 1
    _expect(ndocs <= np.iinfo(np.int32).max, f"{fn}: more than 2**31 - 1 documents do not fit int32 ivf entries")
    _check_offsets(doc_offsets, codes.shape[0], "doc_offsets")
    _check_codes(codes, nlist)
    doc_of_token = np.repeat(np.arange(ndocs, dtype=np.int64), np.diff(doc_offsets))
    pairs = np.unique(codes.astype(np.int64) * max(ndocs, 1) + doc_of_token)  # sorted by (cell, doc)
    cells, docs = np.divmod(pairs, max(ndocs, 1))
    ivf_offsets = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(cells, minlength=nlist), out=ivf_offsets[1:])
    return docs.astype(np.int32), ivf_offsets


def doc_cells(ivf: np.ndarray, ivf_offsets: np.ndarray, ndocs: int, *,
              num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The inverted file transposed: (cells (npairs,), cell_offsets i64 (ndocs + 1,)), ascending cells.

    cells are uint16 when nlist <= 65536, else uint32 (the width an index stores its codes in)."""
    fn = "doc_cells"
    _check_threads(fn, num_threads)
    ivf = _array(ivf, fn, "ivf", np.int32, 1, "(npairs,)")
    ivf_offsets = _array(ivf_offsets, fn, "ivf_offsets", np.int64, 1, "(nlist + 1,)")
    nlist = ivf_offsets.shape[0] - 1
    _expect(1 <= nlist <= _MAX_NLIST_U32, f"{fn}: ivf_offsets must have nlist + 1 entries with nlist in "
                                          f"[1, 2**32], got {ivf_offsets.shape}")
    ndocs = _check_int(fn, "ndocs", ndocs, 0)
    _check_offsets(ivf_offsets, ivf.shape[0], "ivf_offsets")
    _expect(ivf.size == 0 or (int(ivf.min()) >= 0 and int(ivf.max()) < ndocs), "ivf: an entry is outside [0, ndocs)")
    cell_dtype = np.uint16 if nlist <= 1 << 16 else np.uint32
    cell_of_pair = np.repeat(np.arange(nlist, dtype=cell_dtype), np.diff(ivf_offsets))
    order = np.argsort(ivf, kind="stable")  # by document, cells ascending within (the ivf is cell-major)
    offsets = np.zeros(ndocs + 1, np.int64)
    np.cumsum(np.bincount(ivf, minlength=ndocs), out=offsets[1:])
    return cell_of_pair[order], offsets


def maxsim(Q: np.ndarray, values: np.ndarray, doc_offsets: np.ndarray, *, num_threads: int = 0) -> np.ndarray:
    """Exact MaxSim f32 (nq, ndocs) of queries (nq, qlen, d) against float documents (values, doc_offsets)."""
    fn = "maxsim"
    _check_threads(fn, num_threads)
    Q = _queries(fn, Q)
    values = _array(values, fn, "values", np.float32, 2, "(n, d)")
    doc_offsets = _array(doc_offsets, fn, "doc_offsets", np.int64, 1, "(ndocs + 1,)")
    _expect(values.shape[1] == Q.shape[2],
            f"{fn}: values must have shape (n, d) with d = {Q.shape[2]}, got {values.shape}")
    _expect(doc_offsets.shape[0] >= 1, f"{fn}: doc_offsets must have ndocs + 1 >= 1 entries, got 0")
    _check_offsets(doc_offsets, values.shape[0], "doc_offsets")
    out = np.zeros((Q.shape[0], doc_offsets.shape[0] - 1), np.float32)
    _maxsim_loop(Q, values, doc_offsets, out)
    return out


def centroid_scores(Q: np.ndarray, centroids_t: np.ndarray, *, num_threads: int = 0) -> np.ndarray:
    """Query-token x centroid scores S f32 (nq, qlen, nlist) = Q @ centroids_t, as one 2-D BLAS GEMM.

    The summation order (and threading) is BLAS's: close to, not bit-identical with, the native
    kernel's sequential sums.
    """
    fn = "centroid_scores"
    _check_threads(fn, num_threads)
    Q = _queries(fn, Q)
    centroids_t = _array(centroids_t, fn, "centroids_t", np.float32, 2, "(d, nlist)")
    nq, qlen, d = Q.shape
    nlist = centroids_t.shape[1]
    _expect(centroids_t.shape[0] == d, f"{fn}: centroids_t must have shape (d, nlist) with d = {d} "
                                       f"(the centroids transposed), got {centroids_t.shape}")
    _expect(1 <= nlist <= _MAX_NLIST_U32, f"{fn}: nlist (centroids_t.shape[1]) must be in [1, 2**32], got {nlist}")
    S = Q.reshape(nq * qlen, d) @ centroids_t
    return np.ascontiguousarray(S, dtype=np.float32).reshape(nq, qlen, nlist)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise symmetric int8 of the rows of x and their row sums: see plaidx.engine.cellq.quantize_rows."""
    fn = "quantize_rows"
    x = _array(x, fn, "x", np.float32, 2, "(n, d)")
    _expect(bool(np.isfinite(x).all()), f"{fn}: x must be finite (a value is NaN or infinite)")
    return cellq.quantize_rows(x)


def _kept_arrays(fn: str, kept: Any, Q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(vectors, scales or None) of a ``kept`` argument, checked against n tokens and the queries Q."""
    d = Q.shape[2]
    _expect(isinstance(kept, tuple) and len(kept) == 2,
            f"{fn}: kept must be the (vectors, scales) pair of the kept int8 vectors or (vectors, None) for "
            "float16 ones")
    if kept[1] is None:
        _expect(isinstance(kept[0], np.ndarray) and kept[0].dtype == np.float16,
                f"{fn}: kept = (vectors, None) needs float16 vectors (int8 ones come with their scales)")
        kv, ks = _array(kept[0], fn, "kept[0]", np.float16, 2, "(n, d)"), None
        shape = (kv.shape, (kv.shape[0],))
    else:
        kv = _array(kept[0], fn, "kept[0]", np.int8, 2, "(n, d)")
        ks = _array(kept[1], fn, "kept[1]", np.float32, 1, "(n,)")
        shape = (kv.shape, ks.shape)
    n = kv.shape[0] if n < 0 else n
    _expect(shape == ((n, d), (n,)),
            f"{fn}: kept must hold one row (and one scale, for int8) per token: (n, d) = {(n, d)}")
    if ks is not None:
        _expect(d <= cellq.MAX_QUANTIZED_DIM, f"{fn}: kept int8 vectors need d <= {cellq.MAX_QUANTIZED_DIM}")
        _expect(bool(np.isfinite(Q).all()),
                f"{fn}: quantised scores (cell_codes, kept, exact_int8) need finite query values")
    return kv, ks


def _doc_tokens(doc_offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of the documents docs, in order (int64), and their offsets within that list (len(docs) + 1,)."""
    starts, ends = doc_offsets[docs], doc_offsets[docs + 1]
    take = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if docs.size else np.zeros(0, np.int64)
    return take, np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)


def _kept_step(q: np.ndarray, kv: np.ndarray, ks: np.ndarray | None, doc_offsets: np.ndarray,
               docs: np.ndarray) -> np.ndarray:
    """Step 5 with kept vectors: f32 (m,) scores of one query (qlen, d) for the documents docs."""
    take, offs = _doc_tokens(doc_offsets, docs)
    if ks is None:
        return maxsim(q[None], np.ascontiguousarray(kv[take], dtype=np.float32), offs)[0]
    return cellq.kept_maxsim(q, kv[take], ks[take], offs)


def _exact_int8_step(q: np.ndarray, codes: np.ndarray, packed: np.ndarray, doc_offsets: np.ndarray,
                     docs: np.ndarray, centroids: np.ndarray, table: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Step 5 with exact_int8: f32 (m,) scores of one query (qlen, d) for the documents docs."""
    take, offs = _doc_tokens(doc_offsets, docs)
    v = np.empty((take.size, q.shape[1]), np.float32)
    _decompress_loop(codes[take], packed[take], centroids, table, levels, False, v)
    rows, scales = cellq.quantize_unit_rows(v)
    return cellq.kept_maxsim(q, rows, scales, offs)


ADC_MIN_NORM = np.float32(2.0 ** -14)  # the smallest norm token_scales divides by (1 / 2^-14 is a float16)


@njit(cache=False)
def _token_scales_loop(codes, packed, centroids, table, levels, out):
    v = np.empty(centroids.shape[1], np.float32)
    for t in range(codes.shape[0]):
        _decode(codes, packed, centroids, table, levels, t, v)
        lanes = np.zeros(8, np.float32)  # the squares summed in 8 lanes (j mod 8), then pairwise, as the native
        for j in range(v.shape[0]):
            lanes[j % 8] += v[j] * v[j]
        s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        norm = np.sqrt(s)
        out[t] = np.float32(1.0) / (ADC_MIN_NORM if norm < ADC_MIN_NORM else norm)


def _fill_token_scales(codes, packed, doc_offsets, centroids, table, levels, docs, scales, done) -> None:
    """search's token_scales_done: the scales of the documents in docs whose flag is 0, then their flags."""
    for doc in docs[done[docs] == 0]:
        lo, hi = int(doc_offsets[doc]), int(doc_offsets[doc + 1])
        out = np.empty(hi - lo, np.float32)
        _token_scales_loop(codes[lo:hi], packed[lo:hi], centroids, table, levels, out)
        scales[lo:hi] = out.astype(np.float16)
        done[doc] = 1


def token_scales(codes: np.ndarray, packed: np.ndarray, centroids: np.ndarray, weights: Any, nbits: int, *,
                 num_threads: int = 0) -> np.ndarray:
    """f32 (n,): 1 / max(|v_t|, 2**-14) of every decoded token v_t (not normalised; its squares summed in 8 lanes,
    j mod 8, then pairwise): the lookup-table exact stage's per-token scales (search's ``token_scales``, kept as
    float16)."""
    _check_threads("token_scales", num_threads)
    codes, packed, centroids, table, levels = _tokens("token_scales", codes, packed, centroids, weights, nbits)
    out = np.empty(codes.shape[0], np.float32)
    _token_scales_loop(codes, packed, centroids, table, levels, out)
    return out


def adc_entry_peak(pb: int) -> np.float32:
    """The lookup table's largest entry for pb packed bytes: 127, less where pb sums of 127 could leave int16."""
    return np.float32(127.0 if pb <= 252 else 32000 // pb)


def adc_table(q: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lookup table of one query (qlen, d) over a decode table (pb, 256, dpb) -> (lut int8 (pb, 256, qlen),
    u f32 (qlen,)): lut[p, b, a] = rint(<q[a, p*dpb:(p+1)*dpb], table[p, b]> * inv[a]), the products summed in
    order; inv[a] = E / bound[a], u[a] = bound[a] / E (0 and 0 where bound is 0), bound[a] = max_p sum_v
    |q[a, p*dpb + v]| * max_b |table[p, b, v]| (summed in order), E = adc_entry_peak(pb)."""
    qlen, d = q.shape
    pb, _, dpb = table.shape
    qs = q.reshape(qlen, pb, dpb)
    peak = np.abs(table).max(axis=1)  # (pb, dpb)
    per = np.abs(qs[:, :, 0]) * peak[None, :, 0]
    for v in range(1, dpb):
        per = per + np.abs(qs[:, :, v]) * peak[None, :, v]
    bound = per.max(axis=1).astype(np.float32)
    top = adc_entry_peak(pb)
    inv = np.where(bound > 0, top / np.where(bound > 0, bound, np.float32(1)), np.float32(0)).astype(np.float32)
    u = (bound / top).astype(np.float32)
    x = qs[None, :, :, 0].transpose(2, 0, 1) * table[:, :, 0][:, :, None]  # (pb, 256, qlen)
    for v in range(1, dpb):
        x = x + qs[None, :, :, v].transpose(2, 0, 1) * table[:, :, v][:, :, None]
    return np.rint(x * inv[None, None, :]).astype(np.int8), u


def _adc_step(q: np.ndarray, Sq: np.ndarray, codes: np.ndarray, packed: np.ndarray, doc_offsets: np.ndarray,
              docs: np.ndarray, table: np.ndarray, levels: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Step 5 with token_scales: f32 (m,) scores of one query (qlen, d), Sq (qlen, nlist) its cell scores."""
    lut, u = adc_table(q, table)
    take, offs = _doc_tokens(doc_offsets, docs)
    pb = table.shape[0]
    rows = packed[take]
    acc = np.zeros((take.size, q.shape[0]), np.int32)
    for p in range(pb):
        acc += lut[p, rows[:, p]]
    level = levels[rows[:, pb - 1] >> 4] if take.size else np.zeros(0, np.float32)
    tok = ((acc.astype(np.float32) * u[None]) * level[:, None] + Sq[:, codes[take].astype(np.int64)].T) \
        * scales[take].astype(np.float32)[:, None]
    out = np.zeros(docs.size, np.float32)
    for i in range(docs.size):
        if offs[i + 1] > offs[i]:
            out[i] = _sum_f32(tok[offs[i]:offs[i + 1]].max(axis=0))
    return out


def kept_scores(Q: np.ndarray, kept: Any, doc_offsets: np.ndarray, docs: np.ndarray, *,
                num_threads: int = 0) -> np.ndarray:
    """f32 (nq, m): step 5's score of each listed document over its kept vectors (see search's ``kept``)."""
    fn = "kept_scores"
    _check_threads(fn, num_threads)
    Q = _queries(fn, Q)
    doc_offsets = _array(doc_offsets, fn, "doc_offsets", np.int64, 1, "(ndocs + 1,)")
    docs = _array(docs, fn, "docs", np.int64, 1, "(m,)")
    kv, ks = _kept_arrays(fn, kept, Q, -1)
    _check_offsets(doc_offsets, kv.shape[0], "doc_offsets")
    _expect(docs.size == 0 or (int(docs.min()) >= 0 and int(docs.max()) < doc_offsets.shape[0] - 1),
            f"{fn}: an entry of docs is outside [0, ndocs)")
    out = np.zeros((Q.shape[0], docs.size), np.float32)
    for q in range(Q.shape[0]):
        out[q] = _kept_step(Q[q], kv, ks, doc_offsets, docs)
    return out


def search(Q: np.ndarray, S: np.ndarray | None, codes: np.ndarray, packed: np.ndarray, doc_offsets: np.ndarray,
           ivf: np.ndarray, ivf_offsets: np.ndarray, centroids: np.ndarray, weights: np.ndarray, nbits: int,
           allowed: np.ndarray, nprobe: int, threshold: float, ndocs: int, n_exact: int, k: int, *,
           num_threads: int = 0, doc_cells: Any = None,
           cell_codes: Any = None, kept: Any = None, exact_int8: bool = False,
           token_scales: Any = None, token_scales_done: Any = None,
           candidates: Any = None, max_list: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PLAID search, steps 1-5 of the contract -> (scores f32 (nq, k), docs i64 (nq, k)).

    doc_cells (the native kernel's shortcut) gives the same scores by definition and is not read here.
    cell_codes (quantize_rows(centroids)): with S None, the quantised cell scores.
    kept ((vectors int8 (n, d), scales f32 (n,))): step 5 over the kept int8 vectors (cellq.kept_maxsim).
    exact_int8: step 5 over the decompressed tokens quantised as unit vectors (cellq.quantize_unit_rows),
    scored as kept int8 rows are.
    token_scales (float16 (n,), token_scales(...) rounded): step 5 by lookup tables over the codes (adc_table)
    and the cell scores S, each token scaled by its entry.
    token_scales_done (uint8 (ndocs,), with token_scales): the scales derived on demand. Before step 5 scores a
    candidate whose flag is 0, its tokens' entries of token_scales are set (token_scales' values rounded to
    float16) and its flag to 1; both arrays are written.
    candidates (int64 (m,) distinct documents, ascending): steps 1-2 give the allowed ones of them, no cell probed.
    max_list (> 0): step 2 takes no documents from a probed cell whose list holds more than max_list (0: no limit).
    """
    fn = "search"
    _check_threads(fn, num_threads)
    Q = _queries(fn, Q)
    if S is not None:
        S = _array(S, fn, "S", np.float32, 3, "(nq, qlen, nlist)")
    ivf = _array(ivf, fn, "ivf", np.int32, 1, "(npairs,)")
    ivf_offsets = _array(ivf_offsets, fn, "ivf_offsets", np.int64, 1, "(nlist + 1,)")
    nq, qlen, d = Q.shape
    codes, packed, doc_offsets, centroids, (table, levels), allowed = _collection(
        fn, codes, packed, doc_offsets, centroids, weights, nbits, allowed, d)
    nlist, n_docs = centroids.shape[0], doc_offsets.shape[0] - 1
    if cell_codes is not None:
        _expect(isinstance(cell_codes, tuple) and len(cell_codes) == 3,
                f"{fn}: cell_codes must be the (codes, scales, sums) triple quantize_rows(centroids) returns")
        cq = _array(cell_codes[0], fn, "cell_codes[0]", np.int8, 2, "(nlist, d)")
        cs = _array(cell_codes[1], fn, "cell_codes[1]", np.float32, 1, "(nlist,)")
        sums = _array(cell_codes[2], fn, "cell_codes[2]", np.int32, 1, "(nlist,)")
        _expect(cq.shape == (nlist, d) and cs.shape == (nlist,) and sums.shape == (nlist,),
                f"{fn}: cell_codes must be quantize_rows(centroids): shapes (nlist, d) = {(nlist, d)}, (nlist,) "
                f"and (nlist,), got {cq.shape}, {cs.shape} and {sums.shape}")
        if S is None:
            _expect(d <= cellq.MAX_QUANTIZED_DIM,
                    f"{fn}: cell_codes need d <= {cellq.MAX_QUANTIZED_DIM}; search without them")
            _expect(bool(np.isfinite(Q).all()),
                    f"{fn}: quantised scores (cell_codes, kept, exact_int8) need finite query values")
            S = cellq.quantized_cell_scores(Q, (cq, cs, sums))
    kv = ks = None
    if kept is not None:
        _expect(not exact_int8, f"{fn}: exact_int8 scores the decompressed candidates, kept scores them by their "
                                "kept vectors: pass one or the other")
        kv, ks = _kept_arrays(fn, kept, Q, codes.shape[0])
    if token_scales is not None:
        _expect(not exact_int8 and kept is None,
                f"{fn}: token_scales make step 5 score the candidates by lookup tables; exact_int8 and kept are "
                "other ways of scoring them: pass one of the three")
        _expect(isinstance(token_scales, np.ndarray) and token_scales.dtype == np.float16,
                f"{fn}: token_scales must be a float16 array (n,): token_scales(...).astype(np.float16)")
        _expect(token_scales.shape == (codes.shape[0],),
                f"{fn}: token_scales must have shape (n,) = ({codes.shape[0]},), one per token")
    if token_scales_done is not None:
        _expect(token_scales is not None, f"{fn}: token_scales_done flags the documents whose token_scales are "
                                          "derived; give token_scales (a writable float16 array (n,), zeros where "
                                          "not derived yet) with it")
        token_scales_done = _array(token_scales_done, fn, "token_scales_done", np.uint8, 1, "(ndocs,)")
        _expect(token_scales_done.shape == (doc_offsets.shape[0] - 1,),
                f"{fn}: token_scales_done must have shape (ndocs,) = ({doc_offsets.shape[0] - 1},), one flag per "
                "document")
        _expect(token_scales.flags.writeable and token_scales_done.flags.writeable,
                f"{fn}: with token_scales_done the search writes token_scales and the flags: pass writable arrays")
    if exact_int8:
        _expect(d <= cellq.MAX_QUANTIZED_DIM, f"{fn}: exact_int8 needs d <= {cellq.MAX_QUANTIZED_DIM}; search "
                                              "without it")
        _expect(bool(np.isfinite(Q).all()),
                f"{fn}: quantised scores (cell_codes, kept, exact_int8) need finite query values")
    if S is None:
        S = centroid_scores(Q, np.ascontiguousarray(centroids.T))
    _expect(S.shape == (nq, qlen, nlist), f"{fn}: S must have shape (nq, qlen, nlist) = {(nq, qlen, nlist)}, "
                                          f"got {S.shape}")
    _expect(ivf_offsets.shape == (nlist + 1,),
            f"{fn}: ivf_offsets must have shape (nlist + 1,) = ({nlist + 1},), got {ivf_offsets.shape}")
    nprobe = _check_int(fn, "nprobe", nprobe, 1)
    ndocs = _check_int(fn, "ndocs", ndocs, 1)
    n_exact = _check_int(fn, "n_exact", n_exact, 1)
    k = _check_int(fn, "k", k, 1)
    max_list = _check_int(fn, "max_list", max_list, 0)
    threshold = float(threshold)
    _check_offsets(ivf_offsets, ivf.shape[0], "ivf_offsets")
    _expect(ivf.size == 0 or (int(ivf.min()) >= 0 and int(ivf.max()) < n_docs),
            "ivf: an entry is outside [0, ndocs)")
    if candidates is not None:
        candidates = _array(candidates, fn, "candidates", np.int64, 1, "(m,)")
        _expect(candidates.size == 0 or (int(candidates[0]) >= 0 and int(candidates[-1]) < n_docs
                                         and bool((np.diff(candidates) > 0).all())),
                f"{fn}: candidates must be distinct documents in [0, ndocs), ascending")
        if allowed.size:
            candidates = candidates[allowed[candidates] != 0]

    out_s = np.full((nq, k), -np.inf, np.float32)
    out_d = np.full((nq, k), -1, np.int64)
    all_cells = np.arange(nlist, dtype=np.int64)
    every_cell = np.ones(nlist, np.bool_)
    empty = np.diff(ivf_offsets) == 0
    for q in range(nq):
        Sq = S[q]
        if candidates is not None:
            cand = candidates
        else:
            # 1. probe: the nprobe best cells of every query token, cells with an empty list ranking as -inf
            Sp = np.where(empty, np.float32(-np.inf), Sq)
            probed = np.unique(np.concatenate([all_cells[_top(Sp[a], all_cells, nprobe)] for a in range(qlen)]))
            # 2. candidates: allowed documents of the probed cells' lists, but those longer than max_list
            lists = [ivf[ivf_offsets[c]:ivf_offsets[c + 1]] for c in probed
                     if not 0 < max_list < ivf_offsets[c + 1] - ivf_offsets[c]]
            cand = np.unique(np.concatenate(lists or [np.zeros(0, np.int32)])).astype(np.int64)
            if allowed.size:
                cand = cand[allowed[cand] != 0]
        # 3. pruned centroid scores over the kept cells, best ndocs
        keep = Sq.max(axis=0).astype(np.float64) >= threshold
        pruned = _centroid_scores(Sq, codes, doc_offsets, cand, keep)
        cand = cand[_top(pruned, cand, ndocs)]
        # 4. full centroid scores, best n_exact
        full = _centroid_scores(Sq, codes, doc_offsets, cand, every_cell)
        cand = cand[_top(full, cand, n_exact)]
        # 5. exact MaxSim over the decompressed tokens (or the quantised one over the kept vectors), best k
        if token_scales is not None:
            if token_scales_done is not None:
                _fill_token_scales(codes, packed, doc_offsets, centroids, table, levels, cand, token_scales,
                                   token_scales_done)
            exact = _adc_step(Q[q], Sq, codes, packed, doc_offsets, cand, table, levels, token_scales)
        elif exact_int8:
            exact = _exact_int8_step(Q[q], codes, packed, doc_offsets, cand, centroids, table, levels)
        elif kept is None:
            exact = _exact_scores(Q[q], codes, packed, doc_offsets, cand, centroids, table, levels)
        else:
            exact = _kept_step(Q[q], kv, ks, doc_offsets, cand)
        _write_top(exact, cand, k, out_s[q], out_d[q])
    return out_s, out_d


def exact_search(Q: np.ndarray, codes: np.ndarray, packed: np.ndarray, doc_offsets: np.ndarray,
                 centroids: np.ndarray, weights: np.ndarray, nbits: int, allowed: np.ndarray, k: int, *,
                 num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive MaxSim over every allowed document -> (scores f32 (nq, k), docs i64 (nq, k))."""
    fn = "exact_search"
    _check_threads(fn, num_threads)
    Q = _queries(fn, Q)
    nq, _, d = Q.shape
    codes, packed, doc_offsets, centroids, (table, levels), allowed = _collection(
        fn, codes, packed, doc_offsets, centroids, weights, nbits, allowed, d)
    k = _check_int(fn, "k", k, 1)
    n_docs = doc_offsets.shape[0] - 1
    docs = np.flatnonzero(allowed).astype(np.int64) if allowed.size else np.arange(n_docs, dtype=np.int64)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_d = np.full((nq, k), -1, np.int64)
    for q in range(nq):
        exact = _exact_scores(Q[q], codes, packed, doc_offsets, docs, centroids, table, levels)
        _write_top(exact, docs, k, out_s[q], out_d[q])
    return out_s, out_d


def build_info() -> dict[str, Any]:
    """What the reference backend has (same keys as the native module's build_info)."""
    return {
        "kernels": "reference",
        "openmp": False,
        "openmp_info": "reference backend (numpy/numba loops, single-threaded)",
        "max_threads": 1,
        "simd": "numba/LLVM for the host CPU",
        "simd_dispatch": "none",
        "compiler": f"numba {numba.__version__}, numpy {np.__version__}",
        "int8_vnni": False,
        "adc_copy": "reference",
        "int8_amx": False,
    }


NO_CENTROID = 0xFFFFFFFF  # an ids entry of a padding column of assign_nearest's panels


def assign_nearest(X: np.ndarray, coarse_t: np.ndarray, n_groups: int, panels: np.ndarray, pcol: np.ndarray,
                   ids: np.ndarray, nprobe: int, *, num_threads: int = 0, int8: Any = None) -> np.ndarray:
    """u32 (n,): each token's best centroid within its nprobe best groups (see the kernels' contract).
    ``int8`` (the native kernel's int8 candidate layout) does not change the codes and is not read here."""
    fn = "assign_nearest"
    _check_threads(fn, num_threads)
    X = _array(X, fn, "X", np.float32, 2, "(n, d)")
    coarse_t = _array(coarse_t, fn, "coarse_t", np.float32, 2, "(d, gp)")
    panels = _array(panels, fn, "panels", np.float32, 1, "(d * P,)")
    pcol = _array(pcol, fn, "pcol", np.int64, 1, "(G + 1,)")
    ids = _array(ids, fn, "ids", np.uint32, 1, "(P,)")
    n, d = X.shape
    G = _check_int(fn, "n_groups", n_groups, 1)
    nprobe = _check_int(fn, "nprobe", nprobe, 1)
    _check_dim(fn, d)
    _expect(coarse_t.shape[0] == d, f"{fn}: coarse_t must have d = {d} rows")
    _expect(coarse_t.shape[1] >= G and coarse_t.shape[1] % 8 == 0,
            f"{fn}: coarse_t must have a multiple of 8 columns, at least n_groups = {G}")
    _expect(pcol.shape[0] == G + 1, f"{fn}: pcol must have n_groups + 1 entries")
    P = ids.shape[0]
    _expect(P % 8 == 0 and panels.shape[0] == d * P, f"{fn}: panels must hold d * P floats, P = ids.size a "
                                                     "multiple of 8")
    _expect(nprobe <= G, f"{fn}: nprobe must be in [1, n_groups], got {nprobe}")
    _expect(int(pcol[0]) == 0 and int(pcol[-1]) == P, f"{fn}: pcol must run from 0 to P")
    for g in range(G):
        a, b = int(pcol[g]), int(pcol[g + 1])
        _expect(b > a and a % 8 == 0 and b % 8 == 0, f"{fn}: every group needs a non-empty column range starting "
                                                     "and ending on a multiple of 8 (pcol)")
        _expect(bool((ids[a:b] != NO_CENTROID).any()), f"{fn}: group {g} has no centroid (every id is 0xFFFFFFFF)")
    if n == 0:
        return np.zeros(0, np.uint32)
    cs = X @ coarse_t[:, :G]
    probes = np.argsort(-cs, axis=1, kind="stable")[:, :nprobe]  # best first, ties: the lower group
    best = np.full(n, -np.inf, np.float32)
    best_id = np.full(n, NO_CENTROID, np.uint32)
    for g in range(G):
        rows = np.flatnonzero((probes == g).any(axis=1))
        if rows.size == 0:
            continue
        a, b = int(pcol[g]), int(pcol[g + 1])
        real = np.flatnonzero(ids[a:b] != NO_CENTROID)
        s = X[rows] @ panels[d * a:d * b].reshape(d, b - a)[:, real]  # (rows, the group's centroids)
        cid = ids[a + real]
        # best per row, ties: the lower id
        top = s.max(axis=1)
        cand = np.where(s == top[:, None], cid[None, :].astype(np.int64), np.int64(NO_CENTROID) + 1).min(axis=1)
        take = (top > best[rows]) | ((top == best[rows]) & (cand < best_id[rows])) | (best_id[rows] == NO_CENTROID)
        best[rows[take]] = top[take]
        best_id[rows[take]] = cand[take].astype(np.uint32)
    return best_id
