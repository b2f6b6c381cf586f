"""The SQLite store kept beside an index: passage texts, user document ids and document metadata."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..engine.inputs import check_flag
from ..errors import IndexFormatError
from .where import check_fields, check_stored, field_path, path_sql, where_sql

SCHEMA_VERSION = 1
WHERE_CACHE = 16  # metadata filters whose answers each thread keeps (DocStore.passage_ids_where)

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE documents (
    document_id TEXT PRIMARY KEY,
    metadata TEXT
);
CREATE TABLE passages (
    passage_id INTEGER PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES documents(document_id),
    content TEXT NOT NULL
);
CREATE INDEX passages_by_document ON passages(document_id);
"""

# Sets of ids travel to SQLite as one JSON array parameter (json_each), so no statement ever hits the
# bound-variable limit however many ids a call names.
_IN = "(SELECT value FROM json_each(?))"


class DocStore:
    """Passages, documents and metadata of one index in an SQLite database (WAL mode).

    ``passages.passage_id`` is the engine's int64 document id; ``passages.document_id`` and
    ``documents.document_id`` hold the user's document id as text; ``documents.metadata`` is JSON or NULL.
    User ids are all ``str`` or all ``int`` within one store (recorded in ``meta.id_type``) so that they
    come back with the type they went in with.

    Thread safety: every thread reads through its own connection; writes are serialised by a lock and
    each is one ``BEGIN IMMEDIATE`` transaction, so a reader sees a write entirely or not at all.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = Path(path)
        if create:
            if self.path.exists():
                raise FileExistsError(f"{str(self.path)!r} already exists; a new document store needs a new file")
        elif not self.path.is_file():
            raise IndexFormatError(f"{str(self.path)!r}: document store is missing; the index folder is incomplete")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._writes = 0  # commits through this object (a connection's data_version misses its own)
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        try:
            con = self._con()
            if create:
                con.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} "
                                  f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise IndexFormatError(f"{str(self.path)!r} is not a plaidx document store ({exc})") from None
        except BaseException:
            self.close()
            raise
        self._id_type: Optional[str] = self._get_meta("id_type")

    # ------------------------------------------------------------------ connections
    def _con(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError(f"document store {str(self.path)!r} is closed")
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # a returned commit survives power loss
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
            with self._all_lock:
                self._all.append(con)
        return con

    def close(self) -> None:
        """Close every connection of this store (idempotent)."""
        with self._all_lock:
            for con in self._all:
                try:
                    con.close()
                except sqlite3.Error:  # pragma: no cover - closing never matters for correctness
                    pass
            self._all.clear()
            self._closed = True

    def __enter__(self) -> DocStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_schema(self) -> None:
        v = self._get_meta("schema_version")
        if v is None or not v.isdigit():
            raise IndexFormatError(f"{str(self.path)!r}: schema_version missing; not a plaidx document store")
        if int(v) > SCHEMA_VERSION:
            raise IndexFormatError(f"{str(self.path)!r}: schema version {v} is newer than this plaidx supports "
                                   f"({SCHEMA_VERSION}); upgrade plaidx")

    def _get_meta(self, key: str) -> Optional[str]:
        row = self._con().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _write(self) -> _WriteTx:
        return _WriteTx(self)

    # ------------------------------------------------------------------ ids
    @property
    def id_type(self) -> Optional[str]:
        """'str' or 'int' once documents were stored, else None."""
        return self._id_type

    def encode_ids(self, ids: Iterable[Any], *, what: str = "document_ids") -> list[str]:
        """User document ids as the stored text keys; raise on mixed types, empty strings or other types."""
        ids = list(ids)
        kind = _id_kind(ids, what)
        if kind is not None and self._id_type is not None and kind != self._id_type:
            raise TypeError(f"{what}: this index stores {self._id_type} document ids, got {kind} ids")
        return [_key(x) for x in ids]

    def decode_id(self, key: str) -> Any:
        return int(key) if self._id_type == "int" else key

    # ------------------------------------------------------------------ reads
    def count_documents(self) -> int:
        return int(self._con().execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def count_passages(self) -> int:
        return int(self._con().execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def max_int_id(self) -> int:
        """The largest stored integer document id, -1 when there is none (int-id stores only)."""
        if self._id_type != "int":
            raise TypeError("max_int_id: this store does not hold integer document ids")
        row = self._con().execute("SELECT MAX(CAST(document_id AS INTEGER)) FROM documents").fetchone()
        return -1 if row[0] is None else int(row[0])

    def existing(self, document_ids: Sequence[Any]) -> list[Any]:
        """The ids among ``document_ids`` that are stored, in the order given."""
        keys = self.encode_ids(document_ids)
        rows = self._con().execute(f"SELECT document_id FROM documents WHERE document_id IN {_IN}",
                                   (json.dumps(keys),)).fetchall()
        have = {r[0] for r in rows}
        return [x for x, key in zip(document_ids, keys) if key in have]

    def passage_ids(self, document_ids: Sequence[Any], *, missing: str = "raise") -> np.ndarray:
        """int64 passage ids (ascending) of the given documents.

        ``missing="raise"`` raises KeyError naming unknown document ids; ``"ignore"`` skips them.
        """
        keys = self.encode_ids(document_ids)
        con = self._con()
        if missing == "raise":
            self._raise_unknown(con, document_ids, keys, "doc_ids")
        rows = con.execute(f"SELECT passage_id FROM passages WHERE document_id IN {_IN} ORDER BY passage_id",
                           (json.dumps(keys),)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def passage_ids_where(self, where: Any) -> np.ndarray:
        """int64 passage ids (ascending, read-only) of the documents whose metadata matches ``where``
        (:mod:`plaidx.rag.where`).

        Resolving a filter reads every document's metadata, unless its fields are indexed
        (:meth:`index_metadata`), so each thread keeps its last ``WHERE_CACHE`` filters' answers until the store
        changes: a commit by any connection or process (SQLite's ``data_version``) or through this object.
        """
        cond, params = where_sql(where)
        con = self._con()
        key = json.dumps([cond, params])
        version = (con.execute("PRAGMA data_version").fetchone()[0], self._writes)
        cache = self._local.__dict__.setdefault("where", {})
        hit = cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        cur = con.execute("SELECT passage_id FROM passages WHERE document_id IN "
                          f"(SELECT document_id FROM documents WHERE {cond}) ORDER BY passage_id", params)
        pids = np.array([r[0] for r in cur.fetchall()], dtype=np.int64)
        pids.flags.writeable = False
        cache.pop(key, None)
        cache[key] = (version, pids)
        while len(cache) > WHERE_CACHE:
            cache.pop(next(iter(cache)))
        return pids

    def metadata_indexes(self) -> list[str]:
        """The metadata fields with an index (:meth:`index_metadata`), in the order they were indexed."""
        return json.loads(self._get_meta("metadata_indexes") or "[]")

    def index_metadata(self, fields: Sequence[str], *, drop: bool = False) -> list[str]:
        """Index metadata fields (``"lang"``, ``"source.year"``) so that ``where`` filters on them read only the
        matching documents: ``$eq``, ``$in`` and the comparisons look the value up instead of reading every
        document's metadata (``benchmarks/results/where_filters.md``). Each index costs some space and time on
        every add. ``drop=True`` removes the indexes of ``fields`` instead. Returns the indexed fields after the
        change; indexing a field twice, or dropping one that has no index, changes nothing.
        """
        check_flag(drop, "index_metadata: drop")
        paths = {f: field_path(f) for f in check_fields(fields, "index_metadata")}  # errors before any write
        with self._write() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'metadata_indexes'").fetchone()
            have = json.loads(row[0]) if row else []
            for field, path in paths.items():
                name = "metadata_" + hashlib.sha1(path.encode()).hexdigest()[:16]
                if drop:
                    con.execute(f"DROP INDEX IF EXISTS {name}")
                    have = [f for f in have if f != field]
                else:
                    con.execute(f"CREATE INDEX IF NOT EXISTS {name} ON documents(json_extract(metadata, "
                                f"{path_sql(path)}))")
                    if field not in have:
                        have.append(field)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('metadata_indexes', ?)", (json.dumps(have),))
        return have

    def all_passage_ids(self) -> np.ndarray:
        """int64 ids of every stored passage, ascending."""
        cur = self._con().execute("SELECT passage_id FROM passages ORDER BY passage_id")
        parts = []
        while True:
            rows = cur.fetchmany(1 << 16)
            if not rows:
                break
            parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def lookup(self, passage_ids: Iterable[int]) -> dict[int, tuple[Any, str, Optional[dict[str, Any]]]]:
        """{passage_id: (document_id, content, metadata or None)} for the stored ones among ``passage_ids``."""
        pids = [int(p) for p in passage_ids]
        if not pids:
            return {}
        rows = self._con().execute(
            "SELECT p.passage_id, p.document_id, p.content, d.metadata FROM passages p "
            f"JOIN documents d ON d.document_id = p.document_id WHERE p.passage_id IN {_IN}",
            (json.dumps(pids),)).fetchall()
        return {int(pid): (self.decode_id(doc), content, None if meta is None else json.loads(meta))
                for pid, doc, content, meta in rows}

    def document(self, document_id: Any) -> Optional[dict[str, Any]]:
        """{"document_id", "metadata", "passages": [(passage_id, content)]} or None when unknown."""
        key = self.encode_ids([document_id])[0]
        con = self._con()
        row = con.execute("SELECT metadata FROM documents WHERE document_id = ?", (key,)).fetchone()
        if row is None:
            return None
        ps = con.execute("SELECT passage_id, content FROM passages WHERE document_id = ? ORDER BY passage_id",
                         (key,)).fetchall()
        return {"document_id": document_id, "metadata": None if row[0] is None else json.loads(row[0]),
                "passages": [(int(p), c) for p, c in ps]}

    def _raise_unknown(self, con: sqlite3.Connection, ids: Sequence[Any], keys: list[str], what: str) -> None:
        rows = con.execute(f"SELECT document_id FROM documents WHERE document_id IN {_IN}",
                           (json.dumps(keys),)).fetchall()
        have = {r[0] for r in rows}
        bad = [x for x, key in zip(ids, keys) if key not in have]
        if bad:
            raise KeyError(f"{what}: unknown document ids {bad[:10]}{' ...' if len(bad) > 10 else ''} "
                           f"(the index holds {self.count_documents()} documents)")

    # ------------------------------------------------------------------ writes
    def add(self, documents: Sequence[tuple[Any, Optional[str]]],
            passages: Sequence[tuple[int, Any, str]]) -> None:
        """Insert documents ``(document_id, metadata_json or None)`` and passages
        ``(passage_id, document_id, content)`` in one transaction.

        Raises ValueError (and stores nothing) when a document id is already stored, a passage names a
        document that is neither stored nor given, or a passage id is already used.
        """
        doc_keys = self.encode_ids([d[0] for d in documents])
        if len(set(doc_keys)) != len(doc_keys):
            raise ValueError("document_ids must be unique")
        kind = _id_kind([d[0] for d in documents], "document_ids")
        p_keys = self.encode_ids([p[1] for p in passages], what="passage document ids")
        with self._write() as con:
            if doc_keys:
                dup = con.execute(f"SELECT document_id FROM documents WHERE document_id IN {_IN} LIMIT 10",
                                  (json.dumps(doc_keys),)).fetchall()
                if dup:
                    raise ValueError(f"document ids already in the index: {[self.decode_id(r[0]) for r in dup]}; "
                                     "delete them first or use new ids")
            if kind is not None and self._id_type is None:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('id_type', ?)", (kind,))
            con.executemany("INSERT INTO documents (document_id, metadata) VALUES (?, ?)",
                            [(k, m) for k, (_, m) in zip(doc_keys, documents)])
            try:
                con.executemany("INSERT INTO passages (passage_id, document_id, content) VALUES (?, ?, ?)",
                                [(int(p[0]), k, p[2]) for k, p in zip(p_keys, passages)])
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"passages: {exc} (a passage id is already used or names an unknown "
                                 "document)") from None
            if kind is not None and self._id_type is None:
                # set before the commit makes the rows visible, so readers decode them with the right type
                self._id_type = kind

    def delete_documents(self, document_ids: Sequence[Any]) -> np.ndarray:
        """Delete documents and their passages in one transaction; returns the deleted passage ids.

        Raises KeyError naming unknown ids, and deletes nothing then.
        """
        keys = self.encode_ids(document_ids)
        if len(set(keys)) != len(keys):
            keys = list(dict.fromkeys(keys))
        with self._write() as con:
            self._raise_unknown(con, document_ids, keys, "delete")
            arg = (json.dumps(keys),)
            rows = con.execute(f"SELECT passage_id FROM passages WHERE document_id IN {_IN}", arg).fetchall()
            con.execute(f"DELETE FROM passages WHERE document_id IN {_IN}", arg)
            con.execute(f"DELETE FROM documents WHERE document_id IN {_IN}", arg)
        return np.array(sorted(r[0] for r in rows), dtype=np.int64)

    def integrity_problems(self) -> list[str]:
        """SQLite's quick_check of the file: [] when sound, else what it reports."""
        rows = self._con().execute("PRAGMA quick_check").fetchall()
        return [] if rows and rows[0][0] == "ok" else [f"SQLite quick_check: {r[0]}" for r in rows[:10]]

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


class _WriteTx:
    """One serialised write transaction: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception."""

    def __init__(self, store: DocStore):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._write_lock.acquire()
        try:
            self.con = self.store._con()
            self.con.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._write_lock.release()
            raise
        return self.con

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            self.con.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self.store._writes += 1
            self.store._write_lock.release()


def _id_kind(ids: Sequence[Any], what: str) -> Optional[str]:
    """'str' or 'int' for a non-empty list of ids of one kind; raise TypeError/ValueError otherwise."""
    if not ids:
        return None
    kinds = set()
    for x in ids:
        if isinstance(x, str):
            if not x.strip():
                raise ValueError(f"{what} must not contain empty strings")
            kinds.add("str")
        elif isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
            kinds.add("int")
        else:
            raise TypeError(f"{what}: a document id must be a str or an int, got {type(x).__name__} {x!r}")
    if len(kinds) > 1:
        raise TypeError(f"{what}: all document ids must be of the same type (all str or all int)")
    return kinds.pop()


def _key(x: Any) -> str:
    return x if isinstance(x, str) else str(int(x))


def metadata_json(metadata: Any, where: str) -> Optional[str]:
    """Serialise one document's metadata (a dict or None) to JSON; raise a clear error otherwise."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"{where}: document metadata must be a dict or None, got {type(metadata).__name__}")
    _check_tree(metadata, f"{where}: document metadata")
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: document metadata must be JSON-serialisable ({exc})") from None


def _check_tree(value: Any, what: str) -> None:
    """Every key and value of a metadata tree as the store gives it back and ``where`` compares it
    (:func:`plaidx.rag.where.check_stored`); keys are strings (json.dumps would turn 1 into "1", silently dropping
    a value already under "1")."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{what}: metadata keys must be strings, got {type(k).__name__} {k!r}")
            check_stored(k, what)
            _check_tree(v, what)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_tree(v, what)
    else:
        check_stored(value, what)
