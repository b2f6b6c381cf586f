"""Quantised cell scores: the int8 first stage of the PLAID search, in numpy (the reference's values).

The search's first stage scores every query token against every centroid. With ``cell_codes`` (the
centroids quantised row-wise to int8 once, at open) the native kernel quantises the query tokens the same
way and scores with integer dot products: on CPUs with AVX-512 VNNI four times fewer instructions than
float32, and exact, so the scores do not depend on the instruction set, the summation order or the device.
This module is the numpy statement of those values (csrc/cpu/quantize.h is the C++ one).
"""

from __future__ import annotations

import numpy as np

# 127 * 127 * d < 2**24: the int8 dot products are exact float32 sums in any order.
MAX_QUANTIZED_DIM = 1024


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 rows with one float32 scale per row (the row's peak maps to +-127).

    Parameters
    ----------
    x : float32 (n, d), finite

    Returns
    -------
    q : int8 (n, d), scales : float32 (n,) = max(peak, 1e-30) / 127, with ``x ~= q * scales[:, None]`` (error
    at most scale / 2). Every step is one float32 operation, as in the native kernel (csrc/cpu/quantize.h),
    so both give the same bytes. Quantizing ``q * scales[:, None]`` again gives back ``q``.
    """
    x = np.asarray(x, dtype=np.float32)
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    scales = (np.maximum(peak, np.float32(1e-30)) / np.float32(127)).astype(np.float32)
    q = np.clip(np.rint(x / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quantize_int8(x) and q's row sums int32 (n,) (the native VNNI kernel's offset correction)."""
    q, s = quantize_int8(x)
    return q, s, q.sum(axis=1, dtype=np.int32)


def quantized_scores(qq: np.ndarray, qs: np.ndarray, rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """f32 (m, n) = (float(<rows[t], qq[a]>) * scales[t]) * qs[a] for quantised query tokens (qq, qs) and int8 rows.

    Every partial sum of an int8 dot product is an integer below 2**24 for d <= MAX_QUANTIZED_DIM, so BLAS's
    float32 GEMM gives the exact dot products whatever its summation order.
    """
    dots = qq.astype(np.float32) @ rows.astype(np.float32).T
    return (dots * scales[None, :]) * qs[:, None]


def quantize_unit_rows(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact stage's int8 rows (search with ``exact_int8``): decoded tokens v f32 (n, d), not normalised,
    quantised as their unit vectors would be, without normalising them first.

    p = max(max_j |v_j|, 1e-30); q = rint(v * (127 / p)) (within [-127, 127] by construction); scale =
    (p / 127) / max(||v||, 1e-12), so q * scale ~= v / ||v||. Each step is one float32 operation, so the
    native kernels give the same bytes; ||v|| is summed in another order there, so a scale may differ in its
    last bit (csrc/cpu/quantize.h: quantize_unit_rows).
    """
    v = np.asarray(v, dtype=np.float32)
    p = np.maximum(np.abs(v).max(axis=1), np.float32(1e-30)) if v.shape[1] else np.full(v.shape[0], 1e-30, np.float32)
    q = np.clip(np.rint(v * (np.float32(127) / p)[:, None]), -127, 127).astype(np.int8)
    norm = np.maximum(np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float32)), np.float32(1e-12))
    return q, ((p / np.float32(127)) / norm).astype(np.float32)


def kept_maxsim(q: np.ndarray, rows: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """f32 (ndocs,): the quantised MaxSim of one query q (qlen, d) over int8 token rows (the int8 rerank tier).

    Document i owns rows[offsets[i]:offsets[i+1]]; its score is sum_a max_t of quantized_scores, the maxima
    summed over a in order from 0 in float32, as the native search's step 5 with ``kept`` (bit for bit), and 0
    for a document without rows.
    """
    qq, qs, _ = quantize_rows(np.ascontiguousarray(q, dtype=np.float32))
    out = np.zeros(offsets.size - 1, np.float32)
    if rows.shape[0] == 0:
        return out
    owned = offsets[1:] > offsets[:-1]
    best = np.maximum.reduceat(quantized_scores(qq, qs, rows, scales), offsets[:-1][owned], axis=1)
    for a in range(best.shape[0]):  # the native order of the sum over query tokens
        out[owned] += best[a]
    return out


def quantized_cell_scores(Q: np.ndarray, cell_codes: tuple[np.ndarray, ...]) -> np.ndarray:
    """S f32 (nq, qlen, nlist) = (float(<qc[c], qa[a]>) * sc[c]) * sa[a] for finite queries Q (nq, qlen, d).

    (qc, sc, _) = cell_codes = quantize_rows(centroids); (qa, sa, _) = quantize_rows of the query tokens. Every
    partial sum of an int8 dot product is an integer below 2**24 for d <= MAX_QUANTIZED_DIM, so BLAS's
    float32 GEMM gives the exact dot products whatever its summation order.
    """
    cq, cs = cell_codes[0], cell_codes[1]
    nq, qlen, d = Q.shape
    qq, qs, _ = quantize_rows(np.ascontiguousarray(Q.reshape(nq * qlen, d), dtype=np.float32))
    S = quantized_scores(qq, qs, cq, cs)
    return np.ascontiguousarray(S, dtype=np.float32).reshape(nq, qlen, cq.shape[0])
