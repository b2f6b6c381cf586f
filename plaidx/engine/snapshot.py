"""One committed generation of an index: its manifest, memory-mapped arrays and derived read-only views."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from . import cellq, gpu, kernels
from .clustering import MAX_NLIST
from .codec import NBITS, PQ_ARRAYS, PQ_LEVELS, PQ_NBITS, ResidualCodec, round_significand, stored_centroids
from .inputs import issued_filter
from .storage import MANIFEST, advise_map
from .vectors import open_kept

_SCALES_CHUNK = 1 << 22  # tokens whose float32 inverse norms token_scales holds at once


class Snapshot:
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
        self.kept = open_kept(arrays, self.n_tokens, self.dim, str(path / MANIFEST))  # the rerank tier, or None
        pq = [np.array(arrays[name]) if name in arrays else None for name in PQ_ARRAYS]  # 128 KiB at d 128: in memory
        self.codec = ResidualCodec(stored_centroids(arrays),
                                   np.ascontiguousarray(arrays["bucket_cutoffs"]),
                                   np.ascontiguousarray(arrays["bucket_weights"]), self.nbits, *pq)
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
        self._token_scales: np.ndarray | None = None
        self._lazy_scales: tuple[np.ndarray, np.ndarray] | None = None
        self._ivf_lock = threading.Lock()
        self._on_device: dict[int, Any] = {}  # CUDA device index -> plaidx._cuda.Collection

    @functools.cached_property
    def centroids_t(self) -> np.ndarray:
        """(d, nlist) float32: the centroids transposed, for the reference backend's query-centroid GEMMs
        (the native search scores the centroids itself)."""
        return np.ascontiguousarray(self.codec.centroids.T)

    @functools.cached_property
    def cell_codes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The centroids quantised row-wise to int8 (kernels.quantize_rows): the search's first stage scores
        query tokens against them (cellq.py). None where d is too large for exact int8 sums."""
        if self.dim > cellq.MAX_QUANTIZED_DIM:
            return None
        return kernels.quantize_rows(np.ascontiguousarray(self.codec.centroids, dtype=np.float32))

    def _check_consistency(self) -> None:
        a, d, nb = self.a, self.dim, self.nbits
        expect = {
            "centroids": (self.nlist, d // 2 if a.get("centroids") is not None and a["centroids"].dtype == np.uint8
                          else d), "bucket_cutoffs": (d, (1 << nb) - 1), "bucket_weights": (d, 1 << nb),
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
        if a["centroids"].dtype in (np.int8, np.uint8):  # int8 rows (format 2) or 4-bit pairs (format 3)
            if "centroid_scales" not in a or tuple(a["centroid_scales"].shape) != (self.nlist,):
                raise IndexFormatError(f"{where}: {a['centroids'].dtype} centroids need a centroid_scales array of "
                                       f"shape ({self.nlist},); the index is inconsistent")
        elif a["centroids"].dtype != np.float16:  # float16: nbits 4 and 8, and every format 1 index
            raise IndexFormatError(f"{where}: centroids must be stored as uint8 or int8 (with centroid_scales) or "
                                   f"float16, not {a['centroids'].dtype}")
        if "pq_table" in a or "pq_levels" in a:
            self._check_pq(where)

    def _check_pq(self, where: str) -> None:
        """The pq codec's arrays (format 5): both present, their shapes, finite, and rounded as the codec
        rounds them (what makes every decoder agree bit for bit)."""
        a, d, nb = self.a, self.dim, self.nbits
        if nb not in PQ_NBITS:
            raise IndexFormatError(f"{where}: a pq index needs nbits in {PQ_NBITS}, got {nb}; the index is inconsistent")
        dpb = 8 // nb
        for name, shape in (("pq_table", (d // dpb, 256, dpb)), ("pq_levels", (PQ_LEVELS,))):
            if name not in a:
                raise IndexFormatError(f"{where}: a pq index needs both pq_table and pq_levels; {name!r} is missing")
            arr = np.asarray(a[name])
            if tuple(arr.shape) != shape or arr.dtype != np.float32:
                raise IndexFormatError(f"{where}: array {name!r} is {arr.dtype} {arr.shape}, expected float32 {shape}")
            if not np.all(np.isfinite(arr)) or not np.array_equal(round_significand(arr), arr):
                raise IndexFormatError(f"{where}: array {name!r} holds values that are not finite or not rounded to "
                                       "12 significant bits, as the pq codec writes them; the index is damaged")

    def ivf(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverted file (cell -> documents), derived from the codes on first use and kept in memory.

        It is not stored: the native kernel rebuilds it from the 2-byte codes faster than it could be
        read from disk, and an index without it is smaller and has one thing less to corrupt.
        """
        if self._ivf is None:
            with self._ivf_lock:
                if self._ivf is None:
                    self._ivf = kernels.build_ivf(np.ascontiguousarray(self.a["codes"]),
                                                   np.ascontiguousarray(self.a["doc_offsets"]), self.nlist)
        return self._ivf

    def doc_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Each document's distinct cells (the inverted file transposed), derived on first use like it."""
        if self._doc_cells is None:
            ivf, ivf_offsets = self.ivf()
            with self._ivf_lock:
                if self._doc_cells is None:
                    self._doc_cells = kernels.doc_cells(ivf, ivf_offsets, self.n_docs)
        return self._doc_cells

    def token_scales(self) -> np.ndarray:
        """float16 (n_tokens,): each decoded token's inverse norm, which the lookup-table exact stage scales its
        scores by (search's ``exact_scores="adc"``), all derived at once from the codes and kept in memory: 2 bytes
        per token, about 20 ms per million tokens on 2 cores plus reading every code. The search itself derives
        them per document as it needs them (:meth:`search_token_scales`) and takes these once they exist."""
        if self._token_scales is None:
            with self._ivf_lock:
                if self._token_scales is None:
                    a, n = self.a, self.n_tokens
                    out = np.empty(n, np.float16)
                    for lo in range(0, n, _SCALES_CHUNK):  # float32 a chunk at a time: memory stays 2 bytes/token
                        hi = min(n, lo + _SCALES_CHUNK)
                        out[lo:hi] = kernels.token_scales(
                            np.ascontiguousarray(a["codes"][lo:hi]), np.ascontiguousarray(a["residuals"][lo:hi]),
                            self.codec.centroids, self.codec.kernel_weights, self.nbits)
                    self._token_scales = out
        return self._token_scales

    def warm(self, read: bool = False) -> int:
        """Derive now what this generation's first search would (the inverted file, each document's cells, the
        int8 centroids); with ``read``, also ask the kernel to read every memory-mapped array of the generation
        (the kept vectors included) into the page cache, in the background (madvise WILLNEED). Returns how many
        maps were advised."""
        self.doc_cells()
        _ = self.cell_codes
        if not read:
            return 0
        maps = list(self.a.values()) + (list(self.kept.arrays()) if self.kept is not None else [])
        return sum(advise_map(arr, "MADV_WILLNEED") for arr in maps)

    def search_token_scales(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The lookup stage's inverse norms as the CPU search takes them: every token's (:meth:`token_scales`) where
        they are derived already, else (scales float16 (n_tokens,), flags uint8 (n_docs,)), zeros that the search
        fills for each candidate it scores (the same values; kernels.search's ``token_scales_done``). So a
        generation's first search decodes its candidates' tokens, not all of them: at 100M tokens that is the
        difference between reading 3.6 GB of codes before the first result and reading what the query needs.
        Zero-filled memory costs nothing until written: it grows with the documents searched, to 2 bytes a token
        and 1 a document."""
        if self._token_scales is not None:
            return self._token_scales, None
        if self._lazy_scales is None:
            with self._ivf_lock:
                if self._lazy_scales is None:
                    self._lazy_scales = (np.zeros(self.n_tokens, np.float16), np.zeros(self.n_docs, np.uint8))
        return self._lazy_scales

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
                        np.ascontiguousarray(a["doc_offsets"]), self.codec.centroids, self.codec.kernel_weights,
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

    def filter_positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of the ids of a search filter that the index still holds (:func:`inputs.issued_filter`: an id
        it issued and deleted is skipped, whether or not a compaction has removed it since)."""
        ids = issued_filter(ids, int(self.manifest["next_id"]))
        pos = np.searchsorted(self.doc_ids, ids)
        held = pos < self.n_docs
        held[held] = self.doc_ids[pos[held]] == ids[held]
        return pos[held].astype(np.int64)

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
            gone = "or deleted; " if live_only and self.n_deleted else ""
            raise KeyError(f"{what}: unknown document ids {bad}{' ...' if (~ok).sum() > 10 else ''}"
                           f" ({gone}the index holds {self.n_docs - self.n_deleted} live documents)")
        return pos.astype(np.int64)
