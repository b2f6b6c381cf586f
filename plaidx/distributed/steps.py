"""The steps of a sharded build that run where the data is (in-process or in Ray tasks): scan, sample, codec, shard."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Index, WriterLock
from ..engine.build import PROBE_TOKENS, build_generation, check_target, gather_sample
from ..engine.codec import reused_table
from ..engine.inputs import as_document, to_numpy
from ..engine.storage import MANIFEST, read_manifest, retire_unreferenced
from .errors import ShardFormatError
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
        """The documents as a list of checked arrays (what travels to a remote worker): float16 ones stay
        float16, half the bytes in the object store (the worker widens them as a local build does), the
        others float32."""
        out = []
        for i in range(len(self)):
            raw = to_numpy(self[i])
            doc = as_document(raw, None, f"documents[{self.lo + i}]")
            out.append(np.ascontiguousarray(raw) if raw.dtype == np.float16 else doc)
        return out


def scan_part(part: Any, first: int) -> tuple[np.ndarray, str]:
    """int64 token counts of a part's documents and a fingerprint of their content (float32 bytes)."""
    h = hashlib.blake2b(digest_size=16)
    lengths = []
    for i, doc in enumerate(part):
        arr = as_document(doc, None, f"documents[{first + i}]")
        h.update(np.array(arr.shape, np.int64).tobytes())
        h.update(arr.tobytes())
        lengths.append(arr.shape[0])
    return np.array(lengths, dtype=np.int64), h.hexdigest()


def take_rows(part: Any, positions: np.ndarray) -> list[np.ndarray]:
    """The documents at ``positions`` (ascending, relative to the part) as float32 arrays."""
    return [as_document(part[int(p)], None, "sample") for p in positions]


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
                kmeans_sample: int, kmeans: str, threads: int | None = None, residual_codec: str | None = None) -> str:
    """Build the codec index (an ordinary index of the sample) and return its codec hash."""
    with fixed_threads(threads):
        Index.build(codec_dir, sample, nbits=nbits, nlist=nlist, kmeans_niters=kmeans_niters, seed=seed,
                    kmeans_sample=kmeans_sample, overwrite=True, kmeans=kmeans, residual_codec=residual_codec,
                    metadata={"plaidx_codec": {"sample_documents": len(sample)}})
    return codec_hash(Path(codec_dir))


def build_shard(shard_dir: str, part: Any, codec_dir: str, seed: int, batch_tokens: int,
                metadata: dict[str, Any], threads: int | None = None) -> dict[str, int]:
    """Compress one shard's documents against the shared codec into an ordinary index; its counts."""
    with fixed_threads(threads):
        idx = Index.build(shard_dir, part, seed=seed, batch_tokens=batch_tokens, overwrite=True,
                          codec_from=codec_dir, metadata=metadata)
    return _counts(shard_dir, idx)


def _counts(shard_dir: str, idx: Index) -> dict[str, int]:
    m = engine_fields(Path(shard_dir))
    return {"n_docs": len(idx), "n_tokens": idx.n_tokens, "engine_generation": idx.generation,
            "next_id": int(m["next_id"])}


