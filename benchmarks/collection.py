"""On-disk benchmark collections (values, offsets, queries as .npy) and their exact MaxSim ground truth."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = Path(os.environ.get("PLAIDX_BENCH_CACHE", RESULTS_DIR / "cache"))


@dataclass
class Collection:
    """A ragged multi-vector collection stored in one folder.

    Files: ``values.npy`` float32 (n_tokens, d) (memory-mapped; float16 for collections too large to store
    in float32, read back as float32), ``offsets.npy`` int64 (n_docs + 1,) with
    offsets[0] == 0 and offsets[-1] == n_tokens, ``queries.npy`` float32 (nq, q_tokens, d), ``meta.json``.
    """

    path: Path
    values: np.ndarray
    offsets: np.ndarray
    queries: np.ndarray
    meta: dict

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def values_path(self) -> Path:
        return self.path / "values.npy"

    @property
    def offsets_path(self) -> Path:
        return self.path / "offsets.npy"

    @property
    def queries_path(self) -> Path:
        return self.path / "queries.npy"

    def doc(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, d) token rows read with plain file I/O into a fresh array.

        Unlike slicing the memory map, this leaves no file-backed pages mapped, so the reader's RSS
        (the figure a build benchmark reports) counts only what the engine itself keeps.
        """
        d, dt = self.dim, self.values.dtype
        rows = np.fromfile(self.values_path, dtype=dt, count=(stop - start) * d,
                           offset=int(self.values.offset) + int(start) * d * dt.itemsize).reshape(stop - start, d)
        return rows if dt == np.float32 else rows.astype(np.float32)

    def iter_batches(self, docs_per_batch: int = 2048) -> Iterator[list[np.ndarray]]:
        """Documents as batches (lists of float32 (n_i, d) arrays), one batch in memory at a time."""
        for lo in range(0, self.n_docs, docs_per_batch):
            hi = min(self.n_docs, lo + docs_per_batch)
            block = self.read_rows(self.offsets[lo], self.offsets[hi])
            base = self.offsets[lo]
            yield [block[self.offsets[i] - base:self.offsets[i + 1] - base] for i in range(lo, hi)]

    def iter_docs(self, docs_per_batch: int = 2048) -> Iterator[np.ndarray]:
        for batch in self.iter_batches(docs_per_batch):
            yield from batch

    def lazy_docs(self) -> LazyDocs:
        """The documents as a sequence (len and indexing) whose items read their rows only when converted
        to an array: a build takes its length from it and reads each document when it needs it, without
        spilling a one-shot iterable to disk (a 100M-token collection would need 25-51 GB more)."""
        return LazyDocs(self)


class LazyDoc:
    """One document of a Collection: ``shape`` without reading, float32 rows on ``np.asarray``."""

    __slots__ = ("coll", "lo", "hi")
    ndim = 2

    def __init__(self, coll: Collection, lo: int, hi: int):
        self.coll, self.lo, self.hi = coll, lo, hi

    @property
    def shape(self) -> tuple[int, int]:
        return (self.hi - self.lo, self.coll.dim)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self.coll.read_rows(self.lo, self.hi)
        return rows if dtype is None else rows.astype(dtype, copy=False)


class LazyDocs:
    """Sequence of a Collection's documents as LazyDoc items."""

    def __init__(self, coll: Collection):
        self.coll = coll

    def __len__(self) -> int:
        return self.coll.n_docs

    def __getitem__(self, i: int) -> LazyDoc:
        if not 0 <= i < self.coll.n_docs:
            raise IndexError(i)
        return LazyDoc(self.coll, int(self.coll.offsets[i]), int(self.coll.offsets[i + 1]))


def is_complete(path: Path) -> bool:
    return (path / "meta.json").exists() and all(
        (path / f).exists() for f in ("values.npy", "offsets.npy", "queries.npy"))


def load_collection(path: str | os.PathLike) -> Collection:
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"no complete collection in {path}")
    return Collection(path=path, values=np.load(path / "values.npy", mmap_mode="r"),
                      offsets=np.load(path / "offsets.npy"), queries=np.load(path / "queries.npy"),
                      meta=json.loads((path / "meta.json").read_text()))


def write_meta(path: Path, meta: dict) -> None:
    """Write meta.json last (atomically): its presence marks the collection complete."""
    tmp = path / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, path / "meta.json")


def _segment_max_sum(block: np.ndarray, starts: np.ndarray, q_tokens: int) -> np.ndarray:
    """(nq*q_tokens, n_tok) similarities -> (nq, n_docs) MaxSim, with starts the docs' first columns."""
    m = np.maximum.reduceat(block, starts, axis=1)  # (nq*q_tokens, n_docs)
    return m.reshape(-1, q_tokens, m.shape[1]).sum(axis=1)


