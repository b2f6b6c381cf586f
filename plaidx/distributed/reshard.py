"""Split an existing plaidx index into a sharded one, copying its compressed bytes (no recompression)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import WriterLock, fsync_dir
from ..engine.storage import Transaction, exchange_folders, load_generation
from ..engine.vectors import TIER_ARRAYS
from .manifest import CODEC_ARRAYS, codec_dir_name, codec_hash, shard_dir_name, write_sharded
from .steps import SHARD_KEY

_CODEC_ARRAYS = (*CODEC_ARRAYS, "avg_residual")


def reshard(source: str | os.PathLike, path: str | os.PathLike, n_shards: int, *,
            metadata: dict[str, Any] | None = None) -> Path:
    """Write the index at ``source`` as a sharded index at ``path`` (a new folder) with ``n_shards`` shards.

    Every document keeps its id (the sharded index's global id is the source's id, deleted documents
    included until a compaction) and its codes, residuals and kept vectors (the rerank tier, where the
    source has one) byte for byte, so exhaustive searches of the sharded index equal the source's. Shard s
    holds the s-th of ``n_shards`` contiguous ranges of documents.
    Nothing is at ``path`` until the last step renames the finished folder into place. Returns ``path``.
    """
    source, path = Path(source), Path(path)
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    if path.exists():
        raise FileExistsError(f"{str(path)!r} exists; reshard writes a new folder")
    manifest, arrays = load_generation(source, verify="full")
    n_docs = int(manifest["n_docs"])
    if n_docs < n_shards:
        raise ValueError(f"the index at {str(source)!r} holds {n_docs} documents, too few for {n_shards} shards")
    staging = path.parent / f".{path.name}.reshard.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        gen = 1
        base_meta = {**dict(manifest.get("metadata") or {}), **dict(metadata or {})}
        cdir = staging / codec_dir_name(gen)
        _write_part(manifest, arrays, np.arange(1), cdir, {"plaidx_codec": {"resharded_from": str(source)}},
                    with_tier=False)
        chash = codec_hash(cdir)
        ids = np.asarray(arrays["doc_ids"], dtype=np.int64)
        shards = []
        bounds = [n_docs * s // n_shards for s in range(n_shards + 1)]
        for s in range(n_shards):
            pos = np.arange(bounds[s], bounds[s + 1])
            sdir = staging / shard_dir_name(s, gen)
            tag = {"shard": s, "of": n_shards, "resharded_from": str(source), "codec_hash": chash}
            em = _write_part(manifest, arrays, pos, sdir, {**base_meta, SHARD_KEY: tag})
            shards.append({"dir": sdir.name, "n_docs": int(em["n_docs"]) - int(em["n_deleted"]),
                           "n_tokens": int(em["n_tokens"]), "engine_generation": int(em["generation"]),
                           "runs": _runs(ids[pos])})
        write_sharded(staging, {
            "generation": gen, "next_id": int(manifest["next_id"]), "dim": int(manifest["dim"]),
            "nbits": int(manifest["nbits"]), "nlist": int(manifest["nlist"]),
            "codec": {"dir": cdir.name, "hash": chash}, "routing": {"rule": "ranges"}, "shards": shards,
            "metadata": base_meta, "build": {"n_shards": n_shards, "resharded_from": str(source),
                                             "source_generation": int(manifest["generation"])}})
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def reshard_in_place(path: str | os.PathLike, n_shards: int) -> Path:
    """Turn the ordinary index at ``path`` into a sharded index at the same path (ids and bytes kept).

    The sharded copy is written beside it, then the two folders are exchanged in one atomic step
    (``renameat2(RENAME_EXCHANGE)``; where the system lacks it, two renames) under the index's lock, and
    the old folder is removed. Returns ``path``.
    """
    path = Path(path).absolute()
    staging = path.parent / f".{path.name}.sharded.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    with WriterLock(path):  # no writer changes the index while it is copied
        reshard(path, staging, n_shards)
        old = path.parent / f".{path.name}.unsharded.tmp"
        if exchange_folders(staging, path):
            os.rename(staging, old)
        else:  # pragma: no cover - kernels and libcs without renameat2
            os.rename(path, old)
            os.rename(staging, path)
        fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _runs(ids: np.ndarray) -> list[list[int]]:
    """[global_lo, local_lo, count] runs of consecutive ids."""
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [ids.size]])
    return [[int(ids[a]), int(a), int(b - a)] for a, b in zip(starts, ends)]


def _write_part(manifest: dict[str, Any], arrays: dict[str, np.ndarray], pos: np.ndarray, dst: Path,
                metadata: dict[str, Any], *, with_tier: bool = True) -> dict[str, Any]:
    """An ordinary index of the documents at ``pos`` of a loaded generation, with the same codec arrays (and
    their kept vectors when the source has the rerank tier and ``with_tier``)."""
    offs = np.asarray(arrays["doc_offsets"])
    lens = offs[pos + 1] - offs[pos]
    lo, hi = int(offs[pos[0]]), int(offs[pos[-1] + 1])  # pos is a contiguous range
    new_offs = np.zeros(pos.size + 1, dtype=np.int64)
    np.cumsum(lens, out=new_offs[1:])
    deleted = np.asarray(arrays["deleted"])[pos].astype(np.uint8)
    with WriterLock(dst):
        tx = Transaction(dst, None)
        try:
            for name in _CODEC_ARRAYS:
                if name in arrays:
                    tx.put(name, np.asarray(arrays[name]))
            # the token rows: codes, residuals and, for shards of an index with the rerank tier, its kept vectors
            token_arrays = ["codes", "residuals"] + ([n for n in TIER_ARRAYS if n in arrays] if with_tier else [])
            for name in token_arrays:
                rows = arrays[name]
                w = tx.stream(name, rows.dtype, (hi - lo, *rows.shape[1:]))
                for a in range(lo, hi, 1 << 18):
                    w.append(np.asarray(rows[a:min(hi, a + (1 << 18))]))
                tx.finish(name, w)
            tx.put("doc_offsets", new_offs)
            tx.put("doc_ids", np.arange(pos.size, dtype=np.int64))
            tx.put("deleted", deleted)
            fields = {k: manifest[k] for k in ("dim", "nbits", "nlist") if k in manifest}
            fields.update({"n_docs": int(pos.size), "n_tokens": hi - lo, "n_deleted": int(deleted.sum()),
                           "next_id": int(pos.size), "metadata": metadata, "updates": {},
                           "build": dict(manifest.get("build") or {})})
            committed = tx.commit(fields)
        except BaseException:
            tx.abort()
            raise
    return committed


__all__ = ["reshard", "reshard_in_place"]
