"""Coarse quantizer: the nlist rule, two-level spherical k-means (faiss) over a bounded sample, assignment."""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from . import kernels
from .cellq import quantize_int8
from .codec import COMPACT_TABLE_MIN_TOKENS as WIDE_NLIST_MIN_TOKENS  # 4-bit table there, 2x centroids
from .codec import code_dtype

# An explicit nlist may go this high: codes are uint16 up to 65536 centroids, uint32 above (format 4).
# A search keeps nlist * 32 floats of centroid scores per thread (512 MiB at this bound).
MAX_NLIST = 1 << 22
DEFAULT_MAX_NLIST = 1 << 14  # the square-root rule's ceiling; past it nlist follows the tokens (LARGE_*)
LARGE_TOKENS_PER_CENTROID = 64  # past that ceiling: about this many tokens a centroid
LARGE_MAX_NLIST = 1 << 18  # ... up to this many centroids (uint32 codes above 65536)


def default_nlist(n_tokens: int, nbits: int = 2, cap: int = LARGE_MAX_NLIST) -> int:
    """A power of two near 16 * sqrt(n_tokens) (PLAID's rule, rounded down), within [16, 16384]; from
    about 2.1M tokens on, one centroid per 64 tokens instead (rounded down to a power of two), up to
    ``cap`` (2**18; the GPU build passes 65536, what its kernels address).

    At nbits 1 and 2, from ``WIDE_NLIST_MIN_TOKENS`` tokens on, twice that (32 * sqrt(n_tokens)): the
    4-bit centroid table (format 3) costs what an int8 table of half the centroids cost, and the
    smaller residuals raise recall. On the 1M-token heavy-tailed family (16384 vs 8192 centroids, both
    34.7-35.3 bytes/token all-in) recall@10 with the default search rose from 0.821 to 0.865 and the
    exhaustive ceiling from 0.828 to 0.874, for +9% query CPU, +65% build CPU and +500 MiB build peak
    RSS (benchmarks/results/engine_heavytail-nl*_10000_nlist.md); on the low-rank family the
    ceiling rose +0.003 (codec_ceiling_summary.md). Smaller collections keep PLAID's rule.

    Past 16384 centroids the square-root rule lets each centroid's cell grow with the collection, and
    recall with it falls: on the synthetic family, 0.853 at 1M tokens, 0.786 at 10M and 0.782 at 32M with
    16384 centroids (benchmarks/results/scale_synthetic.md). Keeping about 64 tokens a centroid holds
    it: 0.837 at 10M with 131072 centroids. The grouped assignment and the larger k-means sample
    (``default_kmeans_sample``) keep such builds affordable. Above 65536 centroids the codes take 4
    bytes a token instead of 2. Never more centroids than a quarter of the tokens, so every centroid
    sees a few points.
    """
    if n_tokens <= 0:
        raise ValueError("cannot choose nlist for an empty collection")
    per_root = 32 if nbits <= 2 and n_tokens >= WIDE_NLIST_MIN_TOKENS else 16
    nlist = 1 << int(math.floor(math.log2(per_root * math.sqrt(n_tokens))))
    nlist = min(nlist, DEFAULT_MAX_NLIST, max(1, n_tokens // 4))
    if n_tokens >= LARGE_TOKENS_PER_CENTROID * 2 * DEFAULT_MAX_NLIST:
        nlist = max(nlist, min(cap, 1 << int(math.floor(math.log2(n_tokens // LARGE_TOKENS_PER_CENTROID)))))
    return max(1, min(max(16, nlist), n_tokens))


TWO_LEVEL_MIN_NLIST = 1024  # from here k-means trains a coarse level first, then each coarse cell
REFINE_PER_CENTROID = 10  # sample points per centroid of the final global k-means iterations (two-level)
REFINE_ITERS = 1  # global k-means iterations after the two-level one
ASSIGN_NPROBE = 8  # groups of centroids searched per token by the grouped assigner


KMEANS_SAMPLE_CAP = 1 << 20  # tokens of the k-means sample up to DEFAULT_MAX_NLIST centroids
KMEANS_SAMPLE_CAP_WIDE = 1 << 23  # above: 32 per centroid up to this (4 GiB of float32 at d 128)


def default_kmeans_sample(nlist: int, n_tokens: int) -> int:
    """Tokens used to train k-means: 80 per centroid, at most 2**20; above ``DEFAULT_MAX_NLIST``
    centroids at least 32 per centroid, at most 2**23.

    With the two-level k-means a larger sample costs little, and it places the centroids better: on the
    1M-token synthetic benchmark 80 rather than 40 points per centroid lift recall@10 by about 0.025
    (benchmarks/results/kmeans_*.md). A 2**20 cap alone would leave 8 points per centroid at 131,072.
    """
    cap = KMEANS_SAMPLE_CAP if nlist <= DEFAULT_MAX_NLIST else min(KMEANS_SAMPLE_CAP_WIDE,
                                                                    max(KMEANS_SAMPLE_CAP, 32 * nlist))
    return int(min(n_tokens, max(80 * nlist, 4096), cap))


def _kmeans(x: np.ndarray, k: int, niters: int, seed: int) -> np.ndarray:
    """faiss spherical k-means of every row of x (no subsampling), float32 (k, d)."""
    return _faiss_train(x, k, niters, seed, None)


def _refine(x: np.ndarray, init: np.ndarray, niters: int, seed: int) -> np.ndarray:
    """faiss spherical k-means of every row of x from the centroids ``init``, float32 (k, d)."""
    return _faiss_train(x, init.shape[0], niters, seed, init)


def _faiss_train(x: np.ndarray, k: int, niters: int, seed: int, init: np.ndarray | None) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], k, niter=max(1, niters), seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=max(1, (x.shape[0] + k - 1) // k), min_points_per_centroid=1)
    if init is None:
        km.train(np.ascontiguousarray(x))
    else:
        km.train(np.ascontiguousarray(x), init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def _faiss_kmeans(x: np.ndarray, k: int, niters: int, seed: int, init: np.ndarray | None = None) -> np.ndarray:
    """The default k-means step of :func:`train_centroids`: faiss, from scratch or from ``init``."""
    return _kmeans(x, k, niters, seed) if init is None else _refine(x, init, niters, seed)


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """int64 (n,): the nearest (max inner product) of ``centroids`` for each row of x, with faiss."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(x, 1)
    return nearest[:, 0]


KMEANS_METHODS = ("auto", "flat")


def check_kmeans_method(method: object) -> None:
    """A clear error for a ``kmeans`` value that is not one of KMEANS_METHODS."""
    if method not in KMEANS_METHODS:
        raise ValueError(f"kmeans must be one of {KMEANS_METHODS}, got {method!r}")


def train_centroids(sample: np.ndarray, nlist: int, niters: int, seed: int, verbose: bool = False,
                    method: str = "auto", *, kmeans_fn: Any = None, assign_fn: Any = None) -> np.ndarray:
    """Spherical k-means (inner product, unit centroids) with faiss, two-level from 1024 centroids.

    Flat k-means costs sample * nlist * d per iteration, the bulk of a build. From
    ``TWO_LEVEL_MIN_NLIST`` centroids the sample is first clustered into about sqrt(nlist) coarse
    cells, then each coarse cell into its share of the nlist centroids (in proportion to the points it
    holds): about sqrt(nlist) times less work, which is what makes a sample of 80 points per centroid
    affordable. One global iteration over ``REFINE_PER_CENTROID`` points per centroid then moves
    centroids crowded on coarse-cell borders. Deterministic for a given seed.

    Parameters
    ----------
    sample : float32 (m, d)
    nlist, niters, seed : int
    method : "auto" (two-level from ``TWO_LEVEL_MIN_NLIST`` centroids) or "flat" (one k-means over the
        whole sample: several times the k-means time at 16384 centroids, and on a collection of 1M
        short documents 0.01-0.03 more recall@10; see benchmarks/results/kmeans_synthetic_1000000_len32.md).
    kmeans_fn, assign_fn : the k-means ``(x, k, niters, seed, init=None) -> (k, d)`` and nearest-centroid
        ``(x, centroids) -> (n,)`` steps; default faiss on the CPU (the GPU build passes its device twins).

    Returns
    -------
    float32 (nlist, d), unit-norm rows.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    m, d = sample.shape
    if nlist > m:
        raise ValueError(f"nlist={nlist} exceeds the {m} tokens available to train it; choose nlist <= {m}")
    check_kmeans_method(method)
    kmeans_fn = kmeans_fn or _faiss_kmeans
    assign_fn = assign_fn or _nearest
    if nlist < TWO_LEVEL_MIN_NLIST or method == "flat":
        cents = kmeans_fn(sample, nlist, niters, seed)
    else:
        n_coarse = int(round(math.sqrt(nlist)))
        group = assign_fn(sample, kmeans_fn(sample, n_coarse, niters, seed))
        sizes = np.bincount(group, minlength=n_coarse)
        share = np.cumsum(sizes) * nlist // m  # centroids per coarse cell, in proportion, summing to nlist
        share[1:] -= share[:-1].copy()
        order = np.argsort(group, kind="stable")
        parts, start = [], 0
        for g in range(n_coarse):
            rows = sample[order[start:start + sizes[g]]]
            start += sizes[g]
            k = int(share[g])
            if k == 0:
                continue
            if k >= rows.shape[0]:  # a tiny coarse cell: its points are its centroids
                parts.append(rows[:k])
            else:
                parts.append(kmeans_fn(rows, k, niters, seed + 1 + g))
        cents = np.concatenate(parts, axis=0)
        if REFINE_PER_CENTROID > 0:
            # one global iteration over a subsample: centroids trained inside neighbouring coarse cells
            # crowd their shared border; this moves each to the mean of the points it wins over all
            # nlist centroids (faiss re-seeds any that win none)
            take = min(m, REFINE_PER_CENTROID * nlist)
            sub = sample[np.random.default_rng(seed).choice(m, take, replace=False)] if take < m else sample
            if nlist <= DEFAULT_MAX_NLIST or kmeans_fn is not _faiss_kmeans:
                cents = kmeans_fn(sub, nlist, REFINE_ITERS, seed, init=cents)
            else:  # a flat iteration would cost sub * nlist * d (176 TFLOP at 2**18): assign group by group
                cents = _lloyd_step(sub, cents, seed)
    norms = np.linalg.norm(cents, axis=1, keepdims=True)
    return np.ascontiguousarray(cents / np.maximum(norms, 1e-12), dtype=np.float32)


def _lloyd_step(x: np.ndarray, cents: np.ndarray, seed: int) -> np.ndarray:
    """One k-means iteration of ``cents`` over x with the grouped :class:`Assigner`: each centroid moves
    to the mean of the points it wins (a centroid that wins none stays where it is)."""
    codes = Assigner(cents, seed=seed).assign(x).astype(np.int64)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=cents.shape[0])
    won = np.flatnonzero(counts)
    sums = np.add.reduceat(x[order], np.concatenate([[0], np.cumsum(counts[won])[:-1]]), axis=0)
    out = cents.copy()
    out[won] = sums
    return out


GROUPED_MIN_NLIST = 1 << 12  # from here the assigner searches the centroids group by group


def assign_groups(nlist: int) -> int:
    """Groups of centroids the assigner splits ``nlist`` into: a power of two near 2 * sqrt(nlist)."""
    return max(1, min(nlist, 1 << int(round(math.log2(2 * math.sqrt(nlist))))))


class Assigner:
    """Nearest centroid (max inner product) of each token.

    Exact flat search (faiss) below ``GROUPED_MIN_NLIST`` centroids. From there the centroids are split
    into about 2 * sqrt(nlist) groups (spherical k-means of the centroids themselves, seeded) and each
    token is scored against the group centres, then against the centroids of its ``ASSIGN_NPROBE`` best
    groups (the native ``kernels.assign_nearest``, register-blocked and multi-threaded): about
    6 * sqrt(nlist) dot products a token (2 * sqrt(nlist) group centres, then 8 groups of about
    sqrt(nlist) / 2) instead of nlist. It finds the exact nearest centroid for 96-99.5% of tokens (more
    as nlist grows) and a near one otherwise; a token coded against a near rather than the nearest
    centroid only has a slightly larger residual. It assigns a token in 0.30-0.36x the time of the faiss
    inverted file it replaces (from 4096 centroids) and a seventh of the faiss HNSW graph (from 32768)
    (benchmarks/results/assign_synthetic.md).

    ``int8``: on CPUs with AVX-512 VNNI (``kernels.INT8_VNNI``, the default None) the kernel picks each
    token's candidate groups and centroids by int8 dot products and scores the near ones again in float32,
    which gives the float32 kernel's codes (``int8_layout``); False keeps the float32 kernel, True passes
    the int8 layout wherever the kernel may use it.
    """

    def __init__(self, centroids: np.ndarray, grouped_threshold: int = GROUPED_MIN_NLIST,
                 nprobe: int = ASSIGN_NPROBE, seed: int = 0, int8: bool | None = None):
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        nlist, d = centroids.shape
        self.nlist = nlist
        self.index = None
        self.int8 = None
        if nlist < grouped_threshold:
            index = faiss.IndexFlatIP(d)
            index.add(centroids)
            self.index = index
            return
        n_groups = assign_groups(nlist)
        centres = _kmeans(centroids, n_groups, 10, seed)
        group = _nearest(centroids, centres)
        keep = np.unique(group)  # a centre that won no centroid is dropped
        centres, group, n_groups = centres[keep], np.searchsorted(keep, group), keep.size
        order = np.argsort(group, kind="stable")
        sizes = np.bincount(group, minlength=n_groups)
        pcol = np.zeros(n_groups + 1, np.int64)
        # each group's columns padded to a multiple of 16 (one avx512 vector of floats, or of int8 dot products)
        np.cumsum((sizes + 15) // 16 * 16, out=pcol[1:])
        panels = np.zeros(d * int(pcol[-1]), np.float32)
        ids = np.full(int(pcol[-1]), 0xFFFFFFFF, np.uint32)
        start = 0
        for g, size in enumerate(sizes.tolist()):  # group g: its centroids transposed, (d, width) contiguous
            rows, a, b = order[start:start + size], int(pcol[g]), int(pcol[g + 1])
            start += size
            block = np.zeros((b - a, d), np.float32)
            block[:size] = centroids[rows]
            panels[d * a:d * b] = block.T.ravel()
            ids[a:a + size] = rows
        gp = (n_groups + 15) // 16 * 16
        coarse_t = np.zeros((d, gp), np.float32)
        coarse_t[:, :n_groups] = centres.T
        self._grouped = (coarse_t, n_groups, panels, pcol, ids, min(nprobe, n_groups))
        if (kernels.INT8_VNNI if int8 is None else int8) and d % 4 == 0:
            self.int8 = int8_layout(coarse_t, n_groups, panels, pcol, ids, centroids)

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """(n,) centroid ids of float32 (n, d) embeddings, as ``code_dtype(nlist)`` (uint16 up to 65536
        centroids, else uint32)."""
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=code_dtype(self.nlist))
        if self.index is not None:
            _, idx = self.index.search(x, 1)
            return idx[:, 0].astype(code_dtype(self.nlist))
        return kernels.assign_nearest(x, *self._grouped, int8=self.int8).astype(code_dtype(self.nlist), copy=False)


def _int8_block(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Columns (w, d) float32 as the int8 kernel reads them: their int8 values (d / 4, w, 4), scales (w,), the
    sums of their int8 values (w,), and each scale's rounding error bound (w,): 0 for a column that is exactly
    small integers times a scale (an index's stored centroids: 4-bit rows, integers in [-7, 7] times the row's
    peak / 7, ``codec.quantize_centroids4``; int8 rows times a power of two, ``codec.quantize_centroids``),
    else the scale of ``cellq.quantize_int8``'s rule."""
    q, scale = quantize_int8(cols)
    err = scale.copy()
    peak = np.maximum(np.abs(cols).max(axis=1), np.float32(1e-30))
    todo = np.ones(cols.shape[0], bool)
    for step in (peak / np.float32(7), np.exp2(np.ceil(np.log2(peak / np.float32(127))))):
        step = step.astype(np.float32)
        k = np.rint(cols / step[:, None])
        exact = todo & np.all(np.abs(cols - k * step[:, None]) <= np.float32(2.0 ** -22) * peak[:, None], axis=1)
        exact &= np.abs(k).max(axis=1) <= 127
        q[exact], scale[exact], err[exact] = k[exact].astype(np.int8), step[exact], 0.0
        todo &= ~exact
    w, d = cols.shape
    return (np.ascontiguousarray(q.reshape(w, d // 4, 4).transpose(1, 0, 2)).ravel(), scale,
            q.sum(axis=1, dtype=np.int32), err)


def int8_layout(coarse_t: np.ndarray, n_groups: int, panels: np.ndarray, pcol: np.ndarray, ids: np.ndarray,
                centroids: np.ndarray) -> tuple[np.ndarray, ...]:
    """The int8 copies of a grouped layout (``kernels.assign_nearest(..., int8=)``; csrc/cpu/assign.h
    AssignInt8): coarse_q, coarse_scale, coarse_sum, coarse_rows, panels_q, panel_scale, panel_sum,
    centroids, group_bound. Needs d % 4 == 0 and the columns of coarse_t and of every group in multiples
    of 16 (``Assigner``'s layout)."""
    d, gp = coarse_t.shape
    coarse_rows = np.ascontiguousarray(coarse_t.T)
    coarse_q, coarse_scale, coarse_sum, _ = _int8_block(coarse_rows)
    P = ids.shape[0]
    panels_q = np.zeros(d * P, np.int8)
    panel_scale = np.zeros(P, np.float32)
    panel_sum = np.zeros(P, np.int32)
    group_bound = np.zeros((n_groups, 2), np.float32)
    norms2 = np.einsum("nd,nd->n", centroids, centroids)
    for g in range(n_groups):
        a, b = int(pcol[g]), int(pcol[g + 1])
        cols = np.ascontiguousarray(panels[d * a:d * b].reshape(d, b - a).T)
        panels_q[d * a:d * b], panel_scale[a:b], panel_sum[a:b], err = _int8_block(cols)
        real = ids[a:b] != 0xFFFFFFFF
        group_bound[g] = (norms2[ids[a:b][real].astype(np.int64)].max(), (err[real] ** 2).max())
    return (coarse_q, coarse_scale, coarse_sum, coarse_rows, panels_q, panel_scale, panel_sum,
            np.ascontiguousarray(centroids, dtype=np.float32), group_bound)
