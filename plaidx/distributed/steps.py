"""The steps of a sharded build that run where the data is (in-process or in Ray tasks): scan, sample, codec, shard."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Index
from ..engine.inputs import as_document
from .manifest import codec_hash, engine_fields

SHARD_KEY = "plaidx_shard"


class Part:
    """Documents ``lo .. hi-1`` of a random-access source: what one shard (or scan task) reads."""

    def __init__(self, source: Any, lo: int, hi: int):
        self.source, self.lo, self.hi = source, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.source[self.lo + i]

    def materialize(self) -> list[np.ndarray]:
        """The documents as a list of float32 arrays (what travels to a remote worker)."""
        return [as_document(self[i], None, f"documents[{self.lo + i}]") for i in range(len(self))]


def iter_part(part: Any, column: str) -> Any:
    """The documents of a part: a sequence of arrays, or a ``ray.data.Dataset`` piece (``column`` of each row)."""
    if hasattr(part, "iter_rows"):
        for row in part.iter_rows():
            if column not in row:
                raise ValueError(f"the dataset has no column {column!r} (it has {sorted(row)}); pass "
                                 "embedding_column=... or, for texts, text_column=... and model=...")
            yield np.asarray(row[column])
    else:
        for i in range(len(part)):
            yield part[i]


def scan_part(part: Any, column: str, first: int) -> tuple[np.ndarray, str]:
    """int64 token counts of a part's documents and a fingerprint of their content (float32 bytes)."""
    h = hashlib.blake2b(digest_size=16)
    lengths = []
    for i, doc in enumerate(iter_part(part, column)):
        arr = as_document(doc, None, f"documents[{first + i}]")
        h.update(np.array(arr.shape, np.int64).tobytes())
        h.update(arr.tobytes())
        lengths.append(arr.shape[0])
    return np.array(lengths, dtype=np.int64), h.hexdigest()


def take_rows(part: Any, column: str, positions: np.ndarray) -> list[np.ndarray]:
    """The documents at ``positions`` (ascending, relative to the part) as float32 arrays."""
    want = set(int(p) for p in positions)
    return [as_document(doc, None, "sample") for i, doc in enumerate(iter_part(part, column)) if i in want]


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Run BLAS and OpenMP (faiss's k-means and assignment) with exactly ``threads`` threads.

    Their floating-point sums depend on the thread count, and k-means amplifies a last-bit difference
    into other centroids; the same count everywhere (driver or Ray worker) gives byte-identical builds.
    """
    if not threads:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the ray extra
        yield
        return
    with threadpool_limits(limits=int(threads)):
        yield


def train_codec(codec_dir: str, sample: list[np.ndarray], nbits: int, nlist: int, kmeans_niters: int, seed: int,
                kmeans_sample: int, kmeans: str, threads: int | None = None) -> str:
    """Build the codec index (an ordinary index of the sample) and return its codec hash."""
    with fixed_threads(threads):
        Index.build(codec_dir, sample, nbits=nbits, nlist=nlist, kmeans_niters=kmeans_niters, seed=seed,
                    kmeans_sample=kmeans_sample, overwrite=True, kmeans=kmeans,
                    metadata={"plaidx_codec": {"sample_documents": len(sample)}})
    return codec_hash(Path(codec_dir))


def build_shard(shard_dir: str, part: Any, column: str, codec_dir: str, seed: int, batch_tokens: int,
                metadata: dict[str, Any], threads: int | None = None) -> dict[str, int]:
    """Compress one shard's documents against the shared codec into an ordinary index; its counts."""
    docs = part if not hasattr(part, "iter_rows") else iter_part(part, column)
    with fixed_threads(threads):
        idx = Index.build(shard_dir, docs, seed=seed, batch_tokens=batch_tokens, overwrite=True,
                          codec_from=codec_dir, metadata=metadata)
    m = engine_fields(Path(shard_dir))
    return {"n_docs": len(idx), "n_tokens": idx.n_tokens, "engine_generation": idx.generation,
            "next_id": int(m["next_id"])}


__all__ = ["SHARD_KEY", "Part", "build_shard", "fixed_threads", "iter_part", "scan_part", "take_rows", "train_codec"]
