"""The Index: build, open (memory-mapped), search, reconstruct, add, delete, compact and verify."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import _kernels, gpu
from .clustering import (
    MAX_NLIST,
    Assigner,
    check_kmeans_method,
    default_kmeans_sample,
    default_nlist,
    train_centroids,
)
from .codec import NBITS, ResidualCodec, centroid_arrays, stored_centroids, train_codebooks
from .errors import IndexFormatError, PlaidxError
from .inputs import as_document, as_queries, check_k, iter_documents
from .search import SearchParams
from .storage import (
    FORMAT_VERSION,
    MANIFEST,
    ArrayEntry,
    Transaction,
    WriterLock,
    dir_size,
    load_generation,
    read_manifest,
    retire_unreferenced,
    verify_index,
)

DRIFT_WARNING_RATIO = 1.25
_OWN_FILE = re.compile(r"^(?:[a-z_]+\.\d{6}\.npy|\..+\.tmp|LOCK|manifest\.json)$")
_SCORE_CHUNK_BYTES = 64 << 20


def _progress(iterable: Any, total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="doc", mininterval=1.0)


class _Spill:
    """Documents from a one-shot iterable, spilled to a temporary file so the build can read them twice."""

    def __init__(self, path: Path, docs: Iterator[Any], progress: bool):
        self.path = path
        self.lengths: list[int] = []
        self.dim: int | None = None
        self.dtype = np.dtype(np.float32)
        with open(path, "wb") as f:
            for i, doc in enumerate(_progress(docs, None, "reading", progress)):
                if i == 0 and getattr(doc, "dtype", None) is not None and "float16" in str(doc.dtype):
                    self.dtype = np.dtype(np.float16)  # float16 input spills losslessly as float16
                arr = as_document(doc, self.dim, f"documents[{i}]")
                self.dim = arr.shape[1]
                f.write(arr.astype(self.dtype).tobytes())
                self.lengths.append(arr.shape[0])
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


class _Snapshot:
    """One committed generation: its manifest, memory-mapped arrays and derived read-only views."""

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self.a = arrays
        self.dim = int(manifest["dim"])
        self.nbits = int(manifest["nbits"])
        self.nlist = int(manifest["nlist"])
        self.n_docs = int(manifest["n_docs"])
        self.n_tokens = int(manifest["n_tokens"])
        self.generation = int(manifest["generation"])
        self._check_consistency()
        self.codec = ResidualCodec(stored_centroids(arrays),
                                   np.ascontiguousarray(arrays["bucket_cutoffs"]),
                                   np.ascontiguousarray(arrays["bucket_weights"]), self.nbits)
        deleted = arrays["deleted"]
        self.n_deleted = int(np.count_nonzero(deleted))
        if self.n_deleted != manifest.get("n_deleted", 0):
            raise IndexFormatError(f"{path / MANIFEST}: n_deleted={manifest.get('n_deleted')!r} disagrees with the "
                                   f"deleted array ({self.n_deleted}); the index is inconsistent")
        self.live_mask = (np.asarray(deleted) == 0).astype(np.uint8) if self.n_deleted else np.zeros(0, np.uint8)
        ids = np.asarray(arrays["doc_ids"])
        # Positions are ids until the first compaction: then results need no lookup.
        self._ids_are_positions = bool(self.n_docs == 0 or (ids[0] == 0 and ids[-1] == self.n_docs - 1))
        self._ivf: tuple[np.ndarray, np.ndarray] | None = None
        self._doc_cells: tuple[np.ndarray, np.ndarray] | None = None
        self._ivf_lock = threading.Lock()
        self._on_device: dict[int, Any] = {}  # CUDA device index -> plaidx._cuda.Collection

    @functools.cached_property
    def centroids_t(self) -> np.ndarray:
        """(d, nlist) float32: the centroids transposed, for the reference backend's query-centroid GEMMs
        (the native search scores the centroids itself)."""
        return np.ascontiguousarray(self.codec.centroids.T)

    def _check_consistency(self) -> None:
        a, d, nb = self.a, self.dim, self.nbits
        expect = {
            "centroids": (self.nlist, d), "bucket_cutoffs": (d, (1 << nb) - 1), "bucket_weights": (d, 1 << nb),
            "avg_residual": (d,), "codes": (self.n_tokens,), "residuals": (self.n_tokens, d * nb // 8),
            "doc_offsets": (self.n_docs + 1,), "doc_ids": (self.n_docs,), "deleted": (self.n_docs,),
        }
        where = str(self.path / MANIFEST)
        if nb not in NBITS or d <= 0 or d % 8 or not (0 < self.nlist <= MAX_NLIST):
            raise IndexFormatError(f"{where}: invalid dim/nbits/nlist ({d}/{nb}/{self.nlist})")
        for name, shape in expect.items():
            if name not in a:
                raise IndexFormatError(f"{where}: array {name!r} is missing from the manifest")
            if tuple(a[name].shape) != shape:
                raise IndexFormatError(f"{where}: array {name!r} has shape {a[name].shape}, expected {shape}")
        offs = a["doc_offsets"]
        if offs[0] != 0 or offs[-1] != self.n_tokens or (self.n_docs and np.any(np.diff(offs) <= 0)):
            raise IndexFormatError(f"{where}: doc_offsets are not increasing from 0 to n_tokens; index damaged")
        if a["centroids"].dtype == np.int8:
            if "centroid_scales" not in a or tuple(a["centroid_scales"].shape) != (self.nlist,):
                raise IndexFormatError(f"{where}: int8 centroids need a centroid_scales array of shape "
                                       f"({self.nlist},); the index is inconsistent")
        elif a["centroids"].dtype != np.float16:  # float16: nbits 4 and 8, and every format 1 index
            raise IndexFormatError(f"{where}: centroids must be stored as int8 (with centroid_scales) or float16, "
                                   f"not {a['centroids'].dtype}")

    def ivf(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverted file (cell -> documents), derived from the codes on first use and kept in memory.

        It is not stored: the native kernel rebuilds it from the 2-byte codes faster than it could be
        read from disk, and an index without it is smaller and has one thing less to corrupt.
        """
        if self._ivf is None:
            with self._ivf_lock:
                if self._ivf is None:
                    self._ivf = _kernels.build_ivf(np.ascontiguousarray(self.a["codes"]),
                                                   np.ascontiguousarray(self.a["doc_offsets"]), self.nlist)
        return self._ivf

    def doc_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Each document's distinct cells (the inverted file transposed), derived on first use like it."""
        if self._doc_cells is None:
            ivf, ivf_offsets = self.ivf()
            with self._ivf_lock:
                if self._doc_cells is None:
                    self._doc_cells = _kernels.doc_cells(ivf, ivf_offsets, self.n_docs)
        return self._doc_cells

    def on_device(self, device: int) -> Any:
        """This generation copied to a CUDA device (codes, residuals, centroids, inverted file), on first use.

        The copy lives as long as the snapshot: a reload or a committed update makes a new snapshot and
        with it a new copy, so the GPU never searches a stale generation.
        """
        coll = self._on_device.get(device)
        if coll is None:
            ivf, ivf_offsets = self.ivf()
            with self._ivf_lock:
                coll = self._on_device.get(device)
                if coll is None:
                    a = self.a
                    coll = gpu.module().Collection(
                        np.ascontiguousarray(a["codes"]), np.ascontiguousarray(a["residuals"]),
                        np.ascontiguousarray(a["doc_offsets"]), self.codec.centroids, self.codec.weights,
                        self.nbits, ivf, ivf_offsets, device=device)
                    self._on_device[device] = coll
        return coll

    @property
    def doc_ids(self) -> np.ndarray:
        return self.a["doc_ids"]

    def ids_of(self, pos: np.ndarray) -> np.ndarray:
        """int64 document ids of result positions (-1 stays -1)."""
        if self._ids_are_positions:
            return pos.astype(np.int64, copy=False)
        return np.where(pos >= 0, np.asarray(self.doc_ids)[np.maximum(pos, 0)], -1).astype(np.int64)

    def positions(self, ids: Any, *, live_only: bool, what: str) -> np.ndarray:
        """Positions of int64 ids; raise KeyError naming unknown (or deleted) ids."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{what}: document ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64).ravel()
        all_ids = self.doc_ids
        pos = np.searchsorted(all_ids, ids)
        pos_c = np.minimum(pos, max(self.n_docs - 1, 0))
        ok = (pos < self.n_docs) & (all_ids[pos_c] == ids) if self.n_docs else np.zeros(ids.shape, bool)
        if live_only and self.n_deleted:
            ok &= np.asarray(self.a["deleted"])[pos_c] == 0
        if not ok.all():
            bad = ids[~ok][:10].tolist()
            raise KeyError(f"{what}: unknown document ids {bad}{' ...' if (~ok).sum() > 10 else ''}"
                           f" (the index holds {self.n_docs - self.n_deleted} live documents)")
        return pos.astype(np.int64)


class Index:
    """A compressed multi-vector index on disk, searched with the PLAID pipeline.

    Open one with :meth:`Index.build` or :meth:`Index.open`. A handle reads one committed generation
    (memory-mapped) and keeps it until :meth:`reload`; searches are thread-safe. Writers
    (:meth:`add`, :meth:`delete`, :meth:`compact`) hold the folder's lock while they commit.
    """

    def __init__(self, path: Path, snapshot: _Snapshot):
        self.path = Path(path)
        self._snap = snapshot
        self._write_mutex = threading.Lock()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, verify: str = "structure") -> Index:
        """Open the index at ``path`` memory-mapped.

        ``verify``: "structure" (default) checks the CRC-32 of every array but the residuals,
        "full" checks all, "none" only headers and shapes.
        """
        path = Path(path)
        manifest, arrays = load_generation(path, verify=verify)
        return cls(path, _Snapshot(path, manifest, arrays))

    def reload(self) -> Index:
        """Switch this handle to the newest committed generation."""
        self._snap = Index.open(self.path)._snap
        return self

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._snap.dim

    @property
    def nbits(self) -> int:
        return self._snap.nbits

    @property
    def nlist(self) -> int:
        return self._snap.nlist

    @property
    def n_tokens(self) -> int:
        return self._snap.n_tokens

    @property
    def generation(self) -> int:
        return self._snap.generation

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._snap.manifest.get("metadata") or {})

    @property
    def ids(self) -> np.ndarray:
        """int64 ids of the live documents, ascending."""
        s = self._snap
        ids = np.asarray(s.doc_ids)
        return ids[s.live_mask.astype(bool)] if s.n_deleted else np.array(ids)

    def __len__(self) -> int:
        return self._snap.n_docs - self._snap.n_deleted

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, documents={len(self)}, tokens={self.n_tokens}, dim={self.dim}, "
                f"nbits={self.nbits}, nlist={self.nlist}, generation={self.generation})")

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, path: str | os.PathLike, documents: Any, nbits: int = 2, nlist: int | None = None,
              kmeans_niters: int = 4, seed: int = 0, *, kmeans_sample: int | None = None,
              batch_tokens: int = 1 << 16, overwrite: bool = False, metadata: dict[str, Any] | None = None,
              progress: bool = False, codec_from: Index | str | os.PathLike | None = None,
              kmeans: str = "auto") -> Index:
        """Build a compressed index from per-token document embeddings.

        Parameters
        ----------
        path : folder to create (or an existing index, with ``overwrite=True``).
        documents : sequence of float32/float16 (n_tokens_i, d) arrays (numpy or torch), or an iterable
            of such arrays or of batches (lists of them); document ids are 0..n-1 in this order.
        nbits : bits per residual dimension, one of 1, 2, 4, 8.
        nlist : number of centroids; default ``default_nlist(n_tokens)``.
        kmeans_niters, seed : k-means iterations and seed (the build is deterministic given both).
        kmeans_sample : tokens used to train k-means; default 80 per centroid, at most 2**20.
        kmeans : "auto" (two-level k-means from 1024 centroids: fast) or "flat" (one k-means over the
            whole sample: slower; better recall on some large collections, see the README).
        batch_tokens : tokens compressed per batch (bounds the build's memory).
        overwrite : replace an existing index at ``path`` (as one atomic commit).
        metadata : JSON-serialisable dict stored in the manifest (e.g. the model that made the embeddings).
        codec_from : an Index (or its path) whose centroids and codebooks to reuse instead of training
            new ones (k-means is skipped; nbits and nlist come from it). Indexes built this way compress
            identical embeddings to identical codes, e.g. shards of one collection.
        """
        path = Path(path)
        codec = None
        if codec_from is not None:
            src = codec_from if isinstance(codec_from, Index) else Index.open(codec_from)
            codec = src._snap.codec
            if nlist is not None and nlist != codec.centroids.shape[0]:
                raise ValueError(f"nlist={nlist} conflicts with codec_from's nlist={codec.centroids.shape[0]}")
            nbits, nlist = codec.nbits, None
        _check_build_args(nbits, nlist, kmeans_niters, batch_tokens, kmeans)
        _check_target(path, overwrite)
        with WriterLock(path):
            base = read_manifest(path) if (path / MANIFEST).exists() else None
            retire_unreferenced(path, base)
            snap = _build_generation(path, documents, None, base, nbits=nbits, nlist=nlist,
                                     kmeans_niters=kmeans_niters, seed=seed, kmeans_sample=kmeans_sample,
                                     batch_tokens=batch_tokens, metadata=metadata, progress=progress,
                                     codec=codec, kmeans=kmeans)
        return cls(path, snap)

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int = 10, *, nprobe: int | None = None,
               centroid_score_threshold: float | None = None, ndocs: int | None = None,
               n_exact: int | None = None, exact: bool = False, doc_ids: Any = None,
               num_threads: int = 0, device: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k documents of each query by MaxSim.

        Parameters
        ----------
        queries : float (nq, q_tokens, d) or (q_tokens, d), numpy or torch.
        k : results per query.
        nprobe, centroid_score_threshold, ndocs, n_exact : PLAID parameters; defaults by k
            and the index size (:meth:`SearchParams.for_k`).
        exact : exhaustive MaxSim over every (decompressed) document instead of PLAID.
        doc_ids : optional ids to restrict the search to (filtered inside the engine).
        num_threads : OpenMP threads for this call (0: the default); CPU only.
        device : ``None``/``"cpu"`` (native CPU kernels) or ``"cuda"``/``"cuda:N"``: the same pipeline
            on a GPU (the index is copied there on first use and kept while this generation is open).
            GPU scores equal the CPU's to float rounding.

        Returns
        -------
        scores : float32 (nq, k), best first, -inf padding.
        ids : int64 (nq, k), -1 padding. For a single (q_tokens, d) query both are (k,).
        """
        snap = self._snap
        k = check_k(k)
        q, single = as_queries(queries, snap.dim)
        dev = gpu.resolve_device(device)
        allowed = snap.live_mask
        if doc_ids is not None:
            pos = snap.positions(doc_ids, live_only=False, what="doc_ids")
            allowed = np.zeros(snap.n_docs, dtype=np.uint8)
            allowed[pos] = 1
            if snap.n_deleted:
                allowed &= snap.live_mask
        a = snap.a
        coll = snap.on_device(dev) if dev is not None else None

        def exhaustive(qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if coll is not None:
                return coll.exact_search(qs, allowed, k)
            return _kernels.exact_search(qs, a["codes"], a["residuals"], a["doc_offsets"], snap.codec.centroids,
                                         snap.codec.weights, snap.nbits, allowed, k, num_threads=num_threads)

        if exact:
            scores, pos = exhaustive(q)
        else:
            p = SearchParams.for_k(k, nprobe, centroid_score_threshold, ndocs, n_exact, n_tokens=snap.n_tokens)
            nprobe_eff = min(p.nprobe, snap.nlist)

            def plaid(qs: np.ndarray, n_probe: int) -> tuple[np.ndarray, np.ndarray]:
                if coll is not None:
                    return coll.search(qs, allowed, n_probe, p.centroid_score_threshold, p.ndocs, p.n_exact, k)
                return self._search_cpu(qs, allowed, p, n_probe, k, num_threads)

            scores, pos = plaid(q, nprobe_eff)
            # PLAID only sees documents in the probed cells. When that leaves a row short of k while more
            # allowed documents exist (a narrow filter, a small index, query tokens whose best cells are
            # nearly empty), search that row again probing 16x more cells, then exhaustively if need be.
            # Rows are padded at the end, so a row is short when its m-th entry is padding.
            m = min(k, int(np.count_nonzero(allowed)) if allowed.size else snap.n_docs)

            def short_rows() -> np.ndarray:
                return np.flatnonzero(pos[:, m - 1] < 0) if m > 0 else np.zeros(0, np.int64)

            short = short_rows()
            if short.size and nprobe_eff < snap.nlist:
                wide = min(snap.nlist, 16 * nprobe_eff)
                if coll is not None and wide < snap.nlist:
                    wide = min(wide, gpu.MAX_NPROBE)
                scores[short], pos[short] = plaid(np.ascontiguousarray(q[short]), wide)
                short = short_rows()
            if short.size:
                scores[short], pos[short] = exhaustive(np.ascontiguousarray(q[short]))
        ids = snap.ids_of(pos)
        scores = scores.astype(np.float32, copy=False)
        return (scores[0], ids[0]) if single else (scores, ids)

    def _search_cpu(self, q: np.ndarray, allowed: np.ndarray, p: SearchParams, nprobe: int, k: int,
                    num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        snap, a = self._snap, self._snap.a
        ivf, ivf_offsets = snap.ivf()
        # The native search scores the query tokens against the centroids itself, per query and straight
        # in the layout it needs, and reads each candidate's distinct cells; the reference is given S,
        # computed in chunks that bound its memory.
        native = _kernels.BACKEND_NAME == "native"
        extra = {"doc_cells": snap.doc_cells()} if native else {}

        def run(qc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            S = None if native else _kernels.centroid_scores(qc, snap.centroids_t)  # (nq, q_tokens, nlist)
            return _kernels.search(qc, S, a["codes"], a["residuals"], a["doc_offsets"], ivf, ivf_offsets,
                                   snap.codec.centroids, snap.codec.weights, snap.nbits, allowed, nprobe,
                                   p.centroid_score_threshold, p.ndocs, p.n_exact, k, num_threads=num_threads,
                                   **extra)

        chunk = q.shape[0] if native else max(1, _SCORE_CHUNK_BYTES // (4 * q.shape[1] * snap.nlist))
        if chunk >= q.shape[0]:
            return run(q)
        parts = [run(q[lo:lo + chunk]) for lo in range(0, q.shape[0], chunk)]
        return np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])

    def reconstruct(self, doc_id: int) -> np.ndarray:
        """float32 (n_tokens, d): the decompressed (unit-norm) token embeddings of one live document."""
        snap = self._snap
        p = int(snap.positions([doc_id], live_only=True, what="reconstruct")[0])
        lo, hi = int(snap.a["doc_offsets"][p]), int(snap.a["doc_offsets"][p + 1])
        return snap.codec.decompress(snap.a["codes"][lo:hi], snap.a["residuals"][lo:hi])

    # ------------------------------------------------------------------ updates
    def add(self, documents: Any, *, batch_tokens: int = 1 << 16, progress: bool = False) -> np.ndarray:
        """Compress new documents against the existing centroids and append them; returns their int64 ids.

        Ids continue after the largest id ever assigned, so they never collide with deleted ones.
        """
        with self._writer() as base:
            snap = self._snap
            docs_iter, _ = iter_documents(documents)
            docs = [as_document(d, snap.dim, f"documents[{i}]") for i, d in enumerate(docs_iter)]
            if not docs:
                raise ValueError("add: no documents given")
            n_new_tok = sum(d.shape[0] for d in docs)
            new_ids = np.arange(base["next_id"], base["next_id"] + len(docs), dtype=np.int64)
            tx = Transaction(self.path, base)
            try:
                assigner = Assigner(snap.codec.centroids)
                n_tok = snap.n_tokens + n_new_tok
                codes_w = tx.stream("codes", np.uint16, (n_tok,))
                res_w = tx.stream("residuals", np.uint8, (n_tok, snap.codec.packed_dim))
                _copy_rows(snap.a["codes"], codes_w)
                _copy_rows(snap.a["residuals"], res_w)
                norm_sum = _compress_stream(docs, assigner, snap.codec, codes_w, res_w, batch_tokens,
                                                       progress)
                tx.finish("codes", codes_w)
                tx.finish("residuals", res_w)
                lens = np.array([d.shape[0] for d in docs], dtype=np.int64)
                offsets = np.concatenate([snap.a["doc_offsets"], snap.n_tokens + np.cumsum(lens)])
                tx.put("doc_offsets", offsets)
                tx.put("doc_ids", np.concatenate([snap.a["doc_ids"], new_ids]))
                tx.put("deleted", np.concatenate([snap.a["deleted"], np.zeros(len(docs), np.uint8)]))
                upd = dict(base.get("updates") or {})
                upd["added_tokens"] = int(upd.get("added_tokens", 0)) + n_new_tok
                upd["added_residual_norm_sum"] = float(upd.get("added_residual_norm_sum", 0.0)) + norm_sum
                manifest = tx.commit({"n_docs": snap.n_docs + len(docs), "n_tokens": n_tok,
                                      "next_id": int(new_ids[-1]) + 1, "updates": upd})
            except BaseException:
                tx.abort()
                raise
            self._switch(manifest)
        drift = self.drift()
        if drift["recommend_recluster"]:
            warnings.warn(f"added documents drift from the centroids (residual norm ratio {drift['ratio']:.2f} "
                          f"> {DRIFT_WARNING_RATIO}); consider Index.recluster() for better recall",
                          stacklevel=2)
        return new_ids

    def delete(self, ids: Any) -> int:
        """Remove documents from results at once (their space is reclaimed by :meth:`compact`).

        Raises KeyError naming ids that are unknown or already deleted; nothing changes then.
        Returns the number of documents deleted.
        """
        with self._writer() as base:
            snap = self._snap
            ids = np.unique(np.asarray(ids).ravel()) if np.asarray(ids).size else np.zeros(0, np.int64)
            if ids.size == 0:
                return 0
            pos = snap.positions(ids, live_only=True, what="delete")
            deleted = np.array(snap.a["deleted"])
            deleted[pos] = 1
            tx = Transaction(self.path, base)
            try:
                tx.put("deleted", deleted)
                manifest = tx.commit({"n_deleted": snap.n_deleted + int(pos.size)})
            except BaseException:
                tx.abort()
                raise
            self._switch(manifest)
            return int(pos.size)

    def compact(self, *, progress: bool = False) -> int:
        """Rewrite the index without deleted documents; ids do not change. Returns documents dropped."""
        with self._writer() as base:
            snap = self._snap
            if not snap.n_deleted:
                return 0
            keep = np.flatnonzero(np.asarray(snap.a["deleted"]) == 0)
            offs = np.asarray(snap.a["doc_offsets"])
            lens = offs[keep + 1] - offs[keep]
            n_tok = int(lens.sum())
            tx = Transaction(self.path, base)
            try:
                codes_w = tx.stream("codes", np.uint16, (n_tok,))
                res_w = tx.stream("residuals", np.uint8, (n_tok, snap.codec.packed_dim))
                for i in _progress(range(0, keep.size, 4096), None, "compacting", progress):
                    sel = keep[i:i + 4096]
                    tok = np.concatenate([np.arange(offs[p], offs[p + 1]) for p in sel])
                    c = np.asarray(snap.a["codes"][tok])
                    codes_w.append(c)
                    res_w.append(np.asarray(snap.a["residuals"][tok]))
                tx.finish("codes", codes_w)
                tx.finish("residuals", res_w)
                new_offs = np.zeros(keep.size + 1, dtype=np.int64)
                np.cumsum(lens, out=new_offs[1:])
                tx.put("doc_offsets", new_offs)
                tx.put("doc_ids", np.asarray(snap.a["doc_ids"])[keep])
                tx.put("deleted", np.zeros(keep.size, np.uint8))
                manifest = tx.commit({"n_docs": int(keep.size), "n_tokens": n_tok, "n_deleted": 0})
            except BaseException:
                tx.abort()
                raise
            self._switch(manifest)
            return int(snap.n_docs - keep.size)

    def recluster(self, *, nlist: int | None = None, kmeans_niters: int = 4, seed: int = 0,
                  progress: bool = False, kmeans: str = "auto") -> Index:
        """Re-train centroids and codec on the decompressed live documents and re-encode them, keeping ids.

        Use it when :meth:`drift` recommends it. The source is the decompressed index, so a second
        round of quantization error is added; rebuilding from the original embeddings is better when
        they are at hand. ``kmeans`` as in :meth:`build`.
        """
        _check_build_args(self._snap.nbits, nlist, kmeans_niters, 1 << 16, kmeans)
        with self._writer() as base:
            snap = self._snap
            live = np.asarray(self.ids)
            if live.size == 0:
                raise ValueError("recluster: the index holds no live documents")
            source = _DecompressedSource(snap, snap.positions(live, live_only=True, what="recluster"))
            new = _build_generation(self.path, source, live, base, nbits=snap.nbits, nlist=nlist,
                                    kmeans_niters=kmeans_niters, seed=seed, kmeans_sample=None,
                                    batch_tokens=1 << 16, metadata=self.metadata, progress=progress,
                                    next_id=int(base["next_id"]), kmeans=kmeans)
            self._snap = new
        return self

    # ------------------------------------------------------------------ inspection
    def drift(self) -> dict[str, Any]:
        """How far documents added since the build sit from the centroids, relative to the build's own."""
        m = self._snap.manifest
        build_norm = float((m.get("build") or {}).get("residual_norm_mean", 0.0))
        upd = m.get("updates") or {}
        added = int(upd.get("added_tokens", 0))
        added_norm = float(upd.get("added_residual_norm_sum", 0.0)) / added if added else None
        ratio = (added_norm / build_norm) if (added_norm is not None and build_norm > 0) else None
        return {"build_residual_norm": build_norm, "added_tokens": added, "added_residual_norm": added_norm,
                "ratio": ratio, "threshold": DRIFT_WARNING_RATIO,
                "recommend_recluster": bool(ratio is not None and ratio > DRIFT_WARNING_RATIO)}

    def verify(self) -> list[str]:
        """Check the CRC-32 of every array of the current generation on disk; returns problems (empty: OK)."""
        return verify_index(self.path)

    def info(self) -> dict[str, Any]:
        """What the index holds, for humans and ``plaidx info``."""
        s = self._snap
        size = dir_size(self.path, s.manifest)
        return {"path": str(self.path), "format_version": s.manifest["format_version"],
                "generation": s.generation, "documents": len(self), "deleted_pending_compaction": s.n_deleted,
                "tokens": s.n_tokens, "dim": s.dim, "nbits": s.nbits, "nlist": s.nlist,
                "bytes_on_disk": size, "bytes_per_token": size / max(1, s.n_tokens),
                "metadata": self.metadata, "drift": self.drift(), "build": s.manifest.get("build", {})}

    # ------------------------------------------------------------------ internals
    def _writer(self) -> _WriterScope:
        return _WriterScope(self)

    def _switch(self, manifest: dict[str, Any]) -> None:
        self._snap = Index.open(self.path, verify="none")._snap


class _WriterScope:
    """Hold the folder lock and a per-handle mutex; yield the on-disk manifest (reloading if it moved on)."""

    def __init__(self, index: Index):
        self.index = index
        self.lock = WriterLock(index.path)

    def __enter__(self) -> dict[str, Any]:
        self.index._write_mutex.acquire()
        try:
            self.lock.acquire()
        except BaseException:
            self.index._write_mutex.release()
            raise
        try:
            manifest = read_manifest(self.index.path)
            retire_unreferenced(self.index.path, manifest)
            if manifest["generation"] != self.index.generation:
                self.index._snap = Index.open(self.index.path, verify="none")._snap
            return self.index._snap.manifest
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()
        self.index._write_mutex.release()


class _DecompressedSource:
    """The live documents of a snapshot, decompressed on access (the source of a recluster)."""

    def __init__(self, snap: _Snapshot, positions: np.ndarray):
        self.snap, self.pos = snap, positions

    def __len__(self) -> int:
        return int(self.pos.size)

    def __getitem__(self, i: int) -> np.ndarray:
        p = int(self.pos[i])
        lo, hi = int(self.snap.a["doc_offsets"][p]), int(self.snap.a["doc_offsets"][p + 1])
        return self.snap.codec.decompress(self.snap.a["codes"][lo:hi], self.snap.a["residuals"][lo:hi])


def _check_build_args(nbits: Any, nlist: Any, kmeans_niters: Any, batch_tokens: Any, kmeans: Any = "auto") -> None:
    if nbits not in NBITS or isinstance(nbits, bool):
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits!r}")
    if nlist is not None and (isinstance(nlist, bool) or not isinstance(nlist, int)
                              or not 1 <= nlist <= MAX_NLIST):
        raise ValueError(f"nlist must be an integer in [1, {MAX_NLIST}] or None, got {nlist!r}")
    if isinstance(kmeans_niters, bool) or not isinstance(kmeans_niters, int) or kmeans_niters < 1:
        raise ValueError(f"kmeans_niters must be a positive integer, got {kmeans_niters!r}")
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ValueError(f"batch_tokens must be a positive integer, got {batch_tokens!r}")
    check_kmeans_method(kmeans)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is a file; choose a folder path for the index")
    if (path / MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"an index already exists at {str(path)!r}; pass overwrite=True to replace it "
                                  "or use Index.open(path).add(...) to extend it")
        return
    if path.is_dir():
        foreign = [p.name for p in path.iterdir() if not _OWN_FILE.match(p.name)]
        if foreign:
            raise FileExistsError(f"{str(path)!r} is a non-empty folder that is not a plaidx index "
                                  f"(it holds {foreign[:3]}); choose an empty or new folder")


def _copy_rows(src: np.ndarray, writer: Any, rows: int = 1 << 18) -> None:
    for lo in range(0, src.shape[0], rows):
        writer.append(np.asarray(src[lo:lo + rows]))


def _compress_stream(docs: Any, assigner: Assigner, codec: ResidualCodec, codes_w: Any, res_w: Any,
                     batch_tokens: int, progress: bool, total: int | None = None,
                     lengths_out: list[int] | None = None) -> float:
    """Assign and compress documents batch by batch into the writers; returns the residual norm sum."""
    norm_sum = 0.0
    batch: list[np.ndarray] = []
    n_batch = 0

    def flush() -> None:
        nonlocal norm_sum, n_batch
        x = np.concatenate(batch, axis=0)
        codes = assigner.assign(x)
        packed, norms = codec.compress(x, codes)
        codes_w.append(codes)
        res_w.append(packed)
        norm_sum += float(norms.sum())
        batch.clear()
        n_batch = 0

    for i, doc in enumerate(_progress(docs, total, "compressing", progress)):
        arr = as_document(doc, codec.dim, f"documents[{i}]")
        if lengths_out is not None:
            lengths_out.append(arr.shape[0])
        batch.append(arr)
        n_batch += arr.shape[0]
        if n_batch >= batch_tokens:
            flush()
    if batch:
        flush()
    return norm_sum


def _gather_sample(source: Any, order: np.ndarray, start: int, want: int, dim: int | None) -> tuple[np.ndarray, int]:
    """Up to ``want`` token rows of the documents order[start:], in that order, and the next position.

    Filled into one preallocated array (the last document contributes the rows that fit), so the
    sample never exists twice in memory: at d = 384 and 2**20 rows it is 1.5 GiB.
    """
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


def _build_generation(path: Path, documents: Any, ids: np.ndarray | None, base: dict[str, Any] | None, *,
                      nbits: int, nlist: int | None, kmeans_niters: int, seed: int, kmeans_sample: int | None,
                      batch_tokens: int, metadata: dict[str, Any] | None, progress: bool,
                      next_id: int | None = None, codec: ResidualCodec | None = None,
                      kmeans: str = "auto") -> _Snapshot:
    """Write a whole new generation (centroids, codec, codes, IVF) from documents; the lock is held."""
    docs_iter, count = iter_documents(documents)
    spill = None
    source = documents
    if count is None:
        spill = _Spill(path / f".spill.{os.getpid()}.tmp", docs_iter, progress)
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
            nl = default_nlist(n_tokens) if nlist is None else nlist
            if nl > n_tokens:
                raise ValueError(f"nlist={nl} exceeds the number of token embeddings ({n_tokens}); "
                                 "use a smaller nlist")
            want = kmeans_sample or default_kmeans_sample(nl, n_tokens)
            # keep a few documents out of k-means: the held-out set trains the codec and gives the
            # unbiased residual norm that drift is measured against
            n_held = max(n_docs // 20, min(n_docs // 5, 50))
            in_sample = order[: n_docs - n_held] if n_docs >= 10 else order
            sample, used = _gather_sample(source, in_sample, 0, max(want, nl), None)
            if sample.shape[0] < nl:
                sample, used = _gather_sample(source, order, 0, max(want, nl), None)
            dim = sample.shape[1]
            if dim % 8:
                raise ValueError(f"embedding dimension {dim} is not a multiple of 8 (required by the residual "
                                 "packing)")
            timings["sample_s"] = round(time.perf_counter() - t0, 3)
            centroids = train_centroids(sample, nl, kmeans_niters, seed, verbose=False, method=kmeans)
            timings["kmeans_s"] = round(time.perf_counter() - t0 - timings["sample_s"], 3)
            # round to what is stored first, so that what is compressed against is what is decoded
            stored = centroid_arrays(centroids, nbits)
            centroids = stored_centroids(stored)
            assigner = Assigner(centroids)
            held_want = int(min(max(n_tokens // 20, 4096), 1 << 16))
            heldout, _ = _gather_sample(source, order, used, held_want, dim)
            if heldout.shape[0] < min(held_want, 64):
                heldout = sample[: held_want]
            del sample
            h_codes = assigner.assign(heldout)
            h_res = heldout - centroids[h_codes.astype(np.intp)]
            ref_norm = float(np.linalg.norm(h_res, axis=1).mean())
            cutoffs, weights = train_codebooks(h_res, nbits)
            codec = ResidualCodec(centroids, cutoffs, weights, nbits)
            avg_residual = np.abs(h_res).mean(axis=0).astype(np.float32)
        else:
            nl, dim, want = codec.centroids.shape[0], codec.dim, 0
            # a format 1 source has float16 centroids at any nbits: compress against what will be stored
            stored = centroid_arrays(codec.centroids, codec.nbits)
            centroids = stored_centroids(stored)
            codec = dataclasses.replace(codec, centroids=centroids)
            cutoffs, weights = codec.cutoffs, codec.weights
            assigner = Assigner(centroids)
            probe, _ = _gather_sample(source, order, 0, 1 << 15, dim)
            p_codes = assigner.assign(probe)
            p_res = probe - centroids[p_codes.astype(np.intp)]
            avg_residual = np.abs(p_res).mean(axis=0).astype(np.float32)
            ref_norm = float(np.linalg.norm(p_res, axis=1).mean())
        codes_w = tx.stream("codes", np.uint16, (n_tokens,))
        res_w = tx.stream("residuals", np.uint8, (n_tokens, codec.packed_dim))
        seen: list[int] = []
        t1 = time.perf_counter()
        norm_sum = _compress_stream((source[i] for i in range(n_docs)), assigner, codec, codes_w, res_w,
                                           batch_tokens, progress, total=n_docs, lengths_out=seen)
        if seen != lengths.tolist():
            raise ValueError("documents changed length between the two passes of the build")
        tx.finish("codes", codes_w)
        tx.finish("residuals", res_w)
        timings["assign_compress_s"] = round(time.perf_counter() - t1, 3)
        offsets = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        doc_ids = np.arange(n_docs, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        for name, arr in (*stored.items(), ("bucket_cutoffs", cutoffs),
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
                            "format_version": FORMAT_VERSION}}
        manifest = tx.commit(fields)
    except BaseException:
        tx.abort()
        raise
    finally:
        if spill is not None:
            spill.close()
    _, arrays = load_generation(path, verify="none")
    return _Snapshot(path, manifest, arrays)


def _n_rows(doc: Any, i: int) -> int:
    shape = getattr(doc, "shape", None)
    if shape is None:
        shape = np.shape(doc)
    if len(shape) != 2:
        raise ValueError(f"documents[{i}]: expected shape (n_tokens, d), got {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError(f"documents[{i}]: the document has no token embeddings; drop empty documents")
    return int(shape[0])


__all__ = ["Index", "PlaidxError", "ArrayEntry"]