# ------------------------------------------------------------------------------- from compressed rows
def probe_positions(lengths: np.ndarray, seed: int) -> np.ndarray:
    """The documents (positions in a shard) whose tokens a build with a given codec probes for its residual
    statistics: the first ``PROBE_TOKENS`` tokens in the seeded order ``build_generation`` draws."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(lengths.size)
    m = int(np.searchsorted(np.cumsum(lengths[order]), PROBE_TOKENS, side="left")) + 1
    return order[: min(m, order.size)]


class _Shape:
    """A document that arrives compressed: only its shape is known to the generic build."""

    ndim = 2

    def __init__(self, n_tokens: int, dim: int):
        self.shape = (n_tokens, dim)


class _Probe(dict):
    def __missing__(self, i: int) -> np.ndarray:
        raise ShardFormatError(f"the probe of this shard lacks document {i}: the driver chose other probe documents "
                               "than build_generation reads; this is a bug in plaidx.distributed")


class CompressedRows:
    """One shard's documents as compressed rows: the source of :func:`build_generation` with :class:`CopyRows`.

    ``lengths`` int64 (n_docs,); ``probe`` {position: float32 (n_tokens, d)} holds the embeddings of the
    documents :func:`probe_positions` names (the residual statistics are computed from them, as in any build
    with a given codec); ``rows`` a ``ray.data`` piece (or any object with ``iter_batches``) of numpy batches
    with columns codes (uint16 arrays), residuals (uint8 (n_tokens_i, packed) arrays), n_tokens and norm.
    """

    def __init__(self, lengths: np.ndarray, dim: int, probe: dict[int, np.ndarray], rows: Any):
        self.lengths, self.dim, self.probe, self.rows = np.asarray(lengths, np.int64), dim, _Probe(probe), rows

    def __len__(self) -> int:
        return int(self.lengths.size)

    def __getitem__(self, i: int) -> _Shape:
        return _Shape(int(self.lengths[i]), self.dim)

    def gather_sample(self, order: np.ndarray, start: int, want: int, dim: int | None) -> tuple[np.ndarray, int]:
        return gather_sample(self.probe, order, start, want, dim)


class CopyRows:
    """``build_generation``'s ``ops`` for a :class:`CompressedRows` source: the codes and packed residuals
    come compressed (against ``centroids``), so the compression step copies them into the new generation."""

    def __init__(self, source: CompressedRows, centroids: np.ndarray):
        self.source, self.centroids = source, centroids

    def assigner(self, centroids: np.ndarray) -> Any:
        from ..engine.clustering import Assigner

        return Assigner(centroids)

    def compress_stream(self, docs: Any, assigner: Any, codec: Any, codes_w: Any, res_w: Any, batch_tokens: int,
                        progress: bool, total: int | None = None, lengths_out: list[int] | None = None,
                        vectors_w: Any = None) -> float:
        if vectors_w is not None:
            raise ValueError("a shard written from compressed rows cannot keep vectors")
        if not np.array_equal(codec.centroids, self.centroids):
            raise ShardFormatError("this shard stores its centroid table in another format than the codec the rows "
                                   "were compressed against (int8 vs 4-bit rows, chosen by token count); build with "
                                   "a larger codec sample (kmeans_sample=) or another nlist")
        norm_sum = 0.0
        for batch in self.source.rows.iter_batches(batch_format="numpy", batch_size=None):
            n = batch["n_tokens"]
            if (n < 1).any():
                raise ShardFormatError("a compressed row of this shard is empty (a document the pipeline skipped)")
            codes_w.append(np.concatenate(list(batch["codes"])))
            res_w.append(np.concatenate(list(batch["residuals"])))
            norm_sum += float(np.sum(batch["norm"], dtype=np.float64))
            if lengths_out is not None:
                lengths_out.extend(int(v) for v in n)
        return norm_sum

    def manifest(self) -> dict[str, Any]:
        return {"compressed_by": "ray.data pipeline"}


def write_shard(shard_dir: str, rows: Any, lengths: np.ndarray, probe: dict[int, np.ndarray], codec_dir: str,
                seed: int, batch_tokens: int, metadata: dict[str, Any], threads: int | None = None) -> dict[str, int]:
    """Write one shard (an ordinary index) from its compressed rows through the engine's build; its counts."""
    path = Path(shard_dir)
    snap = Index.open(codec_dir, verify="none")._snap
    codec = snap.codec
    source = CompressedRows(lengths, codec.dim, probe, rows)
    check_target(path, overwrite=True)
    with fixed_threads(threads), WriterLock(path):
        base = read_manifest(path) if (path / MANIFEST).exists() else None
        retire_unreferenced(path, base)
        build_generation(path, source, None, base, nbits=codec.nbits, nlist=None, kmeans_niters=4, seed=seed,
                         kmeans_sample=None, batch_tokens=batch_tokens, metadata=metadata, progress=False,
                         codec=codec, ops=CopyRows(source, codec.centroids),
                         codec_table=reused_table(snap.a, codec.nbits))
    return _counts(shard_dir, Index.open(path, verify="none"))


__all__ = ["SHARD_KEY", "CompressedRows", "CopyRows", "Part", "build_shard", "fixed_threads", "probe_positions",
           "scan_part", "take_rows", "train_codec", "write_shard"]
