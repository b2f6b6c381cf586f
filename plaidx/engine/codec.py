"""Residual codecs over the residuals to the centroids: per-dimension scalar codebooks of 2**nbits buckets
("scalar", formats 1-4) or product quantisation with a per-token scale ("pq", format 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels

NBITS = (1, 2, 4, 8)
RESIDUAL_CODECS = ("scalar", "pq")
PQ_NBITS = (1, 2, 4)  # at nbits 8 a byte codes one dimension: pq would be the scalar codec
PQ_LEVELS = 16  # per-token residual scales, picked by the high nibble of a token's last packed byte
PQ_SIGNIFICANT_BITS = 12  # table entries and levels: their products are exact in float32
PQ_ARRAYS = ("pq_table", "pq_levels")  # what a pq index stores beside the scalar codec's arrays
MAX_NLIST_UINT16 = 1 << 16  # codes (centroid ids) are stored as uint16 up to this many centroids, uint32 above


def code_dtype(nlist: int) -> np.dtype:
    """The dtype of an index's codes (each token's centroid id) and of each document's cell list.

    uint16 up to ``MAX_NLIST_UINT16`` (65536) centroids, as every index before format 4 stores them;
    uint32 above (format 4). Two bytes more per token is the price of the larger nlist.
    """
    return np.dtype(np.uint16) if nlist <= MAX_NLIST_UINT16 else np.dtype(np.uint32)


def train_codebooks(residuals: np.ndarray, nbits: int, iters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Fit per-dimension Lloyd-Max quantizers to held-out residuals.

    Parameters
    ----------
    residuals : float32 (m, d)
        Held-out residuals (embedding minus its centroid).
    nbits : int
        Bits per dimension; 2**nbits buckets.

    Returns
    -------
    cutoffs : float32 (d, 2**nbits - 1)
        Ascending bucket boundaries, each halfway between two neighbouring weights, so every value
        between the outer weights decodes within half a bucket of itself.
    weights : float32 (d, 2**nbits)
        Ascending reconstruction value of each bucket (the mean of the residuals that fall in it).
    """
    if nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits!r}")
    r = np.asarray(residuals, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] == 0:
        raise ValueError("need a non-empty (m, d) sample of residuals to train the codec")
    nb = 1 << nbits
    xs = np.sort(r, axis=0).T  # (d, m)
    d, m = xs.shape
    csum = np.concatenate([np.zeros((d, 1)), np.cumsum(xs, axis=1)], axis=1)
    # ColBERTv2's starting point: quantiles at bucket mid-probabilities.
    weights = np.quantile(xs, (np.arange(nb) + 0.5) / nb, axis=1).T  # (d, nb)
    for _ in range(iters):
        weights = np.maximum.accumulate(weights, axis=1)
        cutoffs = (weights[:, 1:] + weights[:, :-1]) / 2
        edges = np.concatenate([np.zeros((d, 1), dtype=np.int64),
                                np.stack([np.searchsorted(xs[j], cutoffs[j], side="left") for j in range(d)]),
                                np.full((d, 1), m, dtype=np.int64)], axis=1)
        counts = np.diff(edges, axis=1)
        sums = np.take_along_axis(csum, edges[:, 1:], axis=1) - np.take_along_axis(csum, edges[:, :-1], axis=1)
        weights = np.where(counts > 0, sums / np.maximum(counts, 1), weights)
    weights = np.maximum.accumulate(weights, axis=1)
    cutoffs = (weights[:, 1:] + weights[:, :-1]) / 2
    return np.ascontiguousarray(cutoffs, dtype=np.float32), np.ascontiguousarray(weights, dtype=np.float32)


