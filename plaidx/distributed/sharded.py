"""ShardedIndex: open, search (scatter, then merge exact scores), add, delete, compact and verify a sharded index."""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Index, SearchParams
from ..engine.inputs import (
    as_filter,
    check_flag,
    check_k,
    id_array,
    issued_filter,
    one_batch,
)
from ..engine.storage import LOCK, MANIFEST, WriterScope
from ..engine.vectors import check_rerank
from ..errors import IndexFormatError
from .errors import ShardFormatError
from .executors import check_executor, search_executor
from .manifest import (
    PLAN_FILE,
    SHARDED_MANIFEST,
    IdMap,
    codec_hash,
    engine_fields,
    named_dirs,
    read_sharded,
    shard_dir_name,
    write_sharded,
)


class ShardedIndex:
    """A sharded index: ordinary plaidx indexes sharing one codec, searched as one.

    Open one with :func:`plaidx.distributed.build` or :meth:`ShardedIndex.open`. Ids are global (a
    document's position in the build's input, then consecutive for added documents). A search scatters
    the query to every shard and merges their top-k by score: the shared codec makes scores comparable,
    so ``exact=True`` equals one index over all documents, and PLAID searches each shard with the
    parameters one index of the whole collection would use. Writes commit atomically across shards.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], shards: list[Index], executor: Any):
        self.path = Path(path)
        self._m = manifest
        self._shards = shards
        self._ids = IdMap(manifest["shards"])
        self._state = (manifest, shards, self._ids)  # what a search reads, swapped in one assignment
        self._exec = executor
        self._write_mutex = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stamp = _stamp(self.path)
        self._exec.sync(self.shard_paths, shards)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, executor: str = "local", *, verify: str = "structure",
             init: Any = False, replicas: int = 1, actor_cpus: float = 0.5, attempts: int = 3) -> ShardedIndex:
        """Open the sharded index at ``path``.

        ``executor``: "local" (shards searched in this process) or "ray" (one Ray actor per shard and
        replica, each holding its shard memory-mapped; a restarted actor reopens its shard). ``init``:
        with "ray" and no running cluster, True (or ``ray.init`` arguments) starts a local one; by default
        plaidx raises instead. ``replicas``: actors per shard (searches alternate between them).
        ``attempts``: tries of a shard whose actor died before the search fails (never partially).
        ``verify``: as in :meth:`plaidx.Index.open`, for every shard.
        """
        check_executor(executor)
        path = Path(path)
        manifest, shards = _load(path, verify)
        ex = search_executor(executor, init=init, replicas=replicas, num_cpus=actor_cpus, attempts=attempts)
        return cls(path, manifest, shards, ex)

    def close(self) -> None:
        """End the search actors (Ray); the handle is unusable afterwards."""
        self._exec.close()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def reload(self) -> ShardedIndex:
        """Switch to the newest committed sharded generation."""
        with self._refresh_lock:
            self._stamp = _stamp(self.path)
            self._switch(*_load(self.path, "none"))
        return self

    def changed_on_disk(self) -> bool:
        """Whether a commit happened since this handle read its generation (one ``stat``)."""
        return _stamp(self.path) != self._stamp

    def refresh(self) -> bool:
        """Reload when :meth:`changed_on_disk`; True when this handle moved to a newer generation."""
        if not self.changed_on_disk():
            return False
        with self._refresh_lock:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return False
            self._switch(*_load(self.path, "none"))
            self._stamp = stamp
            return True

    def _switch(self, manifest: dict[str, Any], shards: list[Index]) -> None:
        ids = IdMap(manifest["shards"])
        self._exec.sync([self.path / sh["dir"] for sh in manifest["shards"]], shards)
        self._m, self._shards, self._ids = manifest, shards, ids
        self._state = (manifest, shards, ids)

    # ------------------------------------------------------------------ properties
    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / sh["dir"] for sh in self._m["shards"]]

    @property
    def shards(self) -> list[Index]:
        """The shards' own handles (ordinary :class:`plaidx.Index`; their ids are the shards' own)."""
        return list(self._shards)

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    @property
    def executor(self) -> Any:
        return self._exec

    @property
    def dim(self) -> int:
        return int(self._m["dim"])

    @property
    def nbits(self) -> int:
        return int(self._m["nbits"])

    @property
    def nlist(self) -> int:
        return int(self._m["nlist"])

    @property
    def n_tokens(self) -> int:
        return int(sum(s.n_tokens for s in self._shards))

    @property
    def generation(self) -> int:
        return int(self._m["generation"])

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._m.get("metadata") or {})

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._m)

    @property
    def ids(self) -> np.ndarray:
        """int64 global ids of the live documents, ascending."""
        parts = [self._ids.to_global(s, sh.ids) for s, sh in enumerate(self._shards)]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(sum(len(s) for s in self._shards))

    def __repr__(self) -> str:
        return (f"ShardedIndex({str(self.path)!r}, shards={self.n_shards}, documents={len(self)}, "
                f"tokens={self.n_tokens}, dim={self.dim}, nbits={self.nbits}, nlist={self.nlist}, "
                f"generation={self.generation}, executor={self._exec.name!r})")

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int = 10, *, params: SearchParams | None = None, nprobe: int | None = None,
               centroid_score_threshold: float | None = None, ndocs: int | None = None,
               n_exact: int | None = None, exact: bool = False, doc_ids: Any = None,
               num_threads: int = 0, device: Any = None, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k documents of each query by MaxSim over all shards; arguments and results as
        :meth:`plaidx.Index.search` (scores float32 (nq, k) best first, -inf padding; global int64 ids
        (nq, k), -1 padding).

        Every shard is searched with the knobs one index of the whole collection would resolve (the same
        ``ndocs`` per shard, so a shard never sees fewer candidates than one index would give it); the
        merge orders by score, then by id. A shard that does not answer fails the search (no partial
        results).
        """
        knobs = SearchParams.of_call(params, nprobe, centroid_score_threshold, ndocs, n_exact, rerank)
        # One generation of the manifest answers the whole call, even if a refresh lands during it
        return self._search(self._state, queries, check_k(k), knobs, check_flag(exact, "exact"), doc_ids,
                            num_threads, device)

    def _search(self, state: tuple[Any, ...], queries: Any, k: int, knobs: SearchParams, exact: bool, doc_ids: Any,
                num_threads: int, device: Any) -> tuple[np.ndarray, np.ndarray]:
        m, shards, idmap = state
        q, done = one_batch(queries, doc_ids, int(m["dim"]), k,
                            lambda qs, f: self._search(state, qs, k, knobs, exact, f, num_threads, device))
        if done is not None:  # queries of different lengths or zero rows, or one filter per query: a search per part
            return done
        nq = q.shape[0]
        base: dict[str, Any] = {"exact": bool(exact), "num_threads": num_threads, "device": device}
        if exact:
            base["rerank"] = knobs.rerank
        else:
            # ndocs, the candidates a search keeps, is fixed for the whole collection; each shard resolves the rest
            # as one index would (n_exact from ndocs, the rerank tier's own rules, nprobe by its own cells)
            tier = check_rerank(knobs.rerank, any(s.keep_vectors is not None for s in shards))
            whole = knobs.resolve(k, n_tokens=int(sum(s.n_tokens for s in shards)), nbits=self.nbits, tier=tier)
            base["params"] = replace(knobs, ndocs=whole.ndocs)
        jobs: list[dict[str, Any] | None] = [dict(base) for _ in range(len(shards))]
        if doc_ids is not None:
            # ids issued and deleted (compacted away, or by a reshard) match no run and are skipped
            shard, local, known = idmap.locate(issued_filter(as_filter(doc_ids), int(m["next_id"])))
            for s in range(len(shards)):
                mine = local[(shard == s) & known]
                jobs[s] = None if mine.size == 0 else {**base, "doc_ids": mine}
        results = self._exec.search(q, k, jobs, [self.path / sh["dir"] for sh in m["shards"]], shards)
        all_s = [np.full((nq, k), -np.inf, np.float32)]
        all_i = [np.full((nq, k), -1, np.int64)]
        for s, res in enumerate(results):
            if res is None:
                continue
            sc, li = res
            all_s.append(np.asarray(sc, np.float32))
            all_i.append(idmap.to_global(s, li))
        return merge_topk(np.concatenate(all_s, axis=1), np.concatenate(all_i, axis=1), k)

    def reconstruct(self, doc_id: int) -> np.ndarray:
        """float32 (n_tokens, d): the decompressed token embeddings of one live document (by global id)."""
        _, shards, ids = self._state
        shard, local, known = ids.locate(np.array([doc_id], dtype=np.int64))
        try:
            if not known[0]:
                raise KeyError(doc_id)
            return shards[int(shard[0])].reconstruct(int(local[0]))
        except KeyError:  # the shard's own message would name its local id and count
            raise KeyError(f"reconstruct: unknown document ids [{doc_id}] (or deleted; the index holds {len(self)} "
                           "live documents)") from None

    # ------------------------------------------------------------------ updates
    def add(self, documents: Any, *, batch_tokens: int = 1 << 16) -> np.ndarray:
        """Append documents, compressed with the shared codec; returns their global int64 ids.

        Routing rule ("ranges"): the batch is cut into contiguous parts, one per shard, the largest parts
        to the shards with the fewest live documents, so shards stay balanced. One atomic commit.
        """
        from ..engine.inputs import as_document, iter_documents

        docs_iter, _ = iter_documents(documents)
        docs = [as_document(d, self.dim, f"documents[{i}]") for i, d in enumerate(docs_iter)]
        if not docs:
            raise ValueError("add: no documents given")
        with self._writer() as m:
            n_shards = len(m["shards"])
            bounds = [len(docs) * s // n_shards for s in range(n_shards + 1)]
            sizes = sorted((bounds[i + 1] - bounds[i] for i in range(n_shards)), reverse=True)
            by_load = sorted(range(n_shards), key=lambda s: (len(self._shards[s]), s))
            start = int(m["next_id"])
            plan, pos = {}, 0
            for s, size in zip(by_load, sizes):
                if size:
                    plan[s] = (pos, size)
                    pos += size

            def edit(s: int, idx: Index, entry: dict[str, Any]) -> None:
                lo, size = plan[s]
                local = idx.add(docs[lo:lo + size], batch_tokens=batch_tokens)
                if local[0] != sum(r[2] for r in entry["runs"]):
                    raise ShardFormatError(f"shard {s} numbered the added documents from {int(local[0])}, "
                                           "not after its runs; the shard was changed outside the sharded index")
                entry["runs"] = entry["runs"] + [[start + lo, int(local[0]), size]]

            self._commit(m, {s: edit for s in plan}, {"next_id": start + len(docs)})
        return np.arange(start, start + len(docs), dtype=np.int64)

    def delete(self, ids: Any) -> int:
        """Remove documents by global id at once (space reclaimed by :meth:`compact`); returns how many.

        Unknown or already deleted ids raise KeyError naming them, and nothing changes.
        """
        ids = id_array(ids)
        if ids.size == 0:
            return 0
        if ids.dtype.kind not in "iu":
            raise TypeError(f"delete: document ids must be integers, got dtype {ids.dtype}")
        ids = np.unique(ids.astype(np.int64).ravel())
        with self._writer() as m:
            shard, local, known = self._ids.locate(ids)
            if known.all():
                for s in np.unique(shard):
                    live = self._shards[int(s)].ids
                    known[shard == s] = np.isin(local[shard == s], live)
            if not known.all():
                raise KeyError(f"delete: unknown document ids {ids[~known][:10].tolist()} (the index holds "
                               f"{len(self)} live documents)")

            def edit(s: int, idx: Index, entry: dict[str, Any]) -> None:
                idx.delete(local[shard == s])

            self._commit(m, {int(s): edit for s in np.unique(shard)}, {})
        return int(ids.size)

    def compact(self) -> int:
        """Rewrite the shards that hold deleted documents without them; ids do not change."""
        with self._writer() as m:
            todo = {s for s, sh in enumerate(self._shards) if len(sh) < _n_docs(sh)}
            dropped = 0

            def edit(s: int, idx: Index, entry: dict[str, Any]) -> None:
                nonlocal dropped
                dropped += idx.compact()

            self._commit(m, {s: edit for s in todo}, {})
        return dropped

    def _writer(self) -> WriterScope:
        return WriterScope(self.path, self._write_mutex, self._sync_for_write)

    def _sync_for_write(self) -> dict[str, Any]:
        """The committed manifest, this handle switched to it first if another writer moved it on."""
        m = read_sharded(self.path)
        _retire_dirs(self.path, m)
        if m["generation"] != self.generation:
            self._stamp = _stamp(self.path)
            self._switch(*_load(self.path, "none", m))
        return self._m

    def _commit(self, m: dict[str, Any], edits: dict[int, Any], fields: dict[str, Any]) -> None:
        """Apply ``edits`` to copies of the shards they name (hard links of the immutable files), then
        switch ``sharded.json`` to the new generation at once; a failure leaves the old one untouched."""
        if not edits:
            return
        gen = max(m["generation"], _plan_generation(self.path)) + 1  # never the folders a paused build owns
        new = {**m, **fields, "generation": gen, "shards": [dict(sh) for sh in m["shards"]]}
        made = []
        try:
            for s, edit in sorted(edits.items()):
                entry = new["shards"][s]
                dst = self.path / shard_dir_name(s, gen)
                _clone(self.path / entry["dir"], dst)
                made.append(dst)
                idx = Index.open(dst, verify="none")
                edit(s, idx, entry)
                em = engine_fields(dst)
                entry.update({"dir": dst.name, "n_docs": int(em["n_docs"]) - int(em.get("n_deleted", 0)),
                              "n_tokens": int(em["n_tokens"]), "engine_generation": int(em["generation"])})
            committed = write_sharded(self.path, new)
        except BaseException:
            for d in made:
                shutil.rmtree(d, ignore_errors=True)
            raise
        self._stamp = _stamp(self.path)
        self._switch(*_load(self.path, "none", committed))
        _retire_dirs(self.path, committed)

    # ------------------------------------------------------------------ inspection
    def verify(self) -> list[str]:
        """Check the sharded manifest, every shard's checksums and codec; returns problems (empty: sound)."""
        problems: list[str] = []
        try:
            m = read_sharded(self.path)
        except ShardFormatError as exc:
            return [str(exc)]
        for s, sh in enumerate(m["shards"]):
            sdir = self.path / sh["dir"]
            try:
                _check_shard(sdir, s, sh, m)
                problems += [f"shard {s}: {p}" for p in Index.open(sdir, verify="none").verify()]
            except (ShardFormatError, OSError, ValueError) as exc:
                problems.append(str(exc))
        return problems

    def info(self) -> dict[str, Any]:
        """What the index holds, for humans and ``plaidx info``."""
        infos = [s.info() for s in self._shards]
        size = sum(int(i["bytes_on_disk"]) for i in infos)
        return {"path": str(self.path), "format_version": self._m["format_version"], "sharded": True,
                "generation": self.generation, "shards": self.n_shards, "documents": len(self),
                "deleted_pending_compaction": sum(int(i["deleted_pending_compaction"]) for i in infos),
                "tokens": self.n_tokens, "dim": self.dim, "nbits": self.nbits, "nlist": self.nlist,
                "residual_codec": infos[0]["residual_codec"] if infos else None,
                "bytes_on_disk": size, "bytes_per_token": size / max(1, self.n_tokens),
                "metadata": self.metadata, "drift": _worst_drift(self._shards),
                "codec_hash": self._m["codec"]["hash"], "routing": dict(self._m["routing"]),
                "per_shard": [{"dir": sh["dir"], "documents": i["documents"], "tokens": i["tokens"],
                               "bytes_on_disk": i["bytes_on_disk"]} for sh, i in zip(self._m["shards"], infos)],
                "build": dict(self._m.get("build") or {}), "executor": self._exec.name}

    def drift(self) -> dict[str, Any]:
        return _worst_drift(self._shards)

    def warm(self, read: bool = False) -> ShardedIndex:
        """:meth:`plaidx.Index.warm` on every shard's handle in this process (what in-process executors search;
        Ray actors hold their own handles and derive on their first search). Returns this handle."""
        for shard in self._shards:
            shard.warm(read=read)
        return self


def merge_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row of float32 (nq, m) scores and int64 (nq, m) ids, by score then by id.

    Padding (-inf, -1) goes last. Returns float32 (nq, k) and int64 (nq, k).
    """
    key_id = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
    order = np.lexsort((key_id, -scores), axis=-1)[:, :k]
    return (np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False),
            np.take_along_axis(ids, order, axis=1))


def _load(path: Path, verify: str, manifest: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Index]]:
    """The manifest and every shard opened, each checked against it (folder, codec, counts).

    A writer may commit and retire the shard folders we are about to open: then we reread and retry.
    """
    for _ in range(20):
        m = manifest if manifest is not None else read_sharded(path)
        try:
            return m, _open_shards(path, verify, m)
        except (IndexFormatError, OSError):
            if manifest is not None or read_sharded(path)["generation"] == m["generation"]:
                raise
    raise ShardFormatError(f"sharded index at {str(path)!r} kept changing while opening it")


def _open_shards(path: Path, verify: str, m: dict[str, Any]) -> list[Index]:
    codec_dir = path / m["codec"]["dir"]
    if not (codec_dir / MANIFEST).is_file():
        raise ShardFormatError(f"{str(path)!r}: the codec folder {m['codec']['dir']!r} is missing; the sharded index "
                               "is damaged (restore it from a backup or build it again)")
    shards = []
    for s, sh in enumerate(m["shards"]):
        sdir = path / sh["dir"]
        _check_shard(sdir, s, sh, m)
        try:
            shards.append(Index.open(sdir, verify=verify))
        except IndexFormatError as exc:  # every shard has files of the same names: say which one is damaged
            raise type(exc)(f"shard {s} ({sh['dir']}): {exc}") from None
    return shards


def _check_shard(sdir: Path, s: int, sh: dict[str, Any], m: dict[str, Any]) -> None:
    if not (sdir / MANIFEST).is_file():
        raise ShardFormatError(f"shard {s} of {str(sdir.parent)!r} is missing ({sh['dir']}/{MANIFEST} not found); "
                               "restore the folder from a backup or build the index again")
    em = engine_fields(sdir)
    if em["generation"] != sh["engine_generation"]:
        raise ShardFormatError(f"shard {s} ({sh['dir']}) is at generation {em['generation']}, the sharded manifest "
                               f"names {sh['engine_generation']}: it was changed outside the sharded index")
    for key in ("dim", "nbits", "nlist"):
        if em[key] != m[key]:
            raise ShardFormatError(f"shard {s} ({sh['dir']}) has {key}={em[key]}, the sharded index {m[key]}")
    if codec_hash(sdir) != m["codec"]["hash"]:
        raise ShardFormatError(f"shard {s} ({sh['dir']}) was compressed with another codec than the sharded index's "
                               "(codec hash differs): its scores are not comparable; rebuild the sharded index")
    if em["next_id"] != sum(r[2] for r in sh["runs"]):
        raise ShardFormatError(f"shard {s} ({sh['dir']}) numbers {em['next_id']} documents, its id runs "
                               f"{sum(r[2] for r in sh['runs'])}; the sharded manifest does not match the shard")


def _clone(src: Path, dst: Path) -> None:
    """A new shard folder sharing the immutable array files of ``src`` (hard links; copies where links fail)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir()
    for f in src.iterdir():
        if f.name == LOCK or f.name.startswith(".") or not f.is_file():
            continue
        if f.name == MANIFEST:
            shutil.copy2(f, dst / f.name)
            continue
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


def _retire_dirs(path: Path, m: dict[str, Any]) -> None:
    """Remove shard folders the committed manifest does not name (old generations, aborted writes)."""
    if (path / PLAN_FILE).exists():
        return  # an unfinished build: its folders are resumed by build, not ours to remove
    keep = named_dirs(m)
    for p in path.iterdir():
        if p.is_dir() and p.name.startswith(("shard-", "codec.")) and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)


def _plan_generation(path: Path) -> int:
    """The generation an unfinished build of this folder writes its folders under (0: none)."""
    import json

    try:
        return int(json.loads((path / PLAN_FILE).read_text(encoding="utf-8"))["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _n_docs(idx: Index) -> int:
    return int(engine_fields(idx.path)["n_docs"])


def _worst_drift(shards: list[Index]) -> dict[str, Any]:
    drifts = [s.drift() for s in shards]
    worst = max(drifts, key=lambda d: d["ratio"] or 0.0)
    return {**worst, "recommend_recluster": any(d["recommend_recluster"] for d in drifts)}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path / SHARDED_MANIFEST)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


__all__ = ["ShardedIndex", "merge_topk"]
