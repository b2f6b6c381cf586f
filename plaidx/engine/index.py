"""The Index: open (memory-mapped), search, reconstruct, add, delete, compact, recluster and verify."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DriftWarning
from . import cellq, gpu, kernels
from .build import (
    DecompressedSource,
    build_generation,
    check_build_args,
    check_metadata,
    check_target,
    compress_stream,
    copy_rows,
    progress_bar,
)
from .clustering import Assigner
from .codec import check_residual_codec, code_dtype, reused_table
from .gpu_build import build_ops
from .inputs import (
    as_document,
    as_filter,
    check_flag,
    check_k,
    id_array,
    iter_documents,
    one_batch,
)
from .params import SearchParams, nprobe_for_filter
from .snapshot import Snapshot
from .storage import (
    MANIFEST,
    Transaction,
    WriterLock,
    WriterScope,
    dir_size,
    load_generation,
    read_manifest,
    retire_unreferenced,
    verify_index,
)
from .vectors import VectorWriter, check_keep_vectors, check_rerank, drop_tier

DRIFT_WARNING_RATIO = 1.25
_SCORE_CHUNK_BYTES = 64 << 20


class Index:
    """A compressed multi-vector index on disk, searched with the PLAID pipeline.

    Open one with :meth:`Index.build` or :meth:`Index.open`. A handle reads one committed generation
    (memory-mapped) and keeps it until :meth:`reload`; searches are thread-safe. Writers
    (:meth:`add`, :meth:`delete`, :meth:`compact`) hold the folder's lock while they commit.
    """

    def __init__(self, path: Path, snapshot: Snapshot):
        self.path = Path(path)
        self._snap = snapshot
        self._write_mutex = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stamp = _manifest_stamp(self.path)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, verify: str = "structure") -> Index:
        """Open the index at ``path`` memory-mapped.

        ``verify``: "structure" (default) checks the CRC-32 of every array but the residuals,
        "full" checks all, "none" only headers and shapes.
        """
        path = Path(path)
        manifest, arrays = load_generation(path, verify=verify)
        return cls(path, Snapshot(path, manifest, arrays))

    def reload(self) -> Index:
        """Switch this handle to the newest committed generation."""
        self._snap = Index.open(self.path)._snap
        self._stamp = _manifest_stamp(self.path)
        return self

    def changed_on_disk(self) -> bool:
        """Whether another handle or process committed a generation since this handle read its own.

        Cheap (one ``stat`` of the manifest): call it before each request in a long-lived reader.
        """
        return _manifest_stamp(self.path) != self._stamp

    def refresh(self) -> bool:
        """Pick up another handle's or process's commit: reload when :meth:`changed_on_disk`.

        Returns True when this handle switched to a newer generation. Searches already running keep the
        generation they started with.
        """
        if not self.changed_on_disk():
            return False
        with self._refresh_lock:
            stamp = _manifest_stamp(self.path)
            if stamp == self._stamp:
                return False
            manifest, arrays = load_generation(self.path)
            self._snap = Snapshot(self.path, manifest, arrays)
            self._stamp = stamp
            return True

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
    def keep_vectors(self) -> str | None:
        """The rerank tier's kind ("int8" or "float16"), or None when the index keeps no vectors."""
        return self._snap.kept.kind if self._snap.kept is not None else None

    @property
    def residual_codec(self) -> str:
        """How the residuals are coded: "scalar" (per-dimension codebooks) or "pq" (format 5)."""
        return self._snap.codec.kind

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
              kmeans: str = "auto", keep_vectors: str | None = None, device: Any = None,
              residual_codec: str | None = None) -> Index:
        """Build a compressed index from per-token document embeddings.

        Parameters
        ----------
        path : folder to create (or an existing index, with ``overwrite=True``).
        documents : sequence of float32/float16 (n_tokens_i, d) arrays (numpy or torch), or an iterable
            of such arrays or of batches (lists of them); document ids are 0..n-1 in this order. The pass
            that compresses them reads them on a worker thread (in order, one at a time) while the previous
            batch is assigned, so a lazy source that relies on thread-local state (an enclosing
            ``torch.no_grad()``, say) should set that state inside itself.
        nbits : bits per residual dimension, one of 1, 2, 4, 8. From 4 the default search is wider
            (``SearchParams.for_k``): such codes rank close candidates well enough to use more of them.
        nlist : number of centroids; default ``default_nlist(n_tokens)`` (at most 16384 up to 2M tokens, then
            one per 64 tokens up to 2**18; 65536 with ``device="cuda"``). An explicit value
            may go up to ``clustering.MAX_NLIST`` (2**22): above 65536 the codes are stored as uint32
            (format 4, two bytes more per token) and the index searches on the CPU only.
        kmeans_niters, seed : k-means iterations and seed (the build is deterministic given both).
        kmeans_sample : tokens used to train k-means; default 80 per centroid, at most 2**20 (above 16384
            centroids at least 32 per centroid, at most 2**23).
        kmeans : "auto" (two-level k-means from 1024 centroids: fast) or "flat" (one k-means over the
            whole sample: slower; better recall on some large collections, see the README).
        batch_tokens : tokens compressed per batch (bounds the build's memory).
        overwrite : replace an existing index at ``path`` (as one atomic commit).
        metadata : JSON-serialisable dict stored in the manifest (e.g. the model that made the embeddings).
        codec_from : an Index (or its path) whose centroids and codebooks to reuse instead of training
            new ones (k-means is skipped; nbits and nlist come from it). Indexes built this way compress
            identical embeddings to identical codes, e.g. shards of one collection.
        keep_vectors : None (default), "int8" or "float16": also keep every token's vector in a memory-mapped
            rerank tier beside the codes (int8: d + 4 bytes per token, one scale per token; float16: 2 d bytes).
            Searches then re-score their best candidates with it (see ``rerank`` in :meth:`search`);
            add, delete, compact and recluster maintain it; an overwrite without it drops it.
        device : None/"cpu" (default) or "cuda"/"cuda:N": run k-means, assignment and compression on that GPU
            (plaidx.engine.gpu_build), writing the same format; the result equals the CPU build's up to
            nearest-centroid ties and float order (and, from 4096 centroids, the GPU assigns exactly where the
            CPU's assignment is approximate). A clear error when this build or machine has no usable GPU.
        residual_codec : "scalar" (per-dimension codebooks, formats 1-4), "pq" (format 5: the residual
            product-quantised, one 256-codeword codebook per packed byte, with a 16-level scale per token in
            the last byte's spare nibble; the same bytes per token and a higher recall, see docs/tuning.md;
            nbits 1, 2 or 4, built on the CPU) or None (default): "pq" at nbits 1 and 2 from 409,600 / nbits
            tokens in a CPU build, where its 256 d-float table is at most 2% of the residual bytes, else
            "scalar" (``codec.default_residual_codec``). With ``codec_from`` the source's codec is kept.
        """
        path = Path(path)
        keep_vectors = check_keep_vectors(keep_vectors)
        if codec_from is None:
            check_residual_codec(residual_codec, nbits)
        codec = table = None
        if codec_from is not None:
            src = codec_from if isinstance(codec_from, Index) else Index.open(codec_from)
            codec = src._snap.codec
            table = reused_table(src._snap.a, codec.nbits)
            if nlist is not None and nlist != codec.centroids.shape[0]:
                raise ValueError(f"nlist={nlist} conflicts with codec_from's nlist={codec.centroids.shape[0]}")
            if residual_codec is not None and residual_codec != codec.kind:
                raise ValueError(f"residual_codec={residual_codec!r} conflicts with codec_from's {codec.kind!r} codec; "
                                 "leave it None to keep the source's")
            nbits, nlist = codec.nbits, None
        if (codec.kind if codec is not None else residual_codec) == "pq" and gpu.names_cuda(device):
            raise ValueError("the pq residual codec builds on the CPU: leave device=None, or build with "
                             "residual_codec='scalar' on the GPU")
        nbits, nlist, kmeans_niters, batch_tokens, seed, kmeans_sample = check_build_args(
            nbits, nlist, kmeans_niters, batch_tokens, kmeans, seed=seed, kmeans_sample=kmeans_sample)
        metadata = check_metadata(metadata)
        gpu.check_codes_fit(device, nlist or (codec.centroids.shape[0] if codec is not None else 0), "build")
        ops = build_ops(device)  # a clear error before anything is written when no GPU can be used
        check_target(path, overwrite)
        with WriterLock(path):
            base = read_manifest(path) if (path / MANIFEST).exists() else None
            retire_unreferenced(path, base)
            snap = build_generation(path, documents, None, base, nbits=nbits, nlist=nlist,
                                     kmeans_niters=kmeans_niters, seed=seed, kmeans_sample=kmeans_sample,
                                     batch_tokens=batch_tokens, metadata=metadata, progress=progress,
                                     codec=codec, kmeans=kmeans, keep_vectors=keep_vectors, ops=ops,
                                     codec_table=table, residual_codec=residual_codec)
        return cls(path, snap)

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int = 10, *, params: SearchParams | None = None, nprobe: int | None = None,
               centroid_score_threshold: float | None = None, ndocs: int | None = None,
               n_exact: int | None = None, exact: bool = False, doc_ids: Any = None,
               num_threads: int = 0, device: Any = None, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k documents of each query by MaxSim.

        A query whose probes find too few candidates (fewer than k up to k 10, fewer than ``n_exact`` or
        ``rerank`` above: :meth:`SearchParams.candidates_wanted`) is searched again probing 16x more cells, and
        exhaustively if it still finds fewer than k.

        Parameters
        ----------
        queries : float (nq, q_tokens, d) or (q_tokens, d), numpy or torch; or a list of (q_tokens, d) matrices of
            different lengths (the queries of each length are searched together). Rows of zeros (the padding
            of encoders without query augmentation) are left out first: they add 0 to every score, and would
            otherwise probe cells by ties.
        k : results per query.
        params : a :class:`SearchParams` (unset knobs take their defaults by k and the index size).
        nprobe, centroid_score_threshold, ndocs, n_exact : the same knobs one by one (not with ``params``).
        exact : exhaustive MaxSim over every document instead of PLAID: over the kept vectors when the index
            has them (and ``rerank`` is not 0), else over the decompressed codes.
        rerank : how many of the centroid stage's best candidates are scored by MaxSim over their kept vectors
            (an index built with ``keep_vectors``), in place of PLAID's exact stage over ``n_exact`` decompressed
            candidates; None: the tier's default there (see :meth:`SearchParams.resolve`), none elsewhere;
            0: no re-scoring (PLAID over the codes). Also a :class:`SearchParams` field. A positive value on
            an index without kept vectors, or ``n_exact`` together with re-scoring, is an error.
        doc_ids : optional ids to restrict the search to (filtered inside the engine); an empty list
            allows no document, so every row is padding. Deleted ids are skipped, before and after a
            :meth:`compact`; an id the index never issued is a KeyError. One list per query (a list of ``nq``
            lists, or a 2-D array) filters each query by its own; the queries that share one are searched
            together. A filter allowing no more documents than ``ndocs`` makes every allowed document a candidate
            instead of probing cells; a wider one scales the default ``nprobe`` by the share of documents it keeps
            out (:func:`plaidx.engine.params.nprobe_for_filter`).
        num_threads : OpenMP threads for this call (0: the default); CPU only.
        device : ``None``/``"cpu"`` (native CPU kernels) or ``"cuda"``/``"cuda:N"``: the same pipeline
            on a GPU (the index is copied there on first use and kept while this generation is open).
            GPU scores equal the CPU's float32 ones (``SearchParams(exact_scores="float32")``) to float
            rounding.

        Returns
        -------
        scores : float32 (nq, k), best first, -inf padding.
        ids : int64 (nq, k), -1 padding. A single (q_tokens, d) query is one row: (1, k), as in faiss.
        """
        knobs = SearchParams.of_call(params, nprobe, centroid_score_threshold, ndocs, n_exact, rerank)
        # One generation answers the whole call, even if a refresh or a write through this handle lands during it
        return self._search(self._snap, queries, check_k(k), knobs, check_flag(exact, "exact"), doc_ids, num_threads,
                            device)

    def _search(self, snap: Snapshot, queries: Any, k: int, knobs: SearchParams, exact: bool, doc_ids: Any,
                num_threads: int, device: Any) -> tuple[np.ndarray, np.ndarray]:
        q, done = one_batch(queries, doc_ids, snap.dim, k,
                            lambda qs, f: self._search(snap, qs, k, knobs, exact, f, num_threads, device))
        if done is not None:  # queries of different lengths or zero rows, or one filter per query: a search per part
            return done
        gpu.check_codes_fit(device, snap.nlist)
        dev = gpu.resolve_device(device)
        allowed = snap.live_mask
        if doc_ids is not None:
            doc_ids = as_filter(doc_ids)
            if doc_ids.size == 0:  # no document allowed: every row is padding
                return (np.full((q.shape[0], k), -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64))
            pos = snap.filter_positions(doc_ids)
            allowed = np.zeros(snap.n_docs, dtype=np.uint8)
            allowed[pos] = 1
            if snap.n_deleted:
                allowed &= snap.live_mask
        a = snap.a
        tier = check_rerank(knobs.rerank, snap.kept is not None)
        coll = snap.on_device(dev) if dev is not None and not (exact and tier) else None
        # On the CPU the tier's kept vectors are scored inside the search (step 5, in place of decompressing
        # the candidates); on a GPU the search hands its best `rerank` candidates to KeptVectors.rerank, which
        # gives the same scores.
        kept = snap.kept.arrays() if tier and coll is None else None

        def exhaustive(qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if tier:
                return snap.kept.exact_search(qs, a["doc_offsets"], allowed, k, num_threads=num_threads)
            if coll is not None:
                return coll.exact_search(qs, allowed, k)
            return kernels.exact_search(qs, a["codes"], a["residuals"], a["doc_offsets"], snap.codec.centroids,
                                         snap.codec.kernel_weights, snap.nbits, allowed, k, num_threads=num_threads)

        if exact:
            scores, pos = exhaustive(q)
        else:
            p = knobs.resolve(k, n_tokens=snap.n_tokens, nbits=snap.nbits, tier=tier,
                              doc_tokens=snap.n_tokens / max(1, snap.n_docs))
            nprobe_eff = min(p.nprobe, snap.nlist)
            # the int8 centroids the first stage scores against (cellq.py), or None: float32 scores. Unset, int8 on
            # a GPU and where the CPU runs the int8 kernels as AVX-512 VNNI (elsewhere they are slower than float)
            fast_int8 = kernels.INT8_VNNI and q.shape[1] <= kernels.VNNI_MAX_QUERY_TOKENS
            int8_cells = p.cell_scores == "int8" or (p.cell_scores is None and (coll is not None or fast_int8))
            cells = snap.cell_codes if int8_cells else None
            if p.exact_scores in ("int8", "adc") and coll is not None:
                raise ValueError(f"exact_scores={p.exact_scores!r} runs on the CPU: leave it None (float32 on a GPU) "
                                 "or search with device=None")
            plain = kept is None and not tier and coll is None
            exact_adc = plain and p.exact_scores in ("adc", None)
            exact_int8 = plain and p.exact_scores == "int8"
            if exact_int8 and snap.dim > cellq.MAX_QUANTIZED_DIM:
                raise ValueError(f"exact_scores='int8' needs d <= {cellq.MAX_QUANTIZED_DIM} (this index has d "
                                 f"{snap.dim}): leave it None (the lookup stage) or pass 'float32'")

            # The kernel returns as many candidates as the probes should find (SearchParams.candidates_wanted: k,
            # or the n_exact that step 5 scores), best first: a row padded before them found fewer. On a GPU the
            # tier re-scores the kernel's best `rerank` (its n_exact) afterwards.
            wanted = p.candidates_wanted(k)
            k_out = p.n_exact if tier and kept is None else wanted

            n_allowed = int(np.count_nonzero(allowed)) if allowed.size else snap.n_docs
            # A filter that allows no more documents than the centroid stage keeps (ndocs): every allowed
            # document is a candidate, all of them found for at most about a third more time than probing
            # (benchmarks/results/ab_filter_*.md). The CPU kernel is given them instead of probing; a GPU probes
            # every cell, which finds the same.
            every = doc_ids is not None and n_allowed <= p.ndocs
            given = np.flatnonzero(allowed) if every and coll is None else None

            def probes(n: int) -> int:  # n cells a token, at most every cell; a GPU probes at most MAX_NPROBE below
                n = min(snap.nlist, n)
                return min(n, gpu.MAX_NPROBE) if coll is not None and n < snap.nlist else n

            # A wider filter probes more cells than the default, as many more as it keeps out (nprobe_for_filter)
            if doc_ids is not None and not every and knobs.nprobe is None:
                nprobe_eff = probes(nprobe_for_filter(nprobe_eff, n_allowed, snap.n_docs - snap.n_deleted))

            # Hubs (SearchParams.max_cell_docs) add no candidates; a GPU probing every cell for a narrow filter
            # takes every allowed document, as the CPU, given them, does
            max_list = 0 if every else p.cell_docs_limit(snap.n_docs)

            def plaid(qs: np.ndarray, n_probe: int) -> tuple[np.ndarray, np.ndarray]:
                if coll is not None:
                    return coll.search(qs, allowed, snap.nlist if every else n_probe, p.centroid_score_threshold,
                                       p.ndocs, p.n_exact, k_out, quantized=cells is not None, max_list=max_list)
                return self._search_cpu(snap, qs, allowed, p, cells, n_probe, k_out, num_threads, kept, exact_int8,
                                        exact_adc, given, max_list)

            scores, pos = plaid(q, nprobe_eff)
            # PLAID only sees documents in the probed cells. When a row's probes found fewer candidates than
            # wanted while more allowed documents exist (a deep k, a narrow filter, a small index, query tokens
            # whose best cells are nearly empty), search that row again probing 16x more cells, then exhaustively
            # if it is still short of k. Rows are padded at the end, so a row holds fewer than m candidates when
            # its m-th entry is padding.

            def short_rows(m: int) -> np.ndarray:
                return np.flatnonzero(pos[:, m - 1] < 0) if m > 0 else np.zeros(0, np.int64)

            short = short_rows(min(wanted, n_allowed))
            if short.size and nprobe_eff < snap.nlist and not every:
                scores[short], pos[short] = plaid(np.ascontiguousarray(q[short]), probes(16 * nprobe_eff))
            if tier and kept is None:
                scores, pos = snap.kept.rerank(q, a["doc_offsets"], pos, k, num_threads=num_threads)
            else:
                scores, pos = np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(pos[:, :k])
            short = short_rows(min(k, n_allowed))
            if short.size:
                scores[short], pos[short] = exhaustive(np.ascontiguousarray(q[short]))
        return scores.astype(np.float32, copy=False), snap.ids_of(pos)

    @staticmethod
    def _search_cpu(snap: Snapshot, q: np.ndarray, allowed: np.ndarray, p: SearchParams, cells: Any, nprobe: int,
                    k: int, num_threads: int, kept: Any = None, exact_int8: bool = False,
                    exact_adc: bool = False, given: np.ndarray | None = None,
                    max_list: int = 0) -> tuple[np.ndarray, np.ndarray]:
        a = snap.a
        ivf, ivf_offsets = snap.ivf()
        # The native search scores the query tokens against the centroids itself, per query and straight
        # in the layout it needs, and reads each candidate's distinct cells; the reference is given S,
        # computed in chunks that bound its memory.
        # With cells, both score them in int8 (cellq.py), the same values bit for bit.
        native = kernels.BACKEND_NAME == "native"
        extra = {"doc_cells": snap.doc_cells(), "cell_codes": cells} if native else {}
        if kept is not None:
            extra["kept"] = kept
        if exact_int8:
            extra["exact_int8"] = True
        if given is not None:
            extra["candidates"] = given
        if max_list:
            extra["max_list"] = max_list
        if exact_adc:
            extra["token_scales"], done = snap.search_token_scales()
            if done is not None:
                extra["token_scales_done"] = done

        def run(qc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if native:
                S = None
            elif cells is not None:
                S = cellq.quantized_cell_scores(qc, cells)  # (nq, q_tokens, nlist)
            else:
                S = kernels.centroid_scores(qc, snap.centroids_t)
            return kernels.search(qc, S, a["codes"], a["residuals"], a["doc_offsets"], ivf, ivf_offsets,
                                   snap.codec.centroids, snap.codec.kernel_weights, snap.nbits, allowed, nprobe,
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
                codes_w = tx.stream("codes", code_dtype(snap.nlist), (n_tok,))
                res_w = tx.stream("residuals", np.uint8, (n_tok, snap.codec.packed_dim))
                copy_rows(snap.a["codes"], codes_w)
                copy_rows(snap.a["residuals"], res_w)
                vec_w = VectorWriter(tx, snap.kept.kind, n_tok, snap.dim) if snap.kept is not None else None
                if vec_w is not None:
                    vec_w.copy(snap.kept, slice(0, snap.n_tokens))
                norm_sum = compress_stream(docs, assigner, snap.codec, codes_w, res_w, batch_tokens,
                                                       progress, vectors_w=vec_w)
                tx.finish("codes", codes_w)
                tx.finish("residuals", res_w)
                if vec_w is not None:
                    vec_w.finish()
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
                          DriftWarning, stacklevel=2)
        return new_ids

    def delete(self, ids: Any) -> int:
        """Remove documents from results at once (their space is reclaimed by :meth:`compact`).

        Raises KeyError naming ids that are unknown or already deleted; nothing changes then.
        Returns the number of documents deleted.
        """
        with self._writer() as base:
            snap = self._snap
            ids = id_array(ids).ravel()
            ids = np.unique(ids) if ids.size else np.zeros(0, np.int64)
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
                codes_w = tx.stream("codes", code_dtype(snap.nlist), (n_tok,))
                res_w = tx.stream("residuals", np.uint8, (n_tok, snap.codec.packed_dim))
                vec_w = VectorWriter(tx, snap.kept.kind, n_tok, snap.dim) if snap.kept is not None else None
                for i in progress_bar(range(0, keep.size, 4096), None, "compacting", progress):
                    sel = keep[i:i + 4096]
                    tok = np.concatenate([np.arange(offs[p], offs[p + 1]) for p in sel])
                    c = np.asarray(snap.a["codes"][tok])
                    codes_w.append(c)
                    res_w.append(np.asarray(snap.a["residuals"][tok]))
                    if vec_w is not None:
                        vec_w.copy(snap.kept, tok)
                tx.finish("codes", codes_w)
                tx.finish("residuals", res_w)
                if vec_w is not None:
                    vec_w.finish()
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
        """Re-train centroids and codec (of the same kind, scalar or pq) on the decompressed live documents and
        re-encode them, keeping ids.

        Use it when :meth:`drift` recommends it. The source is the decompressed index, so a second
        round of quantization error is added; rebuilding from the original embeddings is better when
        they are at hand. An index with kept vectors is re-encoded from them instead, and keeps them.
        ``kmeans`` as in :meth:`build`.
        """
        _, nlist, kmeans_niters, _, seed, _ = check_build_args(self._snap.nbits, nlist, kmeans_niters, 1 << 16,
                                                             kmeans, seed=seed)
        with self._writer() as base:
            snap = self._snap
            live = np.asarray(self.ids)
            if live.size == 0:
                raise ValueError("recluster: the index holds no live documents")
            source = DecompressedSource(snap, snap.positions(live, live_only=True, what="recluster"))
            new = build_generation(self.path, source, live, base, nbits=snap.nbits, nlist=nlist,
                                    kmeans_niters=kmeans_niters, seed=seed, kmeans_sample=None,
                                    batch_tokens=1 << 16, metadata=self.metadata, progress=progress,
                                    next_id=int(base["next_id"]), kmeans=kmeans,
                                    keep_vectors=snap.kept.kind if snap.kept is not None else None,
                                    residual_codec=snap.codec.kind)
            self._snap = new
            self._stamp = _manifest_stamp(self.path)
        return self

    @classmethod
    def drop_vectors(cls, path: str | os.PathLike) -> Index:
        """Commit a generation without the rerank tier (the kept vectors) and open it.

        It reads none of the kept vectors, so it also repairs an index whose vector file is missing or
        corrupt: the codes stay as they were and searches go on without re-scoring.
        """
        path = Path(path)
        read_manifest(path)  # no index there: an error before the lock creates the folder
        with WriterLock(path):
            base = read_manifest(path)
            retire_unreferenced(path, base)
            tx = Transaction(path, base)
            try:
                drop_tier(tx)
            except BaseException:
                tx.abort()
                raise
        return cls.open(path)

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

    def warm(self, read: bool = False) -> Index:
        """Prepare the current generation for searching, so that its first search is as fast as the next.

        A generation's first search derives the inverted file and each document's cells from the codes (at
        100M tokens about 1.5 s on 2 cores; milliseconds at 1M). ``warm()`` does it now, e.g. as a server starts. With
        ``read=True`` it also asks the kernel to read every array of the index folder into the page cache in
        the background (the kept vectors too), for a machine with the memory to hold them: the first searches
        then find their rows resident instead of reading them from disk. Returns this handle.
        """
        self._snap.warm(read=read)
        return self

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
                "keep_vectors": self.keep_vectors, "residual_codec": s.codec.kind,
                "bytes_on_disk": size, "bytes_per_token": size / max(1, s.n_tokens),
                "metadata": self.metadata, "drift": self.drift(), "build": s.manifest.get("build", {})}

    # ------------------------------------------------------------------ internals
    def _writer(self) -> WriterScope:
        """Hold the folder lock and this handle's mutex; yield the on-disk manifest (reloading if it moved on)."""
        return WriterScope(self.path, self._write_mutex, self._sync_for_write)

    def _sync_for_write(self) -> dict[str, Any]:
        manifest = read_manifest(self.path)
        retire_unreferenced(self.path, manifest)
        if manifest["generation"] != self.generation:
            self._switch(manifest)
        return self._snap.manifest

    def _switch(self, manifest: dict[str, Any]) -> None:
        self._snap = Index.open(self.path, verify="none")._snap
        self._stamp = _manifest_stamp(self.path)


def _manifest_stamp(path: Path) -> tuple[int, int, int] | None:
    """What identifies the committed manifest on disk: a commit replaces the file, so its stamp changes."""
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


__all__ = ["Index"]