def quantize_centroids(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store centroids as int8 rows times a power-of-two scale per row (1 byte per dimension).

    The scale of a row is the smallest power of two s with max|row| / s <= 127, so every row uses
    values 64..127 in magnitude for its largest entry and ``q * s`` is exact in float32. Quantizing
    the dequantized centroids gives back the same bytes (a reused codec stores what it was given).
    The error is at most s / 2 per entry: about 1e-4 squared norm for a unit centroid at d 128,
    next to a 2-bit residual error near 5e-2.

    Returns
    -------
    q : int8 (nlist, d)
    scales : float32 (nlist,)
    """
    c = np.asarray(centroids, dtype=np.float32)
    peak = np.abs(c).max(axis=1)
    if not np.all(np.isfinite(peak)):
        raise ValueError("centroids contain NaN or inf")
    exp = np.ceil(np.log2(np.maximum(peak, np.float32(2.0 ** -100)) / 127.0))
    scales = np.ldexp(np.float32(1.0), exp.astype(np.int32)).astype(np.float32)
    q = np.clip(np.rint(c / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def dequantize_centroids(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 (nlist, d): the centroids that were compressed against (``q * scale``, exact)."""
    return np.multiply(q, np.asarray(scales, dtype=np.float32)[:, None], dtype=np.float32)


def quantize_centroids4(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store centroids as 4-bit rows times a float32 scale per row (half a byte per dimension).

    Row i is ``q * scales[i]`` with q in [-7, 7] and ``scales[i] = max|row| / 7``: the largest entry
    is exact and every entry is within half a step of itself. Two dimensions share a byte: dimension
    2k in the low nibble, 2k + 1 in the high one, each stored as q + 8 (1..15). Quantizing the
    dequantized centroids gives back the same bytes (a reused codec stores what it was given).

    Why it pays at nbits 1 and 2: residuals are taken against the stored (rounded) centroids, so the
    rounding only widens them slightly, and the table costs half as much. On the 1M-token low-rank
    family, int4 centroids at nlist 8192 keep the exhaustive recall@10 of int8 (0.894 vs 0.895), and
    the bytes saved pay for twice as many centroids (benchmarks/results/codec_ceiling_*.md).

    Returns
    -------
    packed : uint8 (nlist, d // 2)
    scales : float32 (nlist,)
    """
    c = np.asarray(centroids, dtype=np.float32)
    if c.ndim != 2 or c.shape[1] % 2:
        raise ValueError(f"centroids must be (nlist, d) with an even d, got shape {c.shape}")
    peak = np.abs(c).max(axis=1).astype(np.float64)
    if not np.all(np.isfinite(peak)):
        raise ValueError("centroids contain NaN or inf")
    scales = (peak / 7.0).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    q = (np.clip(np.rint(c / safe[:, None]), -7, 7) + 8).astype(np.uint8)  # 1..15
    return np.ascontiguousarray(q[:, 0::2] | (q[:, 1::2] << 4)), scales


def dequantize_centroids4(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 (nlist, 2 * packed.shape[1]): the centroids of :func:`quantize_centroids4`."""
    p = np.asarray(packed, dtype=np.uint8)
    q = np.empty((p.shape[0], 2 * p.shape[1]), np.float32)
    q[:, 0::2] = (p & 15).astype(np.float32) - 8
    q[:, 1::2] = (p >> 4).astype(np.float32) - 8
    return np.multiply(q, np.asarray(scales, dtype=np.float32)[:, None], dtype=np.float32)


COMPACT_TABLE_MIN_TOKENS = 1 << 18  # from here nbits 1 and 2 store 4-bit centroids (and take twice as many)


def centroid_arrays(centroids: np.ndarray, nbits: int, n_tokens: int | None = None) -> dict[str, np.ndarray]:
    """The arrays an index stores for its centroids.

    At nbits <= 2 for an index of at least ``COMPACT_TABLE_MIN_TOKENS`` tokens (or ``n_tokens`` None):
    4-bit rows and a scale each (``quantize_centroids4``, format 3; half a byte per dimension), whose
    saved bytes pay for the doubled default nlist there (clustering.default_nlist). Smaller nbits 1-2
    indexes keep int8 rows (``quantize_centroids``): with the same nlist, 4-bit rows cost recall
    (cranfield, d 384, 4096 centroids: exhaustive recall@10 0.940 vs 0.946). At nbits 4 and 8: float16,
    because a coarser table's error would be a visible part of the residual error.
    """
    if nbits <= 2:
        if n_tokens is None or n_tokens >= COMPACT_TABLE_MIN_TOKENS:
            q, scales = quantize_centroids4(centroids)
        else:
            q, scales = quantize_centroids(centroids)
        return {"centroids": q, "centroid_scales": scales}
    return {"centroids": np.asarray(centroids, dtype=np.float32).astype(np.float16)}


def reused_table(arrays: dict[str, np.ndarray], nbits: int) -> dict[str, np.ndarray] | None:
    """The centroid arrays of a codec source (an index's stored arrays) that an index built with
    ``codec_from`` stores verbatim, so that both hold the same codec bit for bit whatever their sizes
    (a shard of a few tokens and a codec trained on many). None for a format 1 source, whose float16
    table at nbits 1-2 is re-quantised to what format 3 stores (``centroid_arrays``)."""
    if nbits <= 2 and arrays["centroids"].dtype == np.float16:
        return None
    return {name: np.array(arrays[name]) for name in ("centroids", "centroid_scales") if name in arrays}


def stored_centroids(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """float32 (nlist, d): the centroids an index compressed against, from what it stores (4-bit or int8
    rows and scales, or float16)."""
    kind = arrays["centroids"].dtype
    if kind == np.uint8:
        return dequantize_centroids4(arrays["centroids"], arrays["centroid_scales"])
    if kind == np.int8:
        return dequantize_centroids(arrays["centroids"], arrays["centroid_scales"])
    return np.ascontiguousarray(arrays["centroids"], dtype=np.float32)


PQ_MIN_TOKEN_BITS = 409_600  # tokens * nbits from which the pq table (256 d floats) is <= 2% of the residual bytes
PQ_DEFAULT_NBITS = (1, 2)  # at nbits 4 pq gains less (+0.004 to +0.014) and trains 64 or more sub-quantisers


def default_residual_codec(nbits: int, n_tokens: int, gpu_build: bool = False) -> str:
    """The residual codec of a build that names none: "pq" at nbits 1 and 2 where its table (256 d floats) is at
    most 2% of the residual bytes (from 204,800 tokens at nbits 2, 409,600 at nbits 1), "scalar" otherwise and
    in a GPU build (whose kernels code residuals the scalar way).

    Measured with the same centroids on five synthetic families and three real sets (benchmarks/results/
    pq_codec_*.md): pq's recall@10 was higher on every one, exhaustive and at the default search, for
    0.93-1.19x the default search's p50. At nbits 4 it gains less (+0.004 to +0.014 exhaustive) for a build
    2-6x as long (d / 2 sub-quantisers to train), so there it is opt-in."""
    if gpu_build or nbits not in PQ_DEFAULT_NBITS or n_tokens * nbits < PQ_MIN_TOKEN_BITS:
        return "scalar"
    return "pq"


def check_residual_codec(residual_codec: Any, nbits: int) -> str | None:
    """The residual codec name (None: chosen by :func:`default_residual_codec`), or a ValueError that names the
    choices."""
    if residual_codec is None:
        return None
    if residual_codec not in RESIDUAL_CODECS:
        raise ValueError(f"residual_codec must be None or one of {RESIDUAL_CODECS}, got {residual_codec!r}")
    if residual_codec == "pq" and nbits not in PQ_NBITS:
        raise ValueError(f"residual_codec='pq' needs nbits in {PQ_NBITS} (a byte codes several dimensions), got "
                         f"nbits={nbits}; use residual_codec='scalar' at nbits 8")
    return residual_codec


def round_significand(x: np.ndarray, bits: int = PQ_SIGNIFICANT_BITS) -> np.ndarray:
    """float32 x rounded (to nearest, ties away from zero) to ``bits`` significant bits.

    Two such numbers multiply exactly in float32 when their bits add up to at most 24, so
    ``c + s * w`` rounds once whether or not a compiler fuses it into a multiply-add: every decoder (C++,
    CUDA, numba) gives the same bytes. The relative error, 2**-bits, is far below the codec's."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    drop = 24 - bits
    r = ((u.astype(np.uint64) + (1 << (drop - 1))) & ~np.uint64((1 << drop) - 1)).astype(np.uint32)
    return r.view(np.float32)


def _pq_sub(residuals: np.ndarray, m: int, dsub: int, ksub_bits: int, seed: int) -> np.ndarray:
    """Codebooks float32 (m, 2**ksub_bits, dsub) of a faiss product quantiser trained on residuals (n, m * dsub)."""
    import faiss

    x = np.ascontiguousarray(residuals, dtype=np.float32)
    ksub = 1 << ksub_bits
    if x.shape[0] < ksub:  # too few rows for ksub codewords: repeat them (the spare codewords duplicate some)
        x = np.ascontiguousarray(np.resize(x, (ksub, x.shape[1])))
    pq = faiss.ProductQuantizer(m * dsub, m, ksub_bits)
    pq.cp.seed = seed
    pq.cp.niter = 12
    pq.cp.max_points_per_centroid = 128  # 32768 rows per sub-quantiser: ~1 s for all 32 at d 128
    pq.cp.min_points_per_centroid = 1  # small indexes train on what they have, without faiss's warning
    pq.verbose = False
    pq.train(x)
    return faiss.vector_to_array(pq.centroids).reshape(m, ksub, dsub)


def train_pq(residuals: np.ndarray, nbits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit the pq residual codec (format 5) to held-out residuals.

    Every packed byte codes dpb = 8 / nbits dimensions: byte p < pb - 1 one of 256 codewords of its
    sub-vector, the last byte one of 16 in its low nibble and, in its high nibble, the token's residual
    scale (one of ``PQ_LEVELS``, log-spaced over the 0.5-99.5% range of the least-squares scales of the
    held-out residuals). Same bytes per token as the scalar codec.

    Returns
    -------
    table : float32 (pb, 256, dpb)
        The decode table the kernels read: ``table[p, byte]`` is sub-vector p's codeword (for the last
        byte, that of its low nibble). Entries rounded to 12 significant bits.
    levels : float32 (16,)
        Ascending residual scales, rounded to 12 significant bits.
    """
    check_residual_codec("pq", nbits)
    r = np.ascontiguousarray(residuals, dtype=np.float32)
    if r.ndim != 2 or r.shape[0] == 0:
        raise ValueError("need a non-empty (m, d) sample of residuals to train the codec")
    d = r.shape[1]
    dpb = 8 // nbits
    pb = d // dpb
    table = np.empty((pb, 256, dpb), np.float32)
    if pb > 1:
        table[:-1] = _pq_sub(r[:, : d - dpb], pb - 1, dpb, 8, seed)
    last = _pq_sub(r[:, d - dpb:], 1, dpb, 4, seed)[0]  # (16, dpb)
    table[-1] = last[np.arange(256) & 15]
    table = np.ascontiguousarray(round_significand(table).reshape(pb, 256, dpb))
    codes = kernels.pq_encode(r, table, np.ones(PQ_LEVELS, np.float32), nbits)
    codes[:, -1] &= 15
    s = _ls_scales(r, _pq_lookup(codes, table))
    lo, hi = np.log2(np.clip(np.quantile(s, [0.005, 0.995]), 1.0 / 64, 64.0))
    levels = 2.0 ** (lo + np.arange(PQ_LEVELS) / (PQ_LEVELS - 1) * max(hi - lo, 1e-6))
    return table, round_significand(levels.astype(np.float32))


def _pq_lookup(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """float32 (n, d): the codewords of codes (n, pb), unscaled."""
    pb, _, dpb = table.shape
    return table[np.arange(pb), codes.astype(np.intp)].reshape(codes.shape[0], pb * dpb)


def _ls_scales(r: np.ndarray, rh: np.ndarray) -> np.ndarray:
    """float64 (n,): the least-squares scale of rh towards r per row (1 where rh is 0)."""
    num = np.einsum("nd,nd->n", r, rh, dtype=np.float64)
    den = np.einsum("nd,nd->n", rh, rh, dtype=np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


def pq_compress(residuals: np.ndarray, table: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """uint8 (n, pb): residuals coded with a pq table and its scale levels (see :func:`train_pq`).

    Each sub-vector takes its nearest codeword; the token's scale is the level nearest its least-squares
    scale (which minimises the squared error of the scaled residual among the levels): kernels.pq_encode."""
    dpb = np.shape(table)[2]
    return kernels.pq_encode(np.ascontiguousarray(residuals, dtype=np.float32), table, levels, 8 // dpb)


@dataclass(frozen=True)
class ResidualCodec:
    """Centroids plus the residual codebooks; compresses embeddings to (codes, packed residuals).

    Attributes
    ----------
    centroids : float32 (nlist, d)
    cutoffs : float32 (d, 2**nbits - 1)
    weights : float32 (d, 2**nbits)
    nbits : int
    pq_table : float32 (pb, 256, dpb) or None
        The pq codec's decode table (format 5; :func:`train_pq`); None for the scalar codec. A pq index
        also stores the scalar codebooks trained beside it (cutoffs, weights), which its decode does not use.
    pq_levels : float32 (16,) or None
        The pq codec's per-token residual scales.
    """

    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    nbits: int
    pq_table: np.ndarray | None = None
    pq_levels: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """The residual codec: "scalar" or "pq"."""
        return "scalar" if self.pq_table is None else "pq"

    def pq_arrays(self) -> dict[str, np.ndarray]:
        """The arrays an index stores for the pq codec (none for the scalar codec)."""
        if self.pq_table is None:
            return {}
        return {"pq_table": self.pq_table, "pq_levels": self.pq_levels}

    @property
    def kernel_weights(self) -> Any:
        """The ``weights`` argument of the kernels (kernels.py): the bucket weights, or (table, levels)."""
        return self.weights if self.pq_table is None else (self.pq_table, self.pq_levels)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def packed_dim(self) -> int:
        return self.dim * self.nbits // 8

    def residuals(self, embeddings: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """float32 (n, d): embeddings minus the centroid of each code."""
        return np.subtract(embeddings, self.centroids[codes.astype(np.intp)], dtype=np.float32)

    def compress(self, embeddings: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed residual codes uint8 (n, pb) and the residual L2 norms float32 (n,)."""
        res = np.ascontiguousarray(self.residuals(embeddings, codes))
        if self.pq_table is not None:
            return pq_compress(res, self.pq_table, self.pq_levels), np.linalg.norm(res, axis=1)
        return kernels.compress(res, self.cutoffs, self.nbits), np.linalg.norm(res, axis=1)

    def decompress(self, codes: np.ndarray, packed: np.ndarray, normalize: bool = True) -> np.ndarray:
        """float32 (n, d) reconstructed embeddings (unit length when ``normalize``).

        codes: integer (n,); uint32 codes are passed as they are, others converted to this codec's
        :func:`code_dtype` (uint16 up to 65536 centroids).
        """
        codes = np.asarray(codes)
        dtype = np.uint32 if codes.dtype == np.uint32 else code_dtype(self.centroids.shape[0])
        return kernels.decompress(np.ascontiguousarray(codes, dtype=dtype), np.ascontiguousarray(packed),
                                   self.centroids, self.kernel_weights, self.nbits, bool(normalize))
