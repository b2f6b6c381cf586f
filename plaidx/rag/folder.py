"""The index folder: engine + document store + configuration, opened once for RAG, the CLI and the server.

A RAG index folder holds ``engine/`` (a :class:`plaidx.Index`), ``docstore.sqlite`` (passages, document
ids, metadata) and ``plaidx_rag.json`` (model and parameters). A bare engine folder (``manifest.json``
alone) opens too, with engine ids as document ids and no text. Every reader and writer of a folder goes
through :class:`IndexFolder`; nobody else opens its engine or store.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np

from ..distributed import ShardedIndex, default_executor, is_sharded
from ..engine import Index, SearchParams, WriterLock, fsync_dir
from ..engine.inputs import check_flag, per_query_lists
from ..engine.storage import exchange_folders
from ..errors import DriftWarning, IndexFormatError, IndexLockedError, StaleIndexError
from .docstore import DocStore
from .where import MAX_INT, MIN_INT

FORMAT = "plaidx-rag"
FORMAT_VERSION = 1
CONFIG_FILE = "plaidx_rag.json"
ENGINE_DIR = "engine"
DOCSTORE_FILE = "docstore.sqlite"
ENGINE_MANIFEST = "manifest.json"
EXACT_MAX_TOKENS = 1 << 15  # RAG indexes up to this many tokens are searched exhaustively (exact, and no slower)


class Hit(NamedTuple):
    """One search result: the engine's passage id, its MaxSim score, and what the store holds for it
    (``document_id`` is the engine id and ``content``/``metadata`` are None in a bare engine folder)."""

    passage_id: int
    score: float
    document_id: Any
    content: Optional[str]
    metadata: Optional[dict[str, Any]]


# ---------------------------------------------------------------------------------------------- on disk
def locate(path: Union[str, os.PathLike]) -> tuple[str, Path, Path]:
    """``(kind, folder, engine_folder)``: kind "rag" (``engine/`` + store) or "engine" (a bare engine folder).

    Raises FileNotFoundError for a missing path and IndexFormatError for a folder of another kind.
    """
    p = Path(path)
    recover(p)
    if not p.exists():
        raise FileNotFoundError(f"{str(p)!r}: no such index folder")
    if (p / ENGINE_DIR / ENGINE_MANIFEST).is_file() or is_sharded(p / ENGINE_DIR):
        return "rag", p, p / ENGINE_DIR
    if (p / ENGINE_MANIFEST).is_file() or is_sharded(p):
        return "engine", p, p
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if (c / ENGINE_DIR / ENGINE_MANIFEST).is_file())
        if inside:
            raise IndexFormatError(f"{str(p)!r} is a folder of indexes ({', '.join(inside[:5])}); name one of them, "
                                   f"e.g. {str(p / inside[0])!r}")
    raise IndexFormatError(f"{str(p)!r} is not a plaidx index: expected {ENGINE_MANIFEST} (an engine folder) or "
                           f"{ENGINE_DIR}/{ENGINE_MANIFEST} (an index made by `plaidx index` or RAGPretrainedModel)")


def read_config(path: Path) -> dict[str, Any]:
    """The folder's ``plaidx_rag.json``, checked."""
    f = path / CONFIG_FILE
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{str(path)!r} is not a plaidx RAG index: {CONFIG_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{str(f)!r} is unreadable or not JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise IndexFormatError(f"{str(f)!r} is not a plaidx RAG index configuration")
    v = cfg.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise IndexFormatError(f"{str(f)!r}: format version {v!r} is newer than this plaidx supports "
                               f"({FORMAT_VERSION}); upgrade plaidx")
    if not isinstance(cfg.get("model"), dict):
        raise IndexFormatError(f"{str(f)!r}: the model configuration is missing")
    return cfg


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON next to ``path``, fsync it, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def build_dir(path: Path) -> Path:
    """Where an overwrite of the folder at ``path`` stages the new folder and parks the old one."""
    return path.parent / f".{path.name}.build"


_STALE_RETRIES = 3  # reads of a folder an overwrite replaced meanwhile are tried this many times in all
WRITE_WAIT_S = 300.0  # how long a write waits for another process's write to the same index before IndexLockedError
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def write_lock(path: Union[str, os.PathLike]) -> threading.RLock:
    """The one lock of this process for writes to the index folder at ``path`` (builds, adds, deletes), whichever
    handle makes them (re-entrant: a write may take it around the steps that take it again); across processes the
    folder's :class:`WriterLock` orders them."""
    key = str(Path(path).absolute())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


def recover(path: Path) -> None:
    """Finish or undo an interrupted overwrite of the index at ``path`` (see :func:`publish`)."""
    bdir = build_dir(path)
    replaced, staging = bdir / "replaced", bdir / "staging"
    if not (replaced.exists() or staging.exists()):
        return  # nothing left over: readers never touch the build lock
    try:
        lock = WriterLock(bdir).acquire()
    except IndexLockedError:
        return  # a build is running; it cleans up after itself
    try:
        if replaced.exists():
            if not path.exists():  # crashed between the two renames of a system without an atomic exchange
                os.rename(replaced, path)
                fsync_dir(path.parent)
            else:
                shutil.rmtree(replaced, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()


def publish(staging: Path, path: Path) -> None:
    """Move a complete index folder into place, replacing any index there; the build lock is held.

    The two folders are exchanged in one atomic step (``renameat2``), so a reader finds the old index or the new
    one, never neither; the old one is then removed. Where the system lacks the exchange, two renames: a crash
    between them leaves no folder at ``path`` and the old one under the build folder, and :func:`recover` puts
    it back.
    """
    fsync_dir(staging.parent)
    if path.exists():
        replaced = build_dir(path) / "replaced"
        with WriterLock(path, wait=WRITE_WAIT_S):  # no add/delete of the old index is half done
            if exchange_folders(staging, path):
                os.rename(staging, replaced)  # the old folder, now at the staging path
            else:  # pragma: no cover - kernels and libcs without renameat2
                os.rename(path, replaced)
                os.rename(staging, path)
        fsync_dir(path.parent)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.rename(staging, path)
        fsync_dir(path.parent)


@contextmanager
def staged_folder(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """A fresh, empty staging folder for a whole new index folder at ``path``, moved into place (replacing
    any folder there, see :func:`publish`) when the block ends normally and removed when it raises. The
    build lock of ``path`` is held throughout: two builds of one path never interleave, and a second one waits
    for the first (and this process's adds and deletes of the index wait for the build)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bdir = build_dir(path)
    with write_lock(path), WriterLock(bdir, wait=WRITE_WAIT_S):
        staging = bdir / "staging"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            yield staging
            publish(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _model_config(*sources: Any) -> Optional[dict[str, Any]]:
    for src in sources:
        if isinstance(src, dict):
            for key in ("model", "encoder", "model_config"):
                cfg = src.get(key)
                if isinstance(cfg, dict) and cfg.get("name_or_path"):
                    return cfg
                if isinstance(cfg, str) and cfg:
                    return {"name_or_path": cfg}
    return None


# ---------------------------------------------------------------------------------------------- the folder
class IndexFolder:
    """An index folder opened for use: its engine, document store (RAG folders) and configuration.

    Invariant of a RAG folder: every passage in the document store is a live document of the engine.
    Writes keep it by their order (add: engine commit, then SQLite commit; delete: SQLite commit, then
    engine commit), so a crash can only leave engine documents that the store does not know: opening
    deletes them (reconciliation), and searches skip them meanwhile.

    Every search first picks up commits made by other handles or processes (:meth:`Index.refresh`), so a
    long-lived reader (the server) never serves deleted passages nor misses added ones. Searches are
    thread-safe; writes through one handle are serialised, and across processes by the folder's lock.

    ``reconcile=False`` opens without repairing (what ``plaidx info --verify`` needs to report damage).
    """

    def __init__(self, path: Union[str, os.PathLike], verify: str = "structure", *, reconcile: bool = True):
        self.kind, self.path, self.engine_path = locate(path)
        self.path = self.path.absolute()
        self.engine_path = self.engine_path.absolute()
        self.name = self.path.name
        self._folder = os.stat(self.path).st_ino
        self.config: dict[str, Any] = read_config(self.path) if self.kind == "rag" else {}
        # a sharded engine folder (plaidx.distributed) answers the same calls as an Index
        self.engine = (ShardedIndex.open(self.engine_path, default_executor(), verify=verify)
                       if is_sharded(self.engine_path) else Index.open(self.engine_path, verify=verify))
        self.store: Optional[DocStore] = DocStore(self.path / DOCSTORE_FILE) if self.kind == "rag" else None
        self.model_config = _model_config(self.config, self.engine.metadata)
        self.reconciled = self._reconcile() if (self.store is not None and reconcile) else 0

    def __repr__(self) -> str:
        return f"IndexFolder({str(self.path)!r}, kind={self.kind!r}, passages={len(self.engine)})"

    def __enter__(self) -> IndexFolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    # -- state ------------------------------------------------------------------------------------
    @property
    def model_name(self) -> Optional[str]:
        return None if self.model_config is None else str(self.model_config["name_or_path"])

    @property
    def max_document_length(self) -> int:
        return int(self.config["passages"]["max_document_length"])

    def replaced(self) -> bool:
        """Whether the folder at this path is no longer the one opened (an overwrite replaced it)."""
        try:
            return os.stat(self.path).st_ino != self._folder
        except OSError:
            return True

    def refresh(self) -> bool:
        """Switch the engine to its newest generation when another handle or process committed one; never to
        the engine of a folder that replaced this one (its store is another)."""
        return False if self.replaced() else self.engine.refresh()

    def _unreplaced(self, result: Any) -> Any:
        """``result``, read from this folder, unless an overwrite replaced the folder meanwhile: then part of it
        may come from the new one, and a StaleIndexError says to search again (:meth:`FolderCache.get` opens
        the new folder)."""
        if self.replaced():
            raise StaleIndexError(f"the index at {str(self.path)!r} was replaced (overwritten) during this search; "
                                  "search again")
        return result

    def _reconcile(self) -> int:
        try:
            lock = WriterLock(self.path).acquire()
        except IndexLockedError:
            return 0  # another process is writing; its own order keeps the invariant
        try:
            self.engine.refresh()
            engine_ids = self.engine.ids
            stored = self.store.all_passage_ids()
            missing = np.setdiff1d(stored, engine_ids, assume_unique=True)
            if missing.size:
                raise IndexFormatError(f"{str(self.path)!r}: the document store names {missing.size} passages the "
                                       f"engine does not hold (first: {missing[:5].tolist()}); the index is damaged")
            orphans = np.setdiff1d(engine_ids, stored, assume_unique=True)
            if orphans.size:
                self.engine.delete(orphans)
            return int(orphans.size)
        finally:
            lock.release()

    # -- writes ---------------------------------------------------------------------------------
    def _rag_only(self, what: str) -> DocStore:
        if self.store is None:
            raise TypeError(f"{what}: {str(self.path)!r} is a bare engine folder (no document store); use "
                            "plaidx.Index for it, or build a RAG index with RAGPretrainedModel.index")
        return self.store

    def index_metadata(self, fields: Sequence[str], *, drop: bool = False) -> list[str]:
        """Index (or with ``drop=True`` stop indexing) metadata fields for ``where`` filters
        (:meth:`DocStore.index_metadata`); the indexed fields after the change."""
        return self._rag_only("index_metadata").index_metadata(fields, drop=drop)

    def add(self, documents: list[tuple[Any, Optional[str]]], passages: list[tuple[Any, str]],
            embeddings: list[np.ndarray], *, drift_hint: str = "rebuilding the index") -> np.ndarray:
        """Append passages (engine commit, then store commit); returns their passage ids."""
        store = self._rag_only("add")
        with self._writing():
            dup = store.existing([d for d, _ in documents])
            if dup:
                raise ValueError(f"document ids already in the index: {dup[:10]}; delete them first or use new ids")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pids = self.engine.add(embeddings)
            self._relay(caught, drift_hint)
            try:
                store.add(documents, [(int(p), d, c) for p, (d, c) in zip(pids, passages)])
            except BaseException:
                self.engine.delete(pids)  # undo; were this to fail too, the next open reconciles
                raise
            return pids

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this process's write lock of the folder, then (waiting for another process's write) its
        WriterLock; a StaleIndexError when the folder was rebuilt since this handle opened it."""
        with write_lock(self.path), WriterLock(self.path, wait=WRITE_WAIT_S):
            if self.replaced():
                raise StaleIndexError(f"the index at {str(self.path)!r} was rebuilt (overwritten) after this handle "
                                      "opened it, so nothing was written: make the change again (it goes to the new "
                                      "index)")
            yield

    def _relay(self, caught: list[warnings.WarningMessage], drift_hint: str) -> None:
        """Re-emit the engine's warnings; its drift advice only where PLAID searches the index."""
        for w in caught:
            if issubclass(w.category, DriftWarning):
                if self.engine.n_tokens <= EXACT_MAX_TOKENS:
                    continue  # searched exhaustively: drift costs no recall here
                msg = f"index {self.name!r}: {str(w.message).split(';')[0]}; {drift_hint} restores full recall"
                warnings.warn(msg, DriftWarning, stacklevel=4)
            else:
                warnings.warn(w.message, w.category, stacklevel=4)

    def delete(self, document_ids: list[Any]) -> np.ndarray:
        """Delete documents (all their passages) by id (store commit, then engine commit); their passage ids."""
        store = self._rag_only("delete")
        with self._writing():
            pids = store.delete_documents(document_ids)
            if pids.size:
                self.engine.delete(pids)
            return pids

    # -- search ---------------------------------------------------------------------------------
    def passage_ids(self, doc_ids: Optional[Sequence[Any]]) -> Optional[np.ndarray]:
        """Engine ids allowed by a document-id filter (user ids in a RAG folder, engine ids in a bare one).

        Unknown ids raise KeyError naming them as documents.
        """
        if doc_ids is None:
            return None
        doc_ids = list(doc_ids)
        huge = [x for x in doc_ids if isinstance(x, int) and not MIN_INT <= x <= MAX_INT]
        if huge:  # no store or engine holds an id past 64 bits
            raise KeyError(f"doc_ids: unknown document ids {huge[:10]}")
        if self.store is not None:
            return self.store.passage_ids(list(dict.fromkeys(doc_ids)), missing="raise")
        if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in doc_ids):
            raise TypeError("doc_ids: this index has no document store, so its document ids are the engine's "
                            "integers")
        return np.asarray(doc_ids, dtype=np.int64)

    def allowed(self, doc_ids: Optional[Sequence[Any]], where: Any = None) -> Optional[np.ndarray]:
        """Engine ids allowed by a document-id filter (:meth:`passage_ids`) and a metadata filter ``where``
        (:mod:`plaidx.rag.where`; RAG folders only), both when both are given; None when neither is."""
        allowed = self.passage_ids(doc_ids)
        if where is None:
            return allowed
        matched = self._rag_only("where").passage_ids_where(where)
        return matched if allowed is None else np.intersect1d(allowed, matched)

    def decide_exact(self, exact: Optional[bool], params: Optional[SearchParams]) -> bool:
        """``exact=None`` decides: RAG folders of at most EXACT_MAX_TOKENS tokens are scored exhaustively
        unless PLAID knobs are given; bare engine folders use PLAID (as ``Index.search``)."""
        if check_flag(exact, "exact", none_ok=True) is not None:
            return bool(exact)
        no_knobs = params is None or params.is_default()
        return self.kind == "rag" and no_knobs and self.engine.n_tokens <= EXACT_MAX_TOKENS

    def search(self, queries: Any, k: int, *, params: Optional[SearchParams] = None,
               doc_ids: Optional[Sequence[Any]] = None, exact: Optional[bool] = None,
               num_threads: int = 0, passages: Optional[np.ndarray] = None, where: Any = None) -> list[list[Hit]]:
        """Per query of float32 ``(nq, q_tokens, dim)`` (or a list of ``(q_tokens_i, dim)`` queries of different
        lengths), up to k hits, best first.

        Fewer than k come back only when fewer passages exist or pass the filters: ``doc_ids`` (one list, or
        one per query) and ``where`` (:meth:`allowed`). ``passages``: the filter already resolved by
        :meth:`allowed` (instead of ``doc_ids`` and ``where``).
        """
        nq = len(queries)  # an array (nq, q_tokens, dim), or a list of (q_tokens_i, dim) queries of different lengths
        if passages is not None and (doc_ids is not None or where is not None):
            raise TypeError("give doc_ids and where, or passages (resolved by allowed), not both")
        per_query = per_query_lists(doc_ids, nq)
        if per_query is not None:  # one list of document ids per query
            return [self.search(queries[i:i + 1], k, params=params, doc_ids=ids, exact=exact,
                                num_threads=num_threads, where=where)[0] for i, ids in enumerate(per_query)]
        self.refresh()
        allowed = passages if passages is not None else self.allowed(doc_ids, where)
        exact = self.decide_exact(exact, params)
        params = None if exact else params
        engine = self.engine
        n_live = len(engine)
        if (allowed is not None and allowed.size == 0) or n_live == 0:
            return [[] for _ in range(nq)]
        kk = min(k, n_live)
        while True:
            try:
                scores, ids = engine.search(queries, kk, params=params, doc_ids=allowed, exact=exact,
                                            num_threads=num_threads)
            except KeyError:  # the filter names passages this snapshot lacks: the store is ahead of it
                if self.store is None:
                    raise  # a bare engine folder: the ids are the caller's, and unknown
                if self.refresh():
                    continue
                allowed = allowed[np.isin(allowed, engine.ids)]
                if allowed.size == 0:
                    return [[] for _ in range(nq)]
                continue
            found = np.unique(ids[ids >= 0])
            if self.store is None:
                return self._unreplaced([[Hit(int(p), float(s), int(p), None, None) for s, p in zip(srow, irow)
                                          if p >= 0] for srow, irow in zip(scores, ids)])
            rows = self.store.lookup(found.tolist())
            out, short = [], False
            for srow, irow in zip(scores, ids):
                hits = [Hit(int(p), float(s), *rows[int(p)]) for s, p in zip(srow, irow) if p >= 0 and int(p) in rows]
                short |= len(hits) < k and bool(irow[-1] >= 0) and len(hits) < len(irow)
                out.append(hits[:k])
            # passages in the engine but not in the store (a write in flight) took places: ask for more
            if not short or kk >= n_live:
                return self._unreplaced(out)
            kk = min(2 * kk, n_live)

    # -- inspection -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the folder holds: the engine's info plus the store's counts and the model."""
        self.refresh()
        info = self.engine.info()
        size = int(info["bytes_on_disk"])
        passages = int(info["documents"])
        documents = passages
        if self.store is not None:
            documents = self.store.count_documents()
            for suffix in ("", "-wal", "-shm"):
                f = self.path / (DOCSTORE_FILE + suffix)
                if f.is_file():
                    size += f.stat().st_size
        cfg = self.model_config or {}
        return {"path": str(self.path), "kind": self.kind, "documents": documents, "passages": passages,
                "tokens": info["tokens"], "nlist": info["nlist"], "nbits": info["nbits"], "dim": info["dim"],
                "residual_codec": info.get("residual_codec"), "keep_vectors": info.get("keep_vectors"),
                "model": cfg.get("name_or_path"), "query_length": cfg.get("query_length"),
                "document_length": cfg.get("document_length"), "bytes_on_disk": size,
                "engine_bytes_on_disk": int(info["bytes_on_disk"]), "format_version": info["format_version"],
                "generation": info["generation"], "deleted_pending_compaction": info["deleted_pending_compaction"],
                "drift": info["drift"], "index_config": dict(self.config.get("index") or {}),
                "metadata_indexes": self.store.metadata_indexes() if self.store is not None else []}

    def verify(self) -> list[str]:
        """Every checksum of the engine, and the store against the engine; problems found (empty: sound)."""
        problems = list(self.engine.verify())
        if self.store is None:
            return problems
        import sqlite3

        try:
            self.engine.refresh()
            stored = self.store.all_passage_ids()
            live = np.asarray(self.engine.ids)
            if not np.array_equal(np.sort(stored), live):
                missing = np.setdiff1d(live, stored)[:5].tolist()
                extra = np.setdiff1d(stored, live)[:5].tolist()
                problems.append(f"the document store and the engine disagree: {stored.size} passages stored, "
                                f"{live.size} live in the engine (engine ids without a passage: {missing}, "
                                f"passages without an engine id: {extra})")
            problems += [f"{self.path / DOCSTORE_FILE}: {p}" for p in self.store.integrity_problems()]
        except sqlite3.DatabaseError as exc:
            problems.append(f"{self.path / DOCSTORE_FILE}: {exc}")
        return problems


class FolderCache:
    """Open folders by path, reopened when another handle or process replaced (overwrote) one."""

    def __init__(self) -> None:
        self._folders: dict[Path, IndexFolder] = {}
        self._lock = threading.RLock()

    def get(self, path: Union[str, os.PathLike], check: Any = None) -> IndexFolder:
        """The open folder at ``path``; ``check(folder)`` runs once on each newly opened one."""
        path = Path(path).absolute()
        with self._lock:
            f = self._folders.get(path)
            if f is not None and f.replaced():
                del self._folders[path]
                f = None
            if f is None:
                f = IndexFolder(path)
                if check is not None:
                    try:
                        check(f)
                    except BaseException:
                        f.close()
                        raise
                self._folders[path] = f
            return f

    def read(self, path: Union[str, os.PathLike], fn: Callable[[IndexFolder], Any], check: Any = None) -> Any:
        """``fn(folder)`` on the open folder at ``path``, again on the new folder when an overwrite replaced it
        during the call (StaleIndexError), so that the answer comes from one folder."""
        for _ in range(_STALE_RETRIES - 1):
            try:
                return fn(self.get(path, check))
            except StaleIndexError:
                pass
        return fn(self.get(path, check))

    def put(self, folder: IndexFolder) -> IndexFolder:
        """Cache a folder opened by the caller (e.g. a subclass); it is reopened as a plain one if replaced."""
        with self._lock:
            self._folders[folder.path] = folder
            return folder

    def forget(self, path: Union[str, os.PathLike]) -> None:
        """Drop a cached folder; searches still running on it finish (its files stay open until collected)."""
        with self._lock:
            self._folders.pop(Path(path).absolute(), None)

    def close(self) -> None:
        with self._lock:
            for f in self._folders.values():
                f.close()
            self._folders.clear()


__all__ = ["CONFIG_FILE", "DOCSTORE_FILE", "ENGINE_DIR", "EXACT_MAX_TOKENS", "FolderCache", "Hit", "IndexFolder",
           "locate", "publish", "read_config", "recover", "staged_folder"]
