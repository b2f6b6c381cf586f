"""The sharded index format: ``sharded.json`` (shards, id runs, codec hash), its checks and atomic commits.

A sharded index folder holds ``sharded.json`` (the current sharded generation, the commit point),
``LOCK`` (its one writer), one ordinary plaidx index per shard (``shard-SSSS.gGGGGGG/``: it opens with
``plaidx.Index.open`` on its own) and the codec folder (``codec.gGGGGGG/``: an ordinary index of the
sample the codec was trained on; its centroids and codebooks are every shard's). A write makes new
shard folders (hard links of the old ones' immutable files, then an ordinary commit inside them) and
switches ``sharded.json`` with one atomic rename, so a crash leaves the last complete sharded generation.

Document ids are global: a document's position in the build's input, then ``next_id`` onwards for added
ones. Each shard lists the runs of ids it holds, ``[global_lo, local_lo, count]``: global ids
``global_lo .. global_lo + count - 1`` are that shard's engine ids ``local_lo ..`` in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import fsync_dir
from ..engine.codec import PQ_ARRAYS
from ..engine.storage import MANIFEST, ArrayEntry, load_array, read_manifest
from .errors import ShardFormatError

SHARDED_MANIFEST = "sharded.json"
PLAN_FILE = ".build.json"  # an unfinished build's plan: its folders are kept for the build to resume
FORMAT_NAME = "plaidx-sharded"
FORMAT_VERSION = 1
CODEC_ARRAYS = ("centroids", "centroid_scales", "bucket_cutoffs", "bucket_weights", *PQ_ARRAYS)
ROUTING_RULE = "ranges"  # build: contiguous ranges of the input; add: each batch in contiguous parts
_DIR_NAME = re.compile(r"^(?:shard-\d{4}|codec)\.g\d{6}$")


def shard_dir_name(shard: int, generation: int) -> str:
    return f"shard-{shard:04d}.g{generation:06d}"


def codec_dir_name(generation: int) -> str:
    return f"codec.g{generation:06d}"


def codec_hash(index_path: Path) -> str:
    """sha256 of the codec arrays (centroids, their scales, bucket cutoffs and weights, the pq table and levels) of
    one index.

    Shards built with ``codec_from`` store the codec source's arrays bit for bit, so equal hashes mean
    scores computed in different shards are comparable. The pq arrays count only where present, so a scalar
    index hashes as it did before the pq codec existed (sharded manifests written then still open).
    """
    manifest = read_manifest(index_path)
    h = hashlib.sha256()
    for name in CODEC_ARRAYS:
        obj = manifest["arrays"].get(name)
        if obj is None:
            if name not in PQ_ARRAYS:
                h.update(f"{name}:absent;".encode())
            continue
        entry = ArrayEntry.from_json(name, obj)
        arr = np.ascontiguousarray(load_array(index_path, name, entry, mmap=True))
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def engine_fields(index_path: Path) -> dict[str, Any]:
    """The committed manifest of one shard's engine (its generation, next_id, counts)."""
    return read_manifest(index_path)


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a sharded index folder (holds ``sharded.json``)."""
    return (Path(path) / SHARDED_MANIFEST).is_file()


def read_sharded(path: Path) -> dict[str, Any]:
    """Read and check ``sharded.json``; raise ShardFormatError naming what is wrong."""
    path = Path(path)
    mpath = path / SHARDED_MANIFEST
    if not path.is_dir():
        raise ShardFormatError(f"no sharded index at {str(path)!r}: the folder does not exist")
    if not mpath.is_file():
        hint = (" (it is an ordinary index: open it with plaidx.Index.open)" if (path / MANIFEST).is_file()
                else " (a build interrupted before its commit leaves none: run plaidx.distributed.build again "
                     "to resume it)")
        raise ShardFormatError(f"no sharded index at {str(path)!r}: {SHARDED_MANIFEST} is missing{hint}")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardFormatError(f"{mpath}: not valid JSON ({exc}); the sharded manifest is corrupted") from None
    return validate_sharded(m, str(mpath))


def _need(m: dict[str, Any], key: str, typ: type, where: str) -> Any:
    v = m.get(key)
    if not isinstance(v, typ) or isinstance(v, bool):
        raise ShardFormatError(f"{where}: field {key!r} is missing or not a {typ.__name__}")
    return v


def validate_sharded(m: Any, where: str = SHARDED_MANIFEST) -> dict[str, Any]:
    """Check a parsed sharded manifest: format, version, shard folders, id runs (disjoint, complete)."""
    if not isinstance(m, dict):
        raise ShardFormatError(f"{where}: expected a JSON object, got {type(m).__name__}")
    if m.get("format") != FORMAT_NAME:
        raise ShardFormatError(f"{where}: not a plaidx sharded index (format {m.get('format')!r})")
    version = _need(m, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise ShardFormatError(f"{where}: format version {version} is newer than this plaidx supports "
                               f"({FORMAT_VERSION}); upgrade plaidx to open it")
    if version < 1:
        raise ShardFormatError(f"{where}: invalid format version {version}")
    for key in ("generation", "next_id", "dim", "nbits", "nlist"):
        if _need(m, key, int, where) < 0:
            raise ShardFormatError(f"{where}: field {key!r} is negative")
    codec = _need(m, "codec", dict, where)
    if not isinstance(codec.get("dir"), str) or not isinstance(codec.get("hash"), str):
        raise ShardFormatError(f"{where}: field 'codec' needs 'dir' and 'hash' strings")
    routing = _need(m, "routing", dict, where)
    if routing.get("rule") != ROUTING_RULE:
        raise ShardFormatError(f"{where}: unknown routing rule {routing.get('rule')!r} (this plaidx knows "
                               f"{ROUTING_RULE!r})")
    shards = _need(m, "shards", list, where)
    if not shards:
        raise ShardFormatError(f"{where}: the index lists no shards")
    dirs = [codec["dir"]]
    runs_all = []
    for s, sh in enumerate(shards):
        if not isinstance(sh, dict) or not isinstance(sh.get("dir"), str):
            raise ShardFormatError(f"{where}: shard {s} has no 'dir'")
        dirs.append(sh["dir"])
        for key in ("n_docs", "n_tokens", "engine_generation"):
            if not isinstance(sh.get(key), int) or isinstance(sh.get(key), bool) or sh[key] < 0:
                raise ShardFormatError(f"{where}: shard {s} field {key!r} is missing or not a non-negative integer")
        runs = sh.get("runs")
        if not isinstance(runs, list) or not all(
                isinstance(r, list) and len(r) == 3 and all(isinstance(x, int) and not isinstance(x, bool)
                                                            and x >= 0 for x in r) for r in runs):
            raise ShardFormatError(f"{where}: shard {s} 'runs' must be a list of [global_lo, local_lo, count]")
        local = 0
        for g_lo, l_lo, count in runs:
            if l_lo != local or count == 0:
                raise ShardFormatError(f"{where}: shard {s} id runs do not cover its engine ids in order")
            local += count
            runs_all.append((g_lo, count))
    for d in dirs:
        if not _DIR_NAME.match(d):
            raise ShardFormatError(f"{where}: invalid folder name {d!r}")
    if len(set(dirs)) != len(dirs):
        raise ShardFormatError(f"{where}: two entries name the same folder")
    runs_all.sort()
    nxt = 0
    for g_lo, count in runs_all:  # gaps are ids no shard holds (e.g. compacted away before a reshard)
        if g_lo < nxt:
            raise ShardFormatError(f"{where}: the shards' id runs overlap at id {g_lo}")
        nxt = g_lo + count
    if nxt > m["next_id"]:
        raise ShardFormatError(f"{where}: the shards' id runs end at {nxt}, after next_id {m['next_id']}")
    return m


def write_sharded(path: Path, m: dict[str, Any]) -> dict[str, Any]:
    """Validate, then switch ``sharded.json`` atomically (write, fsync, rename, fsync the folder)."""
    m = dict(m)
    m.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "updated_at": time.time()})
    m.setdefault("created_at", m["updated_at"])
    validate_sharded(m, str(path / SHARDED_MANIFEST))
    tmp = path / f".{SHARDED_MANIFEST}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(m, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / SHARDED_MANIFEST)  # the commit point
    fsync_dir(path)
    return m


def named_dirs(m: dict[str, Any] | None) -> set[str]:
    if not m:
        return set()
    return {m["codec"]["dir"], *(sh["dir"] for sh in m["shards"])}


class IdMap:
    """Global ids <-> (shard, engine id) from the shards' runs; vectorised both ways."""

    def __init__(self, shards: list[dict[str, Any]]):
        rows = [(g, s, lo, c) for s, sh in enumerate(shards) for g, lo, c in sh["runs"]]
        rows.sort()
        a = np.array(rows, dtype=np.int64).reshape(-1, 4)
        self.g_lo, self.shard, self.l_lo, self.count = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
        self.n_shards = len(shards)
        self._per_shard = []
        for sh in shards:
            r = np.array(sh["runs"], dtype=np.int64).reshape(-1, 3)
            self._per_shard.append((r[:, 1].copy(), r[:, 0].copy(), r[:, 2].copy()))  # by local_lo

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, engine id, known) of int64 global ids; ``known`` is False for ids no run holds."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        r = np.searchsorted(self.g_lo, ids, side="right") - 1
        rc = np.maximum(r, 0)
        known = (r >= 0) & (ids < self.g_lo[rc] + self.count[rc]) if self.g_lo.size else np.zeros(ids.shape, bool)
        local = self.l_lo[rc] + (ids - self.g_lo[rc])
        return self.shard[rc], local, known

    def to_global(self, shard: int, local: np.ndarray) -> np.ndarray:
        """Global ids of one shard's engine ids (-1 stays -1)."""
        l_lo, g_lo, _ = self._per_shard[shard]
        local = np.asarray(local, dtype=np.int64)
        r = np.maximum(np.searchsorted(l_lo, local, side="right") - 1, 0)
        return np.where(local >= 0, g_lo[r] + (local - l_lo[r]), -1).astype(np.int64)


__all__ = ["SHARDED_MANIFEST", "IdMap", "codec_dir_name", "codec_hash", "is_sharded", "read_sharded",
           "shard_dir_name", "validate_sharded", "write_sharded"]
