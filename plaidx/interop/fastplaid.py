"""Convert a fast-plaid, next-plaid or PyLate (``.npy`` layout) index into a plaidx index, without running pickles.

Layout read (fast-plaid 1.x; next-plaid is the same with float32 centroids):
``metadata.json`` (``nbits``, ``num_chunks``, ``num_documents``, ``num_embeddings``), ``centroids.npy``
float16 or float32 (nlist, d), ``bucket_cutoffs.npy`` float32 (2**nbits - 1,), ``bucket_weights.npy``
float32 (2**nbits,), ``avg_residual.npy`` float32 (d,), and per chunk i ``doclens.{i}.json`` with either
``{i}.codes.npy`` int64 / ``{i}.residuals.npy`` uint8 (n_i, d * nbits / 8), or, once fast-plaid has merged
them, ``merged_codes.npy`` / ``merged_residuals.npy`` (the chunks back to back, then padding rows).
The residual bytes use colbert-ai's bit order (fast-plaid packs with the same MSB-first byte weights), so
they are bit-reversed like :mod:`plaidx.interop.colbert` does. Documents fast-plaid keeps pending in
``buffer.npy`` are already compressed into the chunks; ``buffer.npy`` and ``embeddings.npy`` (raw copies
kept for re-clustering, object arrays that only a pickle can read) are never loaded.

A PyLate index folder (``<index_folder>/<index_name>/``) holds ``fast_plaid_index/`` plus the pickled
id maps ``documents_ids_to_plaid_ids.pkl`` / ``plaid_ids_to_documents_ids.pkl``: those are read with an
unpickler that allows no global at all, and PyLate's document ids are written beside the converted index
as ``document_ids.json`` (position -> PyLate id) and returned.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Index
from ..engine.importing import import_compressed
from ..errors import IndexFormatError
from .colbert import colbert_to_plaidx_bits, decode_peer, read_json
from .safe_pickle import load_npy, load_plain_pickle

PYLATE_INNER = "fast_plaid_index"
PYLATE_MAP = "plaid_ids_to_documents_ids.pkl"
DOCUMENT_IDS_FILE = "document_ids.json"


def is_fastplaid_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a fast-plaid/next-plaid index folder or a PyLate folder holding one."""
    p = Path(path)
    if (p / PYLATE_INNER).is_dir():
        p = p / PYLATE_INNER
    return (p / "metadata.json").is_file() and (p / "centroids.npy").is_file()


