"""Convert a colbert-ai (Stanford PLAID) index folder into a plaidx index, losslessly and without torch.

colbert-ai layout (0.2.x): ``metadata.json`` (``config.nbits``, ``config.dim``, ``config.checkpoint``,
``num_chunks``), ``centroids.pt`` float16 (nlist, d), ``buckets.pt`` (cutoffs float32 (2**nbits - 1,),
weights float32 (2**nbits,), shared by every dimension), ``avg_residual.pt`` (a scalar), and per chunk i
``{i}.codes.pt`` int32 (n_i,), ``{i}.residuals.pt`` uint8 (n_i, d * nbits / 8) and ``doclens.{i}.json``.
Its inverted file (``ivf.pid.pt`` or the legacy ``ivf.pt``) is not read: plaidx derives its own.

What changes on the way, and why nothing is lost:
* the shared bucket cutoffs and weights become one identical row per dimension;
* the residual bits are re-ordered, not re-quantized. colbert-ai unpacks each byte most significant bit
  first and reads each ``nbits`` group of that bit stream least significant bit first; plaidx puts bit i of
  dimension j's code at stream position ``j * nbits + i`` counted from each byte's least significant bit.
  Both place the same stream position in the same byte, so the conversion reverses the bits of every byte;
* every token keeps its centroid code; a passage with 0 tokens (removed by colbert-ai's ``IndexUpdater``)
  keeps its pid as a deleted plaidx document;
* centroids stay float16, as colbert-ai stores them; the scalar ``avg_residual`` becomes a (d,) row.
Every ``.pt`` file is read by :func:`plaidx.interop.safe_pickle.load_pt`, which executes no pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Index
from ..engine.importing import import_compressed
from ..errors import IndexFormatError
from .safe_pickle import load_pt

# byte -> the same byte with its 8 bits in reverse order
BIT_REVERSE = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


_M1, _M2, _M4 = (np.uint64(m) for m in (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F))


def colbert_to_plaidx_bits(packed: np.ndarray, block: int = 1 << 17) -> np.ndarray:
    """uint8 (n, d * nbits / 8) residual bytes in colbert-ai's bit order -> plaidx's (and back: it is an
    involution). Reverses the bits of every byte, eight bytes at a time: three swap steps on uint64 words,
    in cache-sized blocks with reused buffers (about 20x faster than a 256-entry table lookup)."""
    packed = np.asarray(packed, dtype=np.uint8)
    flat = np.ascontiguousarray(packed).reshape(-1)
    out = np.empty_like(flat)
    n8 = flat.size // 8 * 8
    x, o = flat[:n8].view(np.uint64), out[:n8].view(np.uint64)
    t = np.empty(min(block, x.size), np.uint64)
    u = np.empty_like(t)
    for lo in range(0, x.size, block):
        xs = x[lo:lo + block]
        tt, uu = t[:xs.size], u[:xs.size]
        np.right_shift(xs, np.uint64(1), out=tt)
        tt &= _M1
        np.bitwise_and(xs, _M1, out=uu)
        uu <<= np.uint64(1)
        tt |= uu
        for shift, mask in ((2, _M2), (4, _M4)):
            np.right_shift(tt, np.uint64(shift), out=uu)
            uu &= mask
            tt &= mask
            tt <<= np.uint64(shift)
            tt |= uu
        o[lo:lo + xs.size] = tt
    out[n8:] = BIT_REVERSE[flat[n8:]]
    return out.reshape(packed.shape)


def is_colbert_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a colbert-ai index folder (metadata.json, centroids.pt, buckets.pt)."""
    p = Path(path)
    return all((p / f).is_file() for f in ("metadata.json", "centroids.pt", "buckets.pt"))


