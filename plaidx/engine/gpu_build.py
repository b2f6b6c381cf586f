"""The build on one CUDA GPU: faiss's k-means rules, nearest-centroid assignment and residual compression on the device.

``Index.build(..., device="cuda")`` runs the CPU pipeline of :mod:`.build` (same sample, same held-out
set, same codebook training, same files) with three steps swapped for their GPU twins through
:class:`BuildOps`:

* k-means: :func:`train_centroids` is :func:`.clustering.train_centroids` (two-level from 1024
  centroids, one global refinement) with each faiss k-means replaced by :func:`kmeans`, which follows
  faiss's ``Clustering::train`` step by step (the same random initial points from ``faiss.rand_perm``,
  the same point-order centroid sums, the same empty-cluster splitting with faiss's random generator,
  the same L2 normalisation), with the assignment and the sums on the GPU;
* assignment: the exact nearest centroid (argmax fused into the GEMM, csrc/cuda/build.cu);
* compression: tokens go to the GPU in batches of ``batch_tokens``; codes, packed residuals and
  residual norms come back. A worker thread reads (or decodes, or receives from an encoder) batch i + 1
  while the GPU compresses batch i, so device and host memory stay bounded by a few batches.

What differs from the CPU build (and only this): dot products are summed in another order, so a token
whose two best centroids score within float rounding of each other can take the other one (in k-means
too, which can then move a centroid slightly); the CPU assigns through an approximate search from 4096
centroids (an inverted file over the centroids, exact for about 95% of tokens) where the GPU is exact,
so from 4096 centroids the GPU codes are the nearest centroid more often, not identical.

The kernels are reached through a small interface (:class:`CudaKernels`); :class:`HostKernels` is its
numpy/CPU-kernel twin, the reference the GPU kernels are tested against and the way the orchestration
here is tested on machines without a GPU. It is never used by ``device="cuda"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from . import clustering, gpu, kernels
from .inputs import as_document, batches, prefetch

SPLIT_SEED = 1234  # faiss split_clusters: RandomGenerator rng(1234)
SPLIT_EPS = 1.0 / 1024.0  # faiss split_clusters: the symmetric perturbation of a split centroid
ASSIGN_ROWS = 1 << 20  # rows per one-shot assignment call (bounds device memory at about 4 * d MiB)


# ----------------------------------------------------------------------------------- kernels
class CudaKernels:
    """The build kernels of ``plaidx._cuda`` on one device."""

    def __init__(self, device: int):
        self.device = device
        self.mod = gpu.module()

    def kmeans_points(self, x: np.ndarray) -> Any:
        """float32 (n, d) points kept on the device: ``assign(centroids)``, ``update(nlist)``."""
        return self.mod.KMeans(x, device=self.device)

    def assign(self, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """int32 (n,): the nearest of centroids (nlist, d) for each row of float32 (n, d)."""
        out = np.empty(x.shape[0], np.int32)
        for lo in range(0, x.shape[0], ASSIGN_ROWS):
            out[lo:lo + ASSIGN_ROWS] = self.mod.assign(np.ascontiguousarray(x[lo:lo + ASSIGN_ROWS]), centroids,
                                                       device=self.device)[0]
        return out

    def compressor(self, centroids: np.ndarray, cutoffs: np.ndarray, nbits: int, chunk_rows: int) -> Any:
        """``compress(x) -> (codes u16 (n,), packed u8 (n, pb), norms f32 (n,))`` on the device."""
        return self.mod.Compressor(centroids, cutoffs, nbits, chunk_rows, device=self.device)


class _HostPoints:
    """HostKernels' k-means points: the CPU twin of ``plaidx._cuda.KMeans``."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.codes = np.zeros(self.x.shape[0], np.int32)

    def assign(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.codes, scores = _argmax_ip(self.x, centroids)
        return self.codes.copy(), scores

    def update(self, nlist: int) -> tuple[np.ndarray, np.ndarray]:
        sums = np.zeros((nlist, self.x.shape[1]), np.float32)
        np.add.at(sums, self.codes, self.x)  # unbuffered, in point order: faiss's summation order
        counts = np.bincount(self.codes, minlength=nlist).astype(np.float32)
        scale = np.zeros(nlist, np.float32)
        np.divide(np.float32(1.0), counts, out=scale, where=counts > 0)
        return sums * scale[:, None], counts


class _HostCompressor:
    def __init__(self, centroids: np.ndarray, cutoffs: np.ndarray, nbits: int):
        self.centroids, self.cutoffs, self.nbits = centroids, cutoffs, nbits

    def compress(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = _argmax_ip(x, self.centroids)[0]
        res = np.subtract(x, self.centroids[codes], dtype=np.float32)
        return codes.astype(np.uint16), kernels.compress(res, self.cutoffs, self.nbits), np.linalg.norm(res, axis=1)


class HostKernels:
    """The CPU twin of :class:`CudaKernels` (numpy argmax and sums, the native compress kernel): the
    reference for the GPU kernels' tests and for testing this module without a GPU."""

    device = None

    def kmeans_points(self, x: np.ndarray) -> _HostPoints:
        return _HostPoints(x)

    def assign(self, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        return _argmax_ip(np.ascontiguousarray(x, dtype=np.float32), centroids)[0]

    def compressor(self, centroids: np.ndarray, cutoffs: np.ndarray, nbits: int, chunk_rows: int) -> _HostCompressor:
        return _HostCompressor(centroids, cutoffs, nbits)


def _argmax_ip(x: np.ndarray, centroids: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """int32 (n,) nearest centroid (first of equal maxima) and float32 (n,) its inner product."""
    codes = np.empty(x.shape[0], np.int32)
    scores = np.empty(x.shape[0], np.float32)
    ct = np.ascontiguousarray(centroids.T)
    for lo in range(0, x.shape[0], rows):
        s = x[lo:lo + rows] @ ct
        codes[lo:lo + rows] = s.argmax(axis=1)
        scores[lo:lo + rows] = s[np.arange(s.shape[0]), codes[lo:lo + rows]]
    return codes, scores


# ----------------------------------------------------------------------------------- k-means
def renorm_rows(c: np.ndarray) -> np.ndarray:
    """faiss's fvec_renorm_L2 in place on float32 (k, d): rows with a positive norm scaled to unit length."""
    nr = np.einsum("ij,ij->i", c, c)
    pos = nr > 0
    inv = (1.0 / np.sqrt(nr[pos]).astype(np.float64)).astype(np.float32)
    c[pos] *= inv[:, None]
    return c


class _FaissFloats:
    """faiss's RandomGenerator(seed).rand_float(): std::mt19937 draws over 2**32, in float32."""

    def __init__(self, seed: int, block: int = 1 << 16):
        self.bits = np.random.MT19937()
        self.bits._legacy_seeding(seed)  # std::mt19937's init_genrand
        self.block = block
        self.buf = np.zeros(0, np.float32)
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        while self.buf.size - self.pos < n:
            raw = self.bits.random_raw(max(self.block, n)).astype(np.float32) / np.float32(4294967296.0)
            self.buf = np.concatenate([self.buf[self.pos:], raw])
            self.pos = 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


def split_empty_clusters(centroids: np.ndarray, hassign: np.ndarray, n: int) -> int:
    """faiss's split_clusters, in place: each empty centroid (in id order) takes a perturbed copy of a
    centroid drawn in proportion to its size (scanning ids cyclically from 0, one draw per step).

    Parameters
    ----------
    centroids : float32 (k, d)
    hassign : float32 (k,), points per centroid (updated as faiss does: an even split)
    n : number of points
    """
    k = centroids.shape[0]
    empty = np.flatnonzero(hassign == 0)
    if empty.size == 0:
        return 0
    rng = _FaissFloats(SPLIT_SEED)
    up, down = np.float64(1 + SPLIT_EPS), np.float64(1 - SPLIT_EPS)
    even = (np.arange(centroids.shape[1]) % 2) == 0
    for ci in empty:
        p = ((hassign.astype(np.float64) - 1.0) / np.float64(np.float32(n - k))).astype(np.float32)
        steps = 0
        while True:  # draws in blocks of k steps, from cj = 0
            r = rng.take(k)
            hit = np.flatnonzero(r < p)
            if hit.size:
                cj = int(hit[0])
                rng.pos -= k - cj - 1  # give back the draws after the hit
                break
            steps += k
        src = centroids[cj].astype(np.float64)
        centroids[ci] = np.where(even, src * up, src * down).astype(np.float32)
        centroids[cj] = np.where(even, src * down, src * up).astype(np.float32)
        hassign[ci] = hassign[cj] / np.float32(2)
        hassign[cj] -= hassign[ci]
    return int(empty.size)


def kmeans(x: np.ndarray, k: int, niter: int, seed: int, kernels_: Any, init: np.ndarray | None = None) -> np.ndarray:
    """Spherical k-means of every row of x, following faiss's ``Clustering::train`` (one redo, no
    subsampling): the device assigns and sums, the host splits empty clusters and normalises.

    Parameters
    ----------
    x : float32 (n, d), n >= k
    init : float32 (k, d) starting centroids, else k points chosen by ``faiss.rand_perm(n, seed + 1)``

    Returns
    -------
    float32 (k, d)
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means of {n} points into {k} centroids: need at least as many points as centroids")
    if not np.isfinite(x).all():
        raise ValueError("k-means input contains NaN or inf values")
    if n == k:
        return x.copy()  # faiss's corner case: the points are the centroids
    if init is None:
        perm = np.empty(n, np.int32)
        faiss.rand_perm(faiss.swig_ptr(perm), n, seed + 1)
        cents = x[perm[:k]].copy()
    else:
        cents = np.array(init, dtype=np.float32, copy=True)
    renorm_rows(cents)
    pts = kernels_.kmeans_points(x)
    for _ in range(max(1, niter)):
        pts.assign(cents)
        cents, counts = pts.update(k)
        cents = np.array(cents, dtype=np.float32, copy=True)
        split_empty_clusters(cents, np.array(counts, dtype=np.float32), n)
        renorm_rows(cents)
    return cents


def train_centroids(sample: np.ndarray, nlist: int, niters: int, seed: int, kernels_: Any, verbose: bool = False,
                    method: str = "auto") -> np.ndarray:
    """:func:`.clustering.train_centroids` with every faiss k-means and coarse search on ``kernels_``.

    Parameters
    ----------
    sample : float32 (m, d)

    Returns
    -------
    float32 (nlist, d), unit-norm rows.
    """
    def device_kmeans(x: np.ndarray, k: int, niters_: int, seed_: int, init: np.ndarray | None = None) -> np.ndarray:
        return kmeans(x, k, niters_, seed_, kernels_, init=init)

    return clustering.train_centroids(sample, nlist, niters, seed, verbose=verbose, method=method,
                                      kmeans_fn=device_kmeans, assign_fn=kernels_.assign)


# ----------------------------------------------------------------------------------- streaming
class DeviceAssigner:
    """:class:`.clustering.Assigner`'s interface over the device's exact assignment."""

    def __init__(self, centroids: np.ndarray, kernels_: Any):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.nlist = self.centroids.shape[0]
        gpu.check_codes_fit("cuda", self.nlist, "build")  # its ids are uint16 (Index.build checks this first)
        self.kernels = kernels_

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """uint16 (n,) centroid ids of float32 (n, d) embeddings."""
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.uint16)
        return self.kernels.assign(x, self.centroids).astype(np.uint16)


class EncodedCorpus:
    """Documents that are encoded on demand (text through a model, on the GPU): the source of a streaming
    build that never holds the collection's vectors, on the host or on the device.

    Subclasses give ``lengths`` (the token count each document will have, known before encoding, e.g.
    from tokenisation) and :meth:`encode`. The build reads its k-means sample with :meth:`gather_sample`
    and, on a GPU, compresses :meth:`blocks` while a worker thread encodes the next block. It is a
    sequence of :class:`LazyDocument` (shape known, encoded one by one on access) for the generic code.
    """

    def __init__(self, lengths: np.ndarray, dim: int):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or (self.lengths < 1).any():
            raise ValueError("EncodedCorpus: lengths must be a 1-D array of positive token counts")
        self.dim = int(dim)

    def encode(self, indices: np.ndarray) -> Any:
        """float32 (lengths[indices].sum(), d): the tokens of these documents in this order, as a numpy
        array or a C-contiguous CUDA tensor whose producing stream has been synchronised."""
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.lengths.size)

    def __getitem__(self, i: int) -> LazyDocument:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return LazyDocument(self, int(i) % len(self))

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def windows(self, docs: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
        """docs split into consecutive runs of about ``batch_tokens`` tokens (at least one document each)."""
        cum = np.cumsum(self.lengths[docs])
        out, lo, base = [], 0, 0
        while lo < docs.size:  # like batches(): a window closes once it holds batch_tokens tokens
            hi = min(int(np.searchsorted(cum, base + batch_tokens, side="left")) + 1, docs.size)
            out.append(docs[lo:hi])
            lo, base = hi, int(cum[hi - 1])
        return out

    def gather_sample(self, order: np.ndarray, start: int, want: int, dim: int | None,
                      batch_tokens: int = 1 << 16) -> tuple[np.ndarray, int]:
        """build.gather_sample's contract: up to ``want`` token rows of the documents order[start:], in
        that order (the last one contributes the rows that fit), float32 on the host, and the next position."""
        rest = np.asarray(order[start:], dtype=np.int64)
        if rest.size == 0 or want <= 0:
            return np.zeros((0, self.dim), np.float32), start
        cum = np.cumsum(self.lengths[rest])
        m = min(int(np.searchsorted(cum, want, side="left")) + 1, rest.size)
        take = rest[:m]
        x = np.empty((min(want, int(cum[m - 1])), self.dim), np.float32)
        got = 0
        for w in self.windows(take, batch_tokens):
            block = _host_block(self.encode(w), self.dim, int(self.lengths[w].sum()))
            n = min(block.shape[0], x.shape[0] - got)
            x[got:got + n] = block[:n]
            got += n
        return x, start + m


class LazyDocument:
    """One document of an :class:`EncodedCorpus`: its shape without encoding; encoded by ``np.asarray``."""

    def __init__(self, corpus: EncodedCorpus, i: int):
        self.corpus, self.i = corpus, i
        self.shape = (int(corpus.lengths[i]), corpus.dim)
        self.ndim = 2

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        x = _host_block(self.corpus.encode(np.array([self.i])), self.corpus.dim, self.shape[0])
        return x if dtype is None else x.astype(dtype)


def _is_cuda(block: Any) -> bool:
    return bool(getattr(block, "is_cuda", False)) or hasattr(block, "__cuda_array_interface__")


def _host_block(block: Any, dim: int, rows: int) -> np.ndarray:
    """A block from EncodedCorpus.encode as float32 (rows, dim) on the host, checked."""
    x = as_document(block, dim, "EncodedCorpus.encode(...)")
    if x.shape[0] != rows:
        raise ValueError(f"EncodedCorpus.encode returned {x.shape[0]} token rows where its lengths promise {rows}")
    return x


def _device_address(block: Any, dim: int, rows: int, device: int) -> int | None:
    """The device address of a CUDA float32 (rows, dim) C-contiguous block on ``device``, else None (the
    block then goes through the host: converting it here would race with the producer's stream)."""
    if tuple(block.shape) != (rows, dim):
        raise ValueError(f"EncodedCorpus.encode returned shape {tuple(block.shape)}, expected ({rows}, {dim})")
    if hasattr(block, "data_ptr"):  # torch, without importing it
        ok = (str(block.dtype) == "torch.float32" and block.is_contiguous()
              and getattr(block.device, "index", None) == device)
        return int(block.data_ptr()) if ok else None
    cai = getattr(block, "__cuda_array_interface__", None)
    if cai is None or cai.get("typestr") != "<f4" or cai.get("strides") not in (None, (4 * dim, 4)):
        return None
    return int(cai["data"][0])  # a foreign array's device is not checked here: use torch tensors for cuda:N > 0


@dataclass(frozen=True)
class BuildOps:
    """The device steps of a build (see the module docstring); ``build.build_generation(ops=...)``."""

    kernels: Any
    device: str
    timings: dict = field(default_factory=dict)  # the streamed pass: waiting for input, device, writing (s)

    def train_centroids(self, sample: np.ndarray, nlist: int, niters: int, seed: int, verbose: bool = False,
                        method: str = "auto") -> np.ndarray:
        return train_centroids(sample, nlist, niters, seed, self.kernels, verbose=verbose, method=method)

    def assigner(self, centroids: np.ndarray) -> DeviceAssigner:
        return DeviceAssigner(centroids, self.kernels)

    def compress_stream(self, docs: Iterable[Any], assigner: Any, codec: Any, codes_w: Any, res_w: Any,
                        batch_tokens: int, progress: bool, total: int | None = None,
                        lengths_out: list[int] | None = None, vectors_w: Any = None) -> float:
        """:func:`.build.compress_stream` on the device: batches read ahead by a worker thread, only
        codes, packed residuals and norms coming back (``vectors_w``, the rerank tier, is written from the
        host batch). Returns the residual norm sum."""
        from .build import progress_bar

        comp = self.kernels.compressor(np.ascontiguousarray(codec.centroids, dtype=np.float32),
                                       np.ascontiguousarray(codec.cutoffs, dtype=np.float32), codec.nbits,
                                       max(1, min(batch_tokens, 1 << 20)))
        norm_sum = 0.0
        it = iter(docs)
        first = next(it, None)
        if isinstance(first, LazyDocument) and first.i == 0:
            return self._compress_corpus(first.corpus, comp, codes_w, res_w, batch_tokens, progress, lengths_out,
                                         vectors_w)
        docs = progress_bar(_chain(first, it), total, "compressing", progress)
        clock = _Clock(self.timings)
        for x in clock.waiting(prefetch(batches(docs, codec.dim, batch_tokens, lengths_out))):
            with clock("device_s"):
                codes, packed, norms = comp.compress(x)
            with clock("write_s"):
                codes_w.append(codes)
                res_w.append(packed)
                if vectors_w is not None:
                    vectors_w.append(x)
            norm_sum += float(np.sum(norms, dtype=np.float64))
        return norm_sum

    def _compress_corpus(self, corpus: EncodedCorpus, comp: Any, codes_w: Any, res_w: Any, batch_tokens: int,
                         progress: bool, lengths_out: list[int] | None, vectors_w: Any) -> float:
        """The text pipeline: a worker thread encodes window i + 1 while the device compresses window i;
        a block already on this GPU is compressed in place (only compressed bytes come back)."""
        from .build import progress_bar

        wins = corpus.windows(np.arange(len(corpus)), batch_tokens)
        norm_sum = 0.0
        encoded = prefetch((w, corpus.encode(w)) for w in wins)
        clock = _Clock(self.timings)
        for w, block in clock.waiting(progress_bar(encoded, len(wins), "encoding+compressing", progress)):
            rows = int(corpus.lengths[w].sum())
            x = None
            with clock("device_s"):
                ptr = None
                if _is_cuda(block) and self.kernels.device is not None and vectors_w is None:
                    ptr = _device_address(block, corpus.dim, rows, self.kernels.device)
                if ptr is not None:
                    codes, packed, norms = comp.compress_device(ptr, rows)  # block stays referenced until here
                else:
                    x = _host_block(block, corpus.dim, rows)
                    codes, packed, norms = comp.compress(x)
            with clock("write_s"):
                if vectors_w is not None:
                    vectors_w.append(x)
                codes_w.append(codes)
                res_w.append(packed)
            norm_sum += float(np.sum(norms, dtype=np.float64))
            if lengths_out is not None:
                lengths_out.extend(corpus.lengths[w].tolist())
        return norm_sum

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device}
        if self.timings:
            out["stream_timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return out


class _Clock:
    """Adds elapsed seconds into a dict by name: ``with clock(name):`` and the time spent waiting for the
    items of an iterable (``wait_s``: the reader or encoder is behind)."""

    def __init__(self, into: dict):
        self.into = into
        self.name = ""
        for k in ("wait_s", "device_s", "write_s"):
            into.setdefault(k, 0.0)

    def __call__(self, name: str) -> _Clock:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.into[self.name] += time.perf_counter() - self.t0

    def waiting(self, items: Iterable[Any]) -> Iterable[Any]:
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.into["wait_s"] += time.perf_counter() - t0
                return
            self.into["wait_s"] += time.perf_counter() - t0
            yield item


def _chain(first: Any, rest: Any) -> Any:
    if first is not None:
        yield first
    yield from rest


def build_ops(device: Any) -> BuildOps | None:
    """The device steps for ``Index.build(device=...)``: None for the CPU; a clear error (with the
    reason from ``build_info()``) when a GPU is asked for and this build or machine has none."""
    index = gpu.resolve_device(device, purpose="build")
    if index is None:
        return None
    if not hasattr(gpu.module(), "Compressor"):
        raise RuntimeError("this plaidx._cuda was compiled before the GPU build kernels (csrc/cuda/build.cu); "
                           "rebuild plaidx (make setup, or pip install -e .) to build on a GPU")
    return BuildOps(CudaKernels(index), f"cuda:{index}")