@dataclass
class FastPlaidIndex:
    """A fast-plaid / next-plaid index folder read as numpy, ready to convert.

    Attributes
    ----------
    centroids : float16 or float32 (nlist, d)
    cutoffs, weights : float32 (2**nbits - 1,), (2**nbits,) or per dimension (d, ...)
    avg_residual : float32 (d,)
    doclens : int64 (n_docs,)
    """

    path: Path
    metadata: dict[str, Any]
    nbits: int
    dim: int
    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    avg_residual: np.ndarray
    doclens: np.ndarray
    chunk_doclens: list[np.ndarray]
    document_ids: list[Any] | None = None
    pylate_folder: Path | None = None
    notes: list[str] = field(default_factory=list)

    def chunks(self) -> Any:
        """Yield (codes int64 (n_i,), residuals uint8 (n_i, d * nbits / 8)) in fast-plaid's bit order."""
        pb = self.dim * self.nbits // 8
        per_chunk = all((self.path / f"{i}.codes.npy").is_file() and (self.path / f"{i}.residuals.npy").is_file()
                        for i in range(len(self.chunk_doclens)))
        if per_chunk:
            for i, dl in enumerate(self.chunk_doclens):
                codes = load_npy(self.path / f"{i}.codes.npy", mmap=True)
                res = load_npy(self.path / f"{i}.residuals.npy", mmap=True)
                yield self._check(codes, res, int(dl.sum()), pb, f"{i}.codes.npy/{i}.residuals.npy", exact=True)
            return
        if not (self.path / "merged_codes.npy").is_file() or not (self.path / "merged_residuals.npy").is_file():
            raise IndexFormatError(f"{self.path}: neither per-chunk codes/residuals ({{i}}.codes.npy) nor "
                                   "merged_codes.npy/merged_residuals.npy are present; the index is incomplete")
        codes = load_npy(self.path / "merged_codes.npy", mmap=True)
        res = load_npy(self.path / "merged_residuals.npy", mmap=True)
        total = int(self.doclens.sum())
        codes, res = self._check(codes, res, total, pb, "merged_codes.npy/merged_residuals.npy", exact=False)
        step = 1 << 18
        for lo in range(0, total, step):
            yield np.asarray(codes[lo:lo + step]), np.asarray(res[lo:lo + step])

    def _check(self, codes: np.ndarray, res: np.ndarray, n: int, pb: int, where: str,
               exact: bool) -> tuple[np.ndarray, np.ndarray]:
        if codes.ndim != 1 or codes.dtype.kind not in "iu":
            raise IndexFormatError(f"{self.path / where}: codes must be a 1-D integer array, got {codes.dtype} "
                                   f"{codes.shape}")
        if res.dtype != np.uint8 or res.ndim != 2 or res.shape[1] != pb or res.shape[0] != codes.shape[0]:
            raise IndexFormatError(f"{self.path / where}: residuals must be uint8 ({codes.shape[0]}, {pb}), got "
                                   f"{res.dtype} {res.shape}")
        if codes.shape[0] < n or (exact and codes.shape[0] != n):
            raise IndexFormatError(f"{self.path / where}: {codes.shape[0]} embeddings, the doclens add up to {n}; "
                                   "the index is inconsistent")
        return codes[:n], res[:n]

    def decompress(self, codes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """float32 (n, d) unit vectors decompressed from fast-plaid's bytes (a plain numpy reference)."""
        return decode_peer(self.centroids, self.weights, codes, residuals, self.nbits)


def _pylate_ids(folder: Path, n_docs: int) -> list[Any] | None:
    mpath = folder / PYLATE_MAP
    if not mpath.is_file():
        return None
    mapping = load_plain_pickle(mpath)
    if not isinstance(mapping, dict):
        raise IndexFormatError(f"{mpath}: expected a dict of plaid id -> document id, got {type(mapping).__name__}")
    ids: list[Any] = [None] * n_docs
    for k, v in mapping.items():
        if not isinstance(k, int) or not 0 <= k < n_docs:
            raise IndexFormatError(f"{mpath}: plaid id {k!r} is not an integer in [0, {n_docs})")
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise IndexFormatError(f"{mpath}: document id {v!r} of plaid id {k} is not a string or integer")
        ids[k] = v
    return ids


def read_fastplaid(src: str | os.PathLike) -> FastPlaidIndex:
    """Open a fast-plaid / next-plaid index folder (or a PyLate folder holding one) read-only."""
    src = Path(src)
    if not src.is_dir():
        raise IndexFormatError(f"{str(src)!r} is not a folder; pass a fast-plaid, next-plaid or PyLate index folder")
    pylate = src if (src / PYLATE_INNER).is_dir() else None
    path = src / PYLATE_INNER if pylate else src
    if not is_fastplaid_index(path):
        hint = ""
        if (src / "centroids.pt").is_file():
            hint = " (it looks like a colbert-ai index: use plaidx.interop.colbert.convert_colbert)"
        elif (src / "manifest.json").is_file():
            hint = " (it is already a plaidx index: open it with plaidx.Index.open)"
        raise IndexFormatError(f"{str(src)!r} is not a fast-plaid/next-plaid/PyLate index: it needs metadata.json "
                               f"and centroids.npy (or a {PYLATE_INNER}/ folder holding them){hint}")
    meta = read_json(path / "metadata.json", "fast-plaid")
    try:
        nbits, num_chunks = int(meta["nbits"]), int(meta["num_chunks"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path / 'metadata.json'}: missing or malformed {exc}") from None
    centroids = load_npy(path / "centroids.npy")
    if centroids.ndim != 2 or centroids.dtype not in (np.float16, np.float32):
        raise IndexFormatError(f"{path / 'centroids.npy'}: expected float16/float32 (nlist, d), got "
                               f"{centroids.dtype} {centroids.shape}")
    dim = int(centroids.shape[1])
    if nbits not in (1, 2, 4, 8) or dim % 8 or num_chunks < 1:
        raise IndexFormatError(f"{path / 'metadata.json'}: unsupported nbits={nbits}, dim={dim} or "
                               f"num_chunks={num_chunks}")
    nb = 1 << nbits
    cutoffs = load_npy(path / "bucket_cutoffs.npy").astype(np.float32)
    weights = load_npy(path / "bucket_weights.npy").astype(np.float32)
    if cutoffs.shape not in ((nb - 1,), (dim, nb - 1)) or weights.shape not in ((nb,), (dim, nb)):
        raise IndexFormatError(f"{path}: bucket_cutoffs {cutoffs.shape} / bucket_weights {weights.shape} do not fit "
                               f"nbits={nbits}, d={dim}")
    avg = (load_npy(path / "avg_residual.npy").astype(np.float32).reshape(-1)
           if (path / "avg_residual.npy").is_file() else np.zeros(dim, np.float32))
    if avg.size == 1:
        avg = np.full(dim, avg[0], np.float32)
    if avg.shape != (dim,):
        raise IndexFormatError(f"{path / 'avg_residual.npy'}: expected ({dim},), got {avg.shape}")
    chunk_doclens = []
    for i in range(num_chunks):
        dl = read_json(path / f"doclens.{i}.json", "fast-plaid")
        if not isinstance(dl, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in dl):
            raise IndexFormatError(f"{path / f'doclens.{i}.json'}: expected a list of non-negative integers")
        chunk_doclens.append(np.asarray(dl, dtype=np.int64))
    doclens = np.concatenate(chunk_doclens)
    if not doclens.any():
        raise IndexFormatError(f"{str(src)!r}: the index holds no documents")
    notes = []
    if centroids.dtype == np.float32:
        notes.append("float32 centroids rounded to float16 (decompressed vectors move by at most ~1e-3 per entry)")
    fp = FastPlaidIndex(path, meta, nbits, dim, centroids, cutoffs, weights, avg, doclens, chunk_doclens,
                        pylate_folder=pylate, notes=notes)
    if pylate is not None:
        fp.document_ids = _pylate_ids(pylate, int(doclens.size))
    return fp


def convert_fastplaid(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                      progress: bool = False, metadata: dict[str, Any] | None = None) -> Index:
    """Convert the fast-plaid / next-plaid / PyLate index at ``src`` into a plaidx index at ``dst`` and open it.

    Codes are copied and residual bits re-ordered; float16 centroids are kept as they are (float32 ones are
    rounded to float16, noted in ``metadata["source"]["notes"]``). Document ids are fast-plaid's
    positions 0..n-1; for a PyLate folder ``dst/document_ids.json`` maps them to PyLate's ids.
    """
    fp = read_fastplaid(src)
    if Path(dst).resolve() in (fp.path.resolve(), Path(src).resolve()):
        raise ValueError("dst must differ from src: the source index is never written to")
    d = fp.dim
    nb = 1 << fp.nbits
    source = {"format": "pylate" if fp.pylate_folder else "fast-plaid", "path": str(Path(src).resolve()),
              "nbits": fp.nbits, "dim": d, "nlist": int(fp.centroids.shape[0]),
              "num_documents": int(fp.doclens.size), "num_embeddings": int(fp.doclens.sum()),
              "centroids_dtype": str(fp.centroids.dtype), "notes": fp.notes}
    if fp.document_ids is not None:
        source["document_ids_file"] = DOCUMENT_IDS_FILE
    chunks = ((codes, colbert_to_plaidx_bits(res)) for codes, res in fp.chunks())
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="converting", unit="chunk")
    index = import_compressed(
        dst, centroids=fp.centroids.astype(np.float16),
        cutoffs=np.broadcast_to(fp.cutoffs, (d, nb - 1)), weights=np.broadcast_to(fp.weights, (d, nb)),
        avg_residual=fp.avg_residual, nbits=fp.nbits, doc_lengths=fp.doclens, chunks=chunks,
        metadata={**(metadata or {}), "source": source}, source=source, overwrite=overwrite)
    if fp.document_ids is not None:
        tmp = Path(dst) / f".{DOCUMENT_IDS_FILE}.tmp"
        tmp.write_text(json.dumps(fp.document_ids), encoding="utf-8")
        os.replace(tmp, Path(dst) / DOCUMENT_IDS_FILE)
    else:  # an index this one overwrote may have left its ids: they name other documents
        (Path(dst) / DOCUMENT_IDS_FILE).unlink(missing_ok=True)
    return index


__all__ = ["DOCUMENT_IDS_FILE", "FastPlaidIndex", "convert_fastplaid", "is_fastplaid_index", "read_fastplaid"]