def exact_scores(queries: np.ndarray, values: np.ndarray, offsets: np.ndarray, *,
                 block_bytes: int = 1 << 30, threads: int | None = None, log: bool = True) -> np.ndarray:
    """Exact MaxSim of every query against every document over uncompressed float32 embeddings.

    Parameters
    ----------
    queries : float32 (nq, q_tokens, d).
    values : float32 (n_tokens, d), may be a memory map (read in document-aligned chunks).
    offsets : int64 (n_docs + 1,).
    block_bytes : bound on one similarity block (query rows x chunk tokens x 4 bytes).

    Returns
    -------
    float32 (nq, n_docs) scores: sum over query tokens of the max dot product over document tokens.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    nq, qt, d = queries.shape
    n_docs = len(offsets) - 1
    lengths = np.diff(offsets)
    if (lengths <= 0).any():
        raise ValueError("exact_scores needs every document to have at least one token")
    out = np.empty((nq, n_docs), dtype=np.float32)
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32).reshape(nq * qt, d))
    # Token chunk: whole documents, about 1M tokens; query block sized so the block fits block_bytes.
    chunk_tokens = 1 << 20
    q_per_block = max(1, min(nq, block_bytes // (4 * qt * chunk_tokens)))
    t0 = time.perf_counter()
    lo = 0
    while lo < n_docs:
        hi = int(np.searchsorted(offsets, offsets[lo] + chunk_tokens, side="right")) - 1
        hi = max(lo + 1, min(hi, n_docs))
        tok = torch.from_numpy(np.array(values[offsets[lo]:offsets[hi]], dtype=np.float32))
        starts = (offsets[lo:hi] - offsets[lo]).astype(np.int64)
        for qlo in range(0, nq, q_per_block):
            qhi = min(nq, qlo + q_per_block)
            sim = (q_all[qlo * qt:qhi * qt] @ tok.T).numpy()
            out[qlo:qhi, lo:hi] = _segment_max_sum(sim, starts, qt)
        if log:
            print(f"[exact] docs {hi}/{n_docs}  {time.perf_counter() - t0:.1f}s", flush=True)
        lo = hi
    return out


def topk_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row, ties broken by lower id. Returns float32 (nq, k) scores, int64 (nq, k) ids."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    ids = np.empty_like(part)
    for r in range(scores.shape[0]):
        cand = part[r]
        order = np.lexsort((cand, -scores[r, cand]))
        ids[r] = cand[order]
    return np.take_along_axis(scores, ids, axis=1).astype(np.float32), ids.astype(np.int64)


def exact_topk_cached(coll: Collection, k: int, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the collection's queries, cached as ``gt_top{k}.npz`` beside the collection."""
    kk = max(k, 100)  # cache a deeper list once; any k <= 100 reuses it, and any k reuses a deeper cached list
    depths = [int(d) for d in (p.stem.removeprefix("gt_top") for p in coll.path.glob("gt_top*.npz")) if d.isdigit()]
    if any(d >= kk for d in depths):
        z = np.load(coll.path / f"gt_top{min(d for d in depths if d >= kk)}.npz")
        return z["scores"][:, :k], z["ids"][:, :k]
    cache = coll.path / f"gt_top{kk}.npz"
    scores = exact_scores(coll.queries, coll.values, coll.offsets, threads=threads)
    s, i = topk_from_scores(scores, kk)
    np.savez(cache, scores=s, ids=i)
    return s[:, :k], i[:, :k]


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & truth[:k]| / k (ids; -1 padding never matches)."""
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k) if hits else float("nan")


def split_recall_at_k(found: np.ndarray, truth: np.ndarray, group: np.ndarray, k: int) -> tuple[float, float]:
    """recall@k of the exact top-k entries where ``group`` (bool, truth's shape) is true, and of the others: the
    share of each group's entries found in the same query's found[:k] (nan for an empty group; -1 never counts)."""
    truth, group = np.asarray(truth)[:, :k], np.asarray(group, dtype=bool)[:, :k]
    hit = np.array([[t in set(f[:k].tolist()) for t in row] for f, row in zip(np.asarray(found), truth)], dtype=bool)
    hit = hit.reshape(truth.shape)
    real = truth >= 0
    a, b = hit[group & real], hit[~group & real]
    return (float(a.mean()) if a.size else float("nan")), (float(b.mean()) if b.size else float("nan"))


def tie_recall_at_k(found: np.ndarray, coll: Collection, kth: np.ndarray, k: int, eps: float) -> float:
    """Recall@k that counts near-ties: mean over queries of the share of found[:k] whose exact MaxSim is at least
    (1 - eps) times the exact k-th best score ``kth`` (ann-benchmarks' epsilon recall, for similarities). Where the
    exact top-k ends in a plateau of documents scoring within eps of each other, plain recall@k counts swaps
    inside the plateau as misses; this does not. -1 padding never counts."""
    offs = coll.offsets
    hits = []
    for q, row, floor in zip(coll.queries, found, kth):
        q = np.asarray(q, dtype=np.float32)
        n = 0
        for d in row[:k]:
            x = np.asarray(coll.values[offs[d]:offs[d + 1]], dtype=np.float32) if d >= 0 else None
            if x is not None and x.size and float((q @ x.T).max(axis=1).sum()) >= (1 - eps) * float(floor):
                n += 1
        hits.append(n)
    return float(np.mean(hits) / k) if hits else float("nan")
