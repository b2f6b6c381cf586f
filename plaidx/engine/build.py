"""The build pipeline: sample, k-means, codebooks, then assign and compress documents into a new generation."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .clustering import (
    LARGE_MAX_NLIST,
    MAX_NLIST,
    Assigner,
    check_kmeans_method,
    default_kmeans_sample,
    default_nlist,
    train_centroids,
)
from .codec import (
    MAX_NLIST_UINT16,
    NBITS,
    ResidualCodec,
    centroid_arrays,
    code_dtype,
    default_residual_codec,
    stored_centroids,
    train_codebooks,
    train_pq,
)
from .inputs import as_document, batches, iter_documents, prefetch
from .params import is_integer
from .snapshot import Snapshot
from .storage import MANIFEST, Transaction, format_version_for, is_own_file, load_generation
from .vectors import VectorWriter, check_kept_dim

PROBE_TOKENS = 1 << 15  # tokens a build with a given codec assigns for its residual statistics


def progress_bar(iterable: Any, total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="doc", mininterval=1.0)


class Spill:
    """Documents from a one-shot iterable, spilled to a temporary file so the build can read them twice."""

    def __init__(self, path: Path, docs: Iterator[Any], progress: bool):
        self.path = path
        self.lengths: list[int] = []
        self.dim: int | None = None
        self.dtype = np.dtype(np.float32)
        try:
            with open(path, "wb") as f:
                for i, doc in enumerate(progress_bar(docs, None, "reading", progress)):
                    if i == 0 and getattr(doc, "dtype", None) is not None and "float16" in str(doc.dtype):
                        self.dtype = np.dtype(np.float16)  # float16 input spills losslessly as float16
                    arr = as_document(doc, self.dim, f"documents[{i}]")
                    self.dim = arr.shape[1]
                    f.write(arr.astype(self.dtype).tobytes())
                    self.lengths.append(arr.shape[0])
        except BaseException:  # a bad document or a failing source: the copy so far goes with the build
            path.unlink(missing_ok=True)
            raise
        self.offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        # read back with pread, not a memory map, so pages read once do not count in the build's RSS
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        row = self.dim * self.dtype.itemsize
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        raw = os.pread(self._fd, (hi - lo) * row, lo * row)
        return np.frombuffer(raw, dtype=self.dtype).reshape(hi - lo, self.dim).astype(np.float32)

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


class DecompressedSource:
    """The live documents of a snapshot, decompressed on access (the source of a recluster)."""

    def __init__(self, snap: Snapshot, positions: np.ndarray):
        self.snap, self.pos = snap, positions

    def __len__(self) -> int:
        return int(self.pos.size)

    def __getitem__(self, i: int) -> np.ndarray:
        p = int(self.pos[i])
        lo, hi = int(self.snap.a["doc_offsets"][p]), int(self.snap.a["doc_offsets"][p + 1])
        if self.snap.kept is not None:  # kept vectors are closer to the originals than decompressed codes
            return self.snap.kept.rows(slice(lo, hi))
        return self.snap.codec.decompress(self.snap.a["codes"][lo:hi], self.snap.a["residuals"][lo:hi])


class BuildArgs(NamedTuple):
    nbits: int
    nlist: int | None
    kmeans_niters: int
    batch_tokens: int
    seed: int
    kmeans_sample: int | None


def check_build_args(nbits: Any, nlist: Any, kmeans_niters: Any, batch_tokens: Any, kmeans: Any = "auto", *,
                     seed: Any = 0, kmeans_sample: Any = None) -> BuildArgs:
    """The build's integer arguments as Python ints (numpy integers accepted), or a ValueError naming the one to
    fix, before any work is done."""
    if not is_integer(nbits) or nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits!r}")
    check_kmeans_method(kmeans)
    return BuildArgs(
        int(nbits),
        None if nlist is None else _integer("nlist", nlist, 1, MAX_NLIST, f"an integer in [1, {MAX_NLIST}] or None"),
        _integer("kmeans_niters", kmeans_niters, 1),
        _integer("batch_tokens", batch_tokens, 1),
        _integer("seed", seed, 0, (1 << 31) - 1, "an integer in [0, 2**31)"),
        None if kmeans_sample is None else _integer("kmeans_sample", kmeans_sample, 1, None,
                                                    "a positive number of tokens or None (the default for nlist)"))


def check_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` as a dict that JSON can store in the manifest, or a clear error before any work is done."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict (stored in the manifest), got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must hold only what JSON stores (str keys; str, int, float, bool, None, lists "
                        f"and dicts of them), e.g. float(x) for a numpy number: {exc}") from None
    return dict(metadata)


def _integer(name: str, value: Any, lo: int, hi: int | None = None, what: str = "a positive integer") -> int:
    if not is_integer(value) or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is a file; choose a folder path for the index")
    if (path / MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"an index already exists at {str(path)!r}; pass overwrite=True to replace it "
                                  "or use Index.open(path).add(...) to extend it")
        return
    if path.is_dir():
        foreign = [p.name for p in path.iterdir() if not is_own_file(p.name)]
        if foreign:
            raise FileExistsError(f"{str(path)!r} is a non-empty folder that is not a plaidx index "
                                  f"(it holds {foreign[:3]}); choose an empty or new folder")


def copy_rows(src: np.ndarray, writer: Any, rows: int = 1 << 18) -> None:
    for lo in range(0, src.shape[0], rows):
        writer.append(np.asarray(src[lo:lo + rows]))


def compress_stream(docs: Any, assigner: Assigner, codec: ResidualCodec, codes_w: Any, res_w: Any,
                     batch_tokens: int, progress: bool, total: int | None = None,
                     lengths_out: list[int] | None = None, vectors_w: VectorWriter | None = None) -> float:
    """Assign and compress documents batch by batch into the writers (and ``vectors_w``, the rerank tier's,
    when given); returns the residual norm sum."""
    def write(x: np.ndarray, codes: np.ndarray) -> float:
        packed, norms = codec.compress(x, codes)
        codes_w.append(codes)
        res_w.append(packed)
        if vectors_w is not None:
            vectors_w.append(x)
        return float(norms.sum())

    # Three stages overlap: a reader thread gathers batch i + 1 (reading, checking and concatenating
    # documents), this thread assigns batch i (native, without the GIL), and a writer thread compresses and
    # writes batch i - 1, in order. Each stage holds at most one batch beyond the reader's queue.
    norm_sum = 0.0
    pending = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="plaidx-build-writer") as writer:
        for x in prefetch(batches(progress_bar(docs, total, "compressing", progress), codec.dim, batch_tokens,
                                  lengths_out)):
            codes = assigner.assign(x)
            if pending is not None:
                norm_sum += pending.result()
            pending = writer.submit(write, x, codes)
        if pending is not None:
            norm_sum += pending.result()
    return norm_sum


def gather_sample(source: Any, order: np.ndarray, start: int, want: int, dim: int | None) -> tuple[np.ndarray, int]:
    """Up to ``want`` token rows of the documents order[start:], in that order, and the next position.

    Filled into one preallocated array (the last document contributes the rows that fit), so the
    sample never exists twice in memory: at d = 384 and 2**20 rows it is 1.5 GiB.
    """
    if hasattr(source, "gather_sample"):  # gpu_build.EncodedCorpus: encodes the sample's documents in batches
        return source.gather_sample(order, start, want, dim)
    x, got, i = None, 0, start
    while got < want and i < order.size:
        doc = as_document(source[int(order[i])], dim, f"documents[{int(order[i])}]")
        if x is None:
            dim = doc.shape[1]
            x = np.empty((want, dim), dtype=np.float32)
        take = min(doc.shape[0], want - got)
        x[got:got + take] = doc[:take]
        got += take
        i += 1
    if x is None:
        return np.zeros((0, dim or 0), np.float32), i
    return (x if got == want else x[:got].copy()), i


PQ_TRAIN_ROWS = 1 << 16  # residuals the pq codec trains on (when the collection has that many)


def build_generation(path: Path, documents: Any, ids: np.ndarray | None, base: dict[str, Any] | None, *,
                      nbits: int, nlist: int | None, kmeans_niters: int, seed: int, kmeans_sample: int | None,
                      batch_tokens: int, metadata: dict[str, Any] | None, progress: bool,
                      next_id: int | None = None, codec: ResidualCodec | None = None,
                      kmeans: str = "auto", keep_vectors: str | None = None, ops: Any = None,
                      codec_table: dict[str, np.ndarray] | None = None,
                      residual_codec: str | None = None) -> Snapshot:
    """Write a whole new generation (centroids, codec, codes, IVF, and the kept vectors when ``keep_vectors``
    names a rerank tier) from documents; the lock is held. ``ops``: the device steps of a GPU build
    (gpu_build.BuildOps: k-means, assigner, compress_stream), None for the CPU. ``codec_table``: with
    ``codec``, the source's stored centroid arrays to keep verbatim (``codec.reused_table``).
    ``residual_codec``: "scalar", "pq" or None (``codec.default_residual_codec``), for a codec trained here (a
    given ``codec`` keeps its own)."""
    docs_iter, count = iter_documents(documents)
    spill = None
    source = documents
    if count is None:
        spill = Spill(path / f".spill.{os.getpid()}.tmp", docs_iter, progress)
        source = spill
    tx = Transaction(path, base, inherit_arrays=False)  # nothing of an earlier generation carries over
    try:
        n_docs = len(source)
        if n_docs == 0:
            raise ValueError("documents: empty collection; pass at least one document")
        lengths = np.array([_n_rows(source[i], i) for i in range(n_docs)], dtype=np.int64)
        n_tokens = int(lengths.sum())
        rng = np.random.default_rng(seed)
        timings = {}
        t0 = time.perf_counter()
        order = rng.permutation(n_docs)
        if codec is None:
            # a GPU build's default stays within what its kernels address (uint16 codes)
            nl = nlist if nlist is not None else default_nlist(n_tokens, nbits,
                                                               MAX_NLIST_UINT16 if ops else LARGE_MAX_NLIST)
            if nl > n_tokens:
                raise ValueError(f"nlist={nl} exceeds the number of token embeddings ({n_tokens}); "
                                 "use a smaller nlist")
            want = kmeans_sample or default_kmeans_sample(nl, n_tokens)
            # keep a few documents out of k-means: the held-out set trains the codec and gives the
            # unbiased residual norm that drift is measured against
            n_held = max(n_docs // 20, min(n_docs // 5, 50))
            in_sample = order[: n_docs - n_held] if n_docs >= 10 else order
            sample, used = gather_sample(source, in_sample, 0, max(want, nl), None)
            if sample.shape[0] < nl:
                sample, used = gather_sample(source, order, 0, max(want, nl), None)
            dim = sample.shape[1]
            if dim % 8:
                raise ValueError(f"embedding dimension {dim} is not a multiple of 8 (required by the residual "
                                 "packing)")
            check_kept_dim(keep_vectors, dim)
            timings["sample_s"] = round(time.perf_counter() - t0, 3)
            centroids = (ops.train_centroids if ops else train_centroids)(sample, nl, kmeans_niters, seed,
                                                                          verbose=False, method=kmeans)
            timings["kmeans_s"] = round(time.perf_counter() - t0 - timings["sample_s"], 3)
            # round to what is stored first, so that what is compressed against is what is decoded
            stored = centroid_arrays(centroids, nbits, n_tokens)
            centroids = stored_centroids(stored)
            assigner = ops.assigner(centroids) if ops else Assigner(centroids)
            held_want = int(min(max(n_tokens // 20, 4096), 1 << 16))
            heldout, _ = gather_sample(source, order, used, held_want, dim)
            if heldout.shape[0] < min(held_want, 64):
                heldout = sample[: held_want]
            h_codes = assigner.assign(heldout)
            h_res = heldout - centroids[h_codes.astype(np.intp)]
            ref_norm = float(np.linalg.norm(h_res, axis=1).mean())
            cutoffs, weights = train_codebooks(h_res, nbits)
            if residual_codec is None:
                residual_codec = default_residual_codec(nbits, n_tokens, gpu_build=ops is not None)
            pq = (None, None)
            if residual_codec == "pq":
                # 256 codewords per sub-vector need more rows than 4 buckets per dimension: the held-out residuals,
                # topped up to PQ_TRAIN_ROWS with k-means sample rows (their residuals run a little small)
                extra = sample[: max(0, PQ_TRAIN_ROWS - h_res.shape[0])]
                p_res = np.concatenate([h_res, extra - centroids[assigner.assign(extra).astype(np.intp)]])
                t_pq = time.perf_counter()
                pq = train_pq(p_res, nbits, seed)
                timings["pq_train_s"] = round(time.perf_counter() - t_pq, 3)
            del sample
            codec = ResidualCodec(centroids, cutoffs, weights, nbits, *pq)
            avg_residual = np.abs(h_res).mean(axis=0).astype(np.float32)
        else:
            nl, dim, want = codec.centroids.shape[0], codec.dim, 0
            check_kept_dim(keep_vectors, dim)
            # the source's table as it is stored, or (a format 1 source: float16 centroids at any nbits) the
            # table this index stores; either way, compress against what will be stored
            stored = dict(codec_table) if codec_table is not None else centroid_arrays(codec.centroids, codec.nbits,
                                                                                       n_tokens)
            centroids = stored_centroids(stored)
            codec = dataclasses.replace(codec, centroids=centroids)
            cutoffs, weights = codec.cutoffs, codec.weights
            assigner = ops.assigner(centroids) if ops else Assigner(centroids)
            probe, _ = gather_sample(source, order, 0, PROBE_TOKENS, dim)
            p_codes = assigner.assign(probe)
            p_res = probe - centroids[p_codes.astype(np.intp)]
            avg_residual = np.abs(p_res).mean(axis=0).astype(np.float32)
            ref_norm = float(np.linalg.norm(p_res, axis=1).mean())
        codes_w = tx.stream("codes", code_dtype(nl), (n_tokens,))  # uint16, or uint32 above 65536 centroids
        res_w = tx.stream("residuals", np.uint8, (n_tokens, codec.packed_dim))
        vec_w = VectorWriter(tx, keep_vectors, n_tokens, dim) if keep_vectors else None
        seen: list[int] = []
        t1 = time.perf_counter()
        norm_sum = (ops.compress_stream if ops else compress_stream)((source[i] for i in range(n_docs)),
                                                                     assigner, codec, codes_w, res_w,
                                           batch_tokens, progress, total=n_docs, lengths_out=seen,
                                           vectors_w=vec_w)
        if seen != lengths.tolist():
            raise ValueError("documents changed length between the two passes of the build")
        tx.finish("codes", codes_w)
        tx.finish("residuals", res_w)
        if vec_w is not None:
            vec_w.finish()
        timings["assign_compress_s"] = round(time.perf_counter() - t1, 3)
        offsets = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        doc_ids = np.arange(n_docs, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        for name, arr in (*stored.items(), *codec.pq_arrays().items(), ("bucket_cutoffs", cutoffs),
                          ("bucket_weights", weights), ("avg_residual", avg_residual),
                          ("doc_offsets", offsets), ("doc_ids", doc_ids), ("deleted", np.zeros(n_docs, np.uint8))):
            tx.put(name, arr)
        fields = {"dim": dim, "nbits": nbits, "nlist": nl, "n_docs": n_docs, "n_tokens": n_tokens,
                  "n_deleted": 0, "next_id": int(next_id if next_id is not None else doc_ids[-1] + 1),
                  "metadata": dict(metadata or {}), "updates": {},
                  "build": {"timings": timings, "seed": seed, "kmeans_niters": kmeans_niters, "kmeans": kmeans,
                            "kmeans_sample": int(min(want, n_tokens)),
                            "n_tokens": n_tokens, "residual_norm_mean": ref_norm,
                            "residual_norm_mean_all_tokens": norm_sum / n_tokens,
                            "residual_codec": codec.kind,
                            "format_version": format_version_for(code_dtype(nl), pq=codec.kind == "pq"),
                            **(ops.manifest() if ops else {})}}
        manifest = tx.commit(fields)
    except BaseException:
        tx.abort()
        raise
    finally:
        if spill is not None:
            spill.close()
    _, arrays = load_generation(path, verify="none")
    return Snapshot(path, manifest, arrays)


def _n_rows(doc: Any, i: int) -> int:
    shape = getattr(doc, "shape", None)
    if shape is None:
        shape = np.shape(doc)
    if len(shape) != 2:
        raise ValueError(f"documents[{i}]: expected shape (n_tokens, d), got {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError(f"documents[{i}]: the document has no token embeddings; drop empty documents")
    return int(shape[0])
