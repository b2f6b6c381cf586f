"""The SQLite document store: ids of both kinds, metadata, atomic failed writes, reopening, threads."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from plaidx.errors import IndexFormatError
from plaidx.rag.docstore import DocStore, metadata_json


def _fill(store: DocStore) -> None:
    store.add([("a", metadata_json({"lang": "en"}, "m")), ("b", None), ("c", metadata_json({"n": 3}, "m"))],
              [(0, "a", "alpha one"), (1, "a", "alpha two"), (2, "b", "beta"), (5, "c", "gamma")])


def test_roundtrip_lookup_and_reopen(tmp_path):
    path = tmp_path / "docstore.sqlite"
    with DocStore(path, create=True) as store:
        _fill(store)
        got = store.lookup([5, 0, 2, 99])
        assert got == {0: ("a", "alpha one", {"lang": "en"}), 2: ("b", "beta", None), 5: ("c", "gamma", {"n": 3})}
        assert store.passage_ids(["a", "c"]).tolist() == [0, 1, 5]
        assert store.all_passage_ids().tolist() == [0, 1, 2, 5]
        assert (store.count_documents(), store.count_passages()) == (3, 4)
    with DocStore(path) as store:
        assert store.id_type == "str"
        assert store.document("a") == {"document_id": "a", "metadata": {"lang": "en"},
                                       "passages": [(0, "alpha one"), (1, "alpha two")]}
        assert store.document("zzz") is None
        assert store.existing(["c", "x", "a"]) == ["c", "a"]


def test_int_ids_come_back_as_ints(tmp_path):
    with DocStore(tmp_path / "d.sqlite", create=True) as store:
        store.add([(7, None), (np.int64(11), None)], [(0, 7, "seven"), (1, 11, "eleven")])
    with DocStore(tmp_path / "d.sqlite") as store:
        assert store.id_type == "int"
        assert store.lookup([0, 1]) == {0: (7, "seven", None), 1: (11, "eleven", None)}
        assert store.passage_ids([11]).tolist() == [1]
        with pytest.raises(TypeError, match="stores int document ids"):
            store.passage_ids(["11"])


@pytest.mark.parametrize("ids, exc, msg", [
    (["a", 1], TypeError, "same type"),
    (["a", "  "], ValueError, "empty strings"),
    ([1.5], TypeError, "str or an int"),
    ([True], TypeError, "str or an int"),
    (["a", "a"], ValueError, "unique"),
])
def test_bad_ids_rejected_and_nothing_stored(tmp_path, ids, exc, msg):
    with DocStore(tmp_path / "d.sqlite", create=True) as store:
        with pytest.raises(exc, match=msg):
            store.add([(i, None) for i in ids], [])
        assert store.count_documents() == 0 and store.id_type is None


def test_failed_add_and_delete_change_nothing(tmp_path):
    with DocStore(tmp_path / "d.sqlite", create=True) as store:
        _fill(store)
        with pytest.raises(ValueError, match=r"already in the index: \['b'\]"):
            store.add([("new", None), ("b", None)], [(10, "new", "x")])
        with pytest.raises(ValueError, match="passage id is already used"):
            store.add([("new", None)], [(2, "new", "collides with beta")])
        with pytest.raises(KeyError, match=r"unknown document ids \['nope'\]"):
            store.delete_documents(["a", "nope"])
        with pytest.raises(KeyError, match="unknown document ids"):
            store.passage_ids(["nope"])
        assert store.passage_ids(["nope", "b"], missing="ignore").tolist() == [2]
        assert store.all_passage_ids().tolist() == [0, 1, 2, 5]
        assert store.existing(["new"]) == []
        assert store.delete_documents(["a", "c", "a"]).tolist() == [0, 1, 5]
        assert store.lookup(range(10)) == {2: ("b", "beta", None)}
        assert store.count_documents() == 1


def test_metadata_json_errors():
    assert metadata_json(None, "m") is None
    assert metadata_json({"é": [1, 2]}, "m") == '{"é": [1, 2]}'
    with pytest.raises(TypeError, match="must be a dict"):
        metadata_json(["x"], "document_metadatas[0]")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        metadata_json({"x": object()}, "document_metadatas[3]")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        metadata_json({"x": float("nan")}, "m")
    with pytest.raises(TypeError, match="metadata keys must be strings, got int 1"):
        metadata_json({"a": {1: "one", "1": "uno"}}, "m")  # json.dumps would keep one of the two, silently
    with pytest.raises(ValueError, match="m: document metadata is not valid Unicode text"):
        metadata_json({"x": "caf\udce9"}, "m")


def test_many_ids_beyond_sqlite_variable_limit(tmp_path):
    n = 40_000
    with DocStore(tmp_path / "d.sqlite", create=True) as store:
        store.add([(i, None) for i in range(n)], [(i, i, f"p{i}") for i in range(n)])
        assert store.passage_ids(list(range(0, n, 2))).size == n // 2
        assert len(store.lookup(range(n))) == n
        assert store.delete_documents(list(range(n // 2))).size == n // 2


def test_wal_mode_and_bad_files(tmp_path):
    with DocStore(tmp_path / "d.sqlite", create=True) as store:
        mode = store._con().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    with pytest.raises(FileExistsError):
        DocStore(tmp_path / "d.sqlite", create=True)
    with pytest.raises(IndexFormatError, match="missing"):
        DocStore(tmp_path / "absent.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexFormatError, match="not a plaidx document store"):
        DocStore(tmp_path / "junk.sqlite")
    con = sqlite3.connect(tmp_path / "d.sqlite")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(IndexFormatError, match="newer"):
        DocStore(tmp_path / "d.sqlite")


def test_readers_in_threads_see_whole_writes(tmp_path):
    """Readers in 4 threads never see a document without all its passages while a writer adds/deletes."""
    store = DocStore(tmp_path / "d.sqlite", create=True)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                got = store.lookup(range(0, 160))
                by_doc: dict[int, int] = {}
                for _pid, (doc, _c, meta) in got.items():
                    by_doc[doc] = by_doc.get(doc, 0) + 1
                    assert meta == {"doc": doc}
                assert all(v == 4 for v in by_doc.values()), by_doc
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for d in range(40):
            store.add([(d, metadata_json({"doc": d}, "m"))], [(4 * d + j, d, f"{d}-{j}") for j in range(4)])
            if d % 3 == 2:
                store.delete_documents([d - 1])
    finally:
        stop.set()
        for t in threads:
            t.join()
        store.close()
    assert not errors, errors[0]


def test_a_metadata_filters_answer_is_kept_until_the_store_changes(tmp_path):
    """passage_ids_where answers a repeated filter from its cache (the same read-only array) until a commit
    through this store, through another store object on the same file (as another process would), or a delete."""
    path = tmp_path / "d.sqlite"
    with DocStore(path, create=True) as store, DocStore(path) as other:
        _fill(store)
        first = store.passage_ids_where({"lang": "en"})
        assert first.tolist() == [0, 1] and not first.flags.writeable
        assert store.passage_ids_where({"lang": "en"}) is first
        assert store.passage_ids_where({"n": 3}).tolist() == [5]
        store.add([("d", metadata_json({"lang": "en"}, "m"))], [(6, "d", "delta")])
        assert store.passage_ids_where({"lang": "en"}).tolist() == [0, 1, 6]
        other.add([("e", metadata_json({"lang": "en"}, "m"))], [(7, "e", "epsilon")])
        assert store.passage_ids_where({"lang": "en"}).tolist() == [0, 1, 6, 7]
        other.delete_documents(["a"])
        assert store.passage_ids_where({"lang": "en"}).tolist() == [6, 7]
        for i in range(40):  # the cache stays bounded
            store.passage_ids_where({"n": i})
        assert len(store._local.where) <= 16