@dataclass
class ColbertIndex:
    """A colbert-ai index folder read as numpy (torch-free), ready to convert.

    Attributes
    ----------
    centroids : float16 (nlist, d)
    cutoffs : float32 (2**nbits - 1,)
    weights : float32 (2**nbits,)
    avg_residual : float
    doclens : int64 (n_passages,), 0 for a removed passage
    """

    path: Path
    metadata: dict[str, Any]
    nbits: int
    dim: int
    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    avg_residual: float
    doclens: np.ndarray
    chunk_doclens: list[np.ndarray]

    @property
    def checkpoint(self) -> str | None:
        return (self.metadata.get("config") or {}).get("checkpoint")

    def chunk(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk i as (codes int32 (n_i,), residuals uint8 (n_i, d * nbits / 8) in colbert-ai's bit order)."""
        codes = load_pt(self.path / f"{i}.codes.pt")
        res = load_pt(self.path / f"{i}.residuals.pt")
        where = str(self.path / f"{i}.*.pt")
        if not isinstance(codes, np.ndarray) or codes.ndim != 1 or codes.dtype.kind not in "iu":
            raise IndexFormatError(f"{where}: codes must be a 1-D integer tensor")
        pb = self.dim * self.nbits // 8
        if not isinstance(res, np.ndarray) or res.dtype != np.uint8 or res.shape != (codes.shape[0], pb):
            raise IndexFormatError(f"{where}: residuals must be uint8 ({codes.shape[0]}, {pb}), got "
                                   f"{getattr(res, 'dtype', type(res).__name__)} {getattr(res, 'shape', '')}")
        if codes.shape[0] != int(self.chunk_doclens[i].sum()):
            raise IndexFormatError(f"{where}: {codes.shape[0]} embeddings but doclens.{i}.json adds up to "
                                   f"{int(self.chunk_doclens[i].sum())}; the index is inconsistent")
        return codes, res

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self.chunk_doclens)):
            yield self.chunk(i)

    def decompress(self, codes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """float32 (n, d) unit vectors, decompressed the way colbert-ai does (a plain numpy reference)."""
        return decode_peer(self.centroids, self.weights, codes, residuals, self.nbits)


def decode_peer(centroids: np.ndarray, weights: np.ndarray, codes: np.ndarray, residuals: np.ndarray,
                nbits: int) -> np.ndarray:
    """float32 (n, d) unit vectors from colbert-ai-layout bytes (MSB-first bytes, LSB-first nbits groups).

    ``weights`` are shared bucket values ``(2**nbits,)`` (colbert-ai) or per dimension ``(d, 2**nbits)``
    (fast-plaid); a plain numpy reference of what the peers decode, used to check conversions.
    """
    n, dim = len(codes), centroids.shape[1]
    bits = np.unpackbits(np.asarray(residuals, np.uint8), axis=1).reshape(n, dim, nbits)
    bucket = (bits.astype(np.int64) << np.arange(nbits)).sum(axis=2)
    w = weights if weights.ndim == 2 else np.broadcast_to(weights, (dim, weights.size))
    emb = centroids[np.asarray(codes, np.intp)].astype(np.float32) + w[np.arange(dim), bucket]
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def read_json(path: Path, kind: str = "colbert-ai") -> Any:
    """A JSON file of a peer's index folder; a missing or malformed one is an IndexFormatError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing; the {kind} index is incomplete") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path}: not valid JSON ({exc})") from None


def read_colbert(src: str | os.PathLike) -> ColbertIndex:
    """Open a colbert-ai index folder read-only and check that its parts agree."""
    src = Path(src)
    if not src.is_dir():
        raise IndexFormatError(f"{str(src)!r} is not a folder; pass a colbert-ai index folder")
    if not is_colbert_index(src):
        hint = ""
        if (src / "centroids.npy").is_file() or (src / "fast_plaid_index").is_dir():
            hint = " (it looks like a fast-plaid/PyLate index: use plaidx.interop.fastplaid.convert_fastplaid)"
        elif (src / "manifest.json").is_file():
            hint = " (it is already a plaidx index: open it with plaidx.Index.open)"
        raise IndexFormatError(f"{str(src)!r} is not a colbert-ai index: it needs metadata.json, centroids.pt and "
                               f"buckets.pt{hint}")
    meta = read_json(src / "metadata.json")
    config = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(config, dict):
        raise IndexFormatError(f"{src / 'metadata.json'}: no 'config' object; not a colbert-ai index metadata file")
    try:
        nbits, dim, num_chunks = int(config["nbits"]), int(config["dim"]), int(meta["num_chunks"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{src / 'metadata.json'}: missing or malformed {exc}") from None
    if nbits not in (1, 2, 4, 8) or dim <= 0 or dim % 8 or num_chunks < 1:
        raise IndexFormatError(f"{src / 'metadata.json'}: unsupported nbits={nbits}, dim={dim} or "
                               f"num_chunks={num_chunks}")
    centroids = load_pt(src / "centroids.pt")
    if not isinstance(centroids, np.ndarray) or centroids.ndim != 2 or centroids.shape[1] != dim:
        raise IndexFormatError(f"{src / 'centroids.pt'}: expected a (nlist, {dim}) tensor")
    if centroids.dtype != np.float16:  # colbert-ai writes float16; other writers may not
        centroids = centroids.astype(np.float32).astype(np.float16)
    buckets = load_pt(src / "buckets.pt")
    nb = 1 << nbits
    if (not isinstance(buckets, (tuple, list)) or len(buckets) != 2
            or np.shape(buckets[0]) != (nb - 1,) or np.shape(buckets[1]) != (nb,)):
        raise IndexFormatError(f"{src / 'buckets.pt'}: expected (cutoffs ({nb - 1},), weights ({nb},)) for "
                               f"nbits={nbits}")
    cutoffs = np.asarray(buckets[0], dtype=np.float32)
    weights = np.asarray(buckets[1], dtype=np.float32)
    avg = load_pt(src / "avg_residual.pt") if (src / "avg_residual.pt").is_file() else np.float32(0)
    avg = float(np.asarray(avg, dtype=np.float32).mean())
    chunk_doclens = []
    for i in range(num_chunks):
        dl = read_json(src / f"doclens.{i}.json")
        if not isinstance(dl, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                               for x in dl):
            raise IndexFormatError(f"{src / f'doclens.{i}.json'}: expected a list of non-negative integers")
        chunk_doclens.append(np.asarray(dl, dtype=np.int64))
    doclens = np.concatenate(chunk_doclens) if chunk_doclens else np.zeros(0, np.int64)
    if doclens.size == 0 or not doclens.any():
        raise IndexFormatError(f"{str(src)!r}: the colbert-ai index holds no passages")
    return ColbertIndex(src, meta, nbits, dim, centroids, cutoffs, weights, avg, doclens, chunk_doclens)


def source_metadata(ci: ColbertIndex) -> dict[str, Any]:
    """What plaidx records about a converted colbert-ai index (under ``metadata["source"]``)."""
    config = ci.metadata.get("config") or {}
    return {"format": "colbert-ai", "path": str(ci.path.resolve()), "checkpoint": ci.checkpoint,
            "nbits": ci.nbits, "dim": ci.dim, "nlist": int(ci.centroids.shape[0]),
            "num_chunks": len(ci.chunk_doclens), "num_passages": int(ci.doclens.size),
            "removed_passages": int(np.count_nonzero(ci.doclens == 0)),
            "num_embeddings": int(ci.doclens.sum()), "avg_residual": ci.avg_residual,
            "doc_maxlen": config.get("doc_maxlen"), "query_maxlen": config.get("query_maxlen"),
            "similarity": config.get("similarity")}


def convert_colbert(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                    progress: bool = False, metadata: dict[str, Any] | None = None) -> Index:
    """Convert the colbert-ai index at ``src`` into a new plaidx index at ``dst`` and open it.

    Lossless: codes are copied, residual bits re-ordered, bucket weights and centroids kept, so
    decompressed vectors equal colbert-ai's own. Passage ids (pids) become document ids; removed
    passages (doclen 0) become deleted documents. ``src`` is only read. ``metadata`` is merged into
    the manifest's metadata, beside ``source`` (the colbert-ai checkpoint name and index parameters).
    """
    ci = read_colbert(src)
    if Path(dst).resolve() == ci.path.resolve():
        raise ValueError("dst must differ from src: the colbert-ai index is never written to")
    d, nbits = ci.dim, ci.nbits
    source = source_metadata(ci)
    chunks = ((codes, colbert_to_plaidx_bits(res)) for codes, res in ci.chunks())
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=len(ci.chunk_doclens), desc="converting", unit="chunk")
    return import_compressed(
        dst, centroids=ci.centroids, cutoffs=np.tile(ci.cutoffs, (d, 1)), weights=np.tile(ci.weights, (d, 1)),
        avg_residual=np.full(d, ci.avg_residual, np.float32), nbits=nbits, doc_lengths=ci.doclens,
        chunks=chunks, metadata={**(metadata or {}), "source": source}, source=source, overwrite=overwrite)


__all__ = ["BIT_REVERSE", "ColbertIndex", "colbert_to_plaidx_bits", "convert_colbert", "is_colbert_index",
           "read_colbert"]
