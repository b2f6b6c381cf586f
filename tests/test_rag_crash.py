"""The engine and the document store stay consistent across crashes between their two commits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from encoder_fixtures import make_tiny_checkpoint
from test_rag import corpus
from threads import repeating_in_threads, run_in_threads

import plaidx
import plaidx.rag.folder as folder_module
from plaidx import RAGPretrainedModel
from plaidx.errors import IndexFormatError
from plaidx.rag.folder import ENGINE_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:added documents drift")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "stanford", query_length=16, document_length=32)


@pytest.fixture()
def rag(checkpoint, tmp_path):
    return RAGPretrainedModel.from_pretrained(str(checkpoint), index_root=tmp_path / "indexes", verbose=0)


def _engine_ids(path: str) -> list[int]:
    return plaidx.Index.open(Path(path) / ENGINE_DIR).ids.tolist()


def test_killed_between_engine_commit_and_docstore_commit_on_add(rag, tmp_path):
    docs = corpus(10, seed=20)
    path = rag.index(docs, document_ids=[f"d{i}" for i in range(10)], index_name="crash")
    text = "hello world colbert late interaction"
    emb = rag._doc_encoder(256).encode_documents([text])[0]
    np.save(tmp_path / "emb.npy", emb)
    # the add of RAGPretrainedModel.add_to_index after encoding, in a process that dies right after the
    # engine's commit (no torch there: the handle needs only the engine and the store)
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from plaidx.rag import docstore
        from plaidx.rag import IndexFolder
        from pathlib import Path
        h = IndexFolder(Path({path!r}))
        def die(*args, **kwargs):
            os._exit(17)
        docstore.DocStore.add = die
        h.add([("new", None)], [("new", {text!r})], [np.load({str(tmp_path / "emb.npy")!r})])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    assert _engine_ids(path) == list(range(11))  # the engine committed passage 10; the store never heard of it

    again = RAGPretrainedModel.from_index(path, verbose=0)
    h = again._handle(None)
    assert h.reconciled == 1 and h.engine.ids.tolist() == list(range(10)) == h.store.all_passage_ids().tolist()
    assert {r["document_id"] for r in again.search(docs[0], k=50)} == {f"d{i}" for i in range(10)}
    assert again.add_to_index([text], new_document_ids=["new"]) == ["new"]
    res = again.search(text, k=11)
    assert len(res) == 11 and [r["passage_id"] for r in res if r["document_id"] == "new"] == [11]  # ids not reused


def test_interrupted_delete_is_reconciled_on_open(rag, monkeypatch):
    docs = corpus(12, seed=21)
    path = rag.index(docs, document_ids=[f"d{i}" for i in range(12)], index_name="crash-del")

    def die(self, ids):
        raise KeyboardInterrupt  # stands for a crash after the store's commit, before the engine's

    with monkeypatch.context() as m:
        m.setattr(plaidx.Index, "delete", die)
        with pytest.raises(KeyboardInterrupt):
            rag.delete_from_index(["d2", "d7"])
    assert len(_engine_ids(path)) == 12
    # meanwhile searches skip the orphans and still fill k
    res = rag.search(docs[2], k=10)
    assert len(res) == 10 and {"d2", "d7"}.isdisjoint(r["document_id"] for r in res)

    again = RAGPretrainedModel.from_index(path, verbose=0)
    assert again._handle(None).reconciled == 2
    assert _engine_ids(path) == [i for i in range(12) if i not in (2, 7)]
    assert len(again.search(docs[2], k=50)) == 10


def test_searches_skip_passages_of_a_write_in_flight(rag):
    docs = corpus(12, seed=22)
    rag.index(docs, document_ids=[f"d{i}" for i in range(12)], index_name="inflight")
    h = rag._handle("inflight")
    orphan = rag._doc_encoder(h.max_document_length).encode_documents([docs[4]])  # a copy of d4's passage
    h.engine.add(orphan)  # committed by the engine, not (yet) by the store
    res = rag.search(docs[4], k=5)
    assert len(res) == 5 and all(r["passage_id"] < 12 for r in res)
    assert res[0]["document_id"] == "d4"
    assert len(rag.search(docs[4], k=100)) == 12


def test_crash_during_overwrite_keeps_the_old_index(rag, monkeypatch):
    """Without an atomic exchange (two renames): a crash between them leaves the old index to be put back."""
    old = corpus(6, seed=23)
    path = rag.index(old, document_ids=[f"old{i}" for i in range(6)], index_name="ow-crash")
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # dies between moving the old index out and the new one in
        return real_rename(src, dst)

    with monkeypatch.context() as m:
        m.setattr(folder_module, "exchange_folders", lambda a, b: False)
        m.setattr(os, "rename", rename)
        with pytest.raises(KeyboardInterrupt):
            rag.index(corpus(4, seed=24), index_name="ow-crash")
    assert not Path(path).exists()
    again = RAGPretrainedModel.from_index(path, verbose=0)
    assert sorted(r["document_id"] for r in again.search(old[0], k=20)) == [f"old{i}" for i in range(6)]
    assert sorted(r["document_id"] for r in rag.search(old[0], index_name="ow-crash", k=20)) == \
        [f"old{i}" for i in range(6)]


def test_an_overwrite_exchanges_the_folders_in_one_step(rag, monkeypatch):
    """With the atomic exchange a reader never finds no folder; a crash right after it keeps the new index and the
    next open removes the old one."""
    path = Path(rag.index(corpus(6, seed=23), document_ids=[f"old{i}" for i in range(6)], index_name="ow-swap"))
    real_exchange = folder_module.exchange_folders
    seen = []

    def exchange(a, b):
        done = real_exchange(a, b)
        seen.append((done, (Path(b) / "plaidx_rag.json").is_file()))  # something is at the path at every step
        raise KeyboardInterrupt  # dies right after the exchange

    with monkeypatch.context() as m:
        m.setattr(folder_module, "exchange_folders", exchange)
        with pytest.raises(KeyboardInterrupt):
            rag.index(corpus(4, seed=24), document_ids=[f"new{i}" for i in range(4)], index_name="ow-swap")
    assert seen == [(True, True)]
    again = RAGPretrainedModel.from_index(path, verbose=0)
    assert sorted(r["document_id"] for r in again.search("x", k=20)) == [f"new{i}" for i in range(4)]
    assert not any((path.parent / ".ow-swap.build").glob("staging*"))  # the old folder was removed


def test_store_ahead_of_engine_is_reported_as_damage(rag):
    path = rag.index(corpus(5, seed=25), index_name="damaged")
    plaidx.Index.open(Path(path) / ENGINE_DIR).delete([3])  # behind the store's back
    with pytest.raises(IndexFormatError, match="damaged"):
        RAGPretrainedModel.from_index(path, verbose=0)


def test_writer_and_readers_in_threads(rag):
    docs = corpus(40, seed=26)
    rag.index(docs[:20], document_ids=[f"d{i}" for i in range(20)], index_name="busy")
    seen: set[str] = set()

    def reader(j: int) -> None:
        res = rag.search(docs[j % 40], index_name="busy", k=8)
        assert len(res) == 8 and len({r["passage_id"] for r in res}) == 8
        seen.update(r["document_id"] for r in res)

    with repeating_in_threads(reader, 3):
        for i in range(20, 26):
            rag.add_to_index([docs[i]], new_document_ids=[f"d{i}"], index_name="busy")
            rag.delete_from_index([f"d{i - 20}"], index_name="busy")
    h = rag._handle("busy")
    assert h.engine.ids.tolist() == h.store.all_passage_ids().tolist() == list(range(6, 26))
    assert seen <= {f"d{i}" for i in range(26)}
    assert np.unique([r["document_id"] for r in rag.search(docs[25], k=100)]).size == 20


def test_rebuilds_while_other_handles_search_and_write(rag, checkpoint, tmp_path):
    """Overwrites while a second object searches the index in threads: every search answers from the old index or
    the new one; adds through two objects in one process wait for each other and for the rebuilds."""
    docs = corpus(30, seed=27)
    sets = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]]
    path = rag.index(docs[:10], document_ids=sets[0], index_name="rebuilt")
    other = RAGPretrainedModel.from_index(path, verbose=0)

    def reader(_: int) -> None:
        ids = {r["document_id"][0] for r in other.search(docs[3], k=5)}
        assert len(ids) == 1, ids  # one index's documents, never a mix

    with repeating_in_threads(reader, 2):
        for n in range(6):
            rag.index(docs[:10], document_ids=sets[(n + 1) % 2], index_name="rebuilt")
    # two objects adding to one index at once: serialised, nothing fails
    third = RAGPretrainedModel.from_index(path, verbose=0)
    run_in_threads(lambda model, j: model.add_to_index([docs[10 + 10 * j + i] for i in range(10)],
                                                       new_document_ids=[f"w{j}-{i}" for i in range(10)]),
                   [(other, 0), (third, 1)])
    h = third._handle(None)
    h.refresh()  # the other object's add
    assert len(h.engine) == 30 and h.engine.ids.tolist() == h.store.all_passage_ids().tolist()
    # a handle opened before a rebuild writes nothing to the new index, and says so
    stale = other._handle(None)
    rag.index(docs[:5], document_ids=[f"c{i}" for i in range(5)], index_name="rebuilt")
    with pytest.raises(plaidx.errors.StaleIndexError, match="was rebuilt"):
        stale.delete(["c0"])
    assert other.delete_from_index(["c0"]) == 1  # through the RAG object: it opens the new index


def test_index_will_not_replace_a_folder_that_is_not_an_index(rag):
    mine = rag.index_root / "notes"
    mine.mkdir(parents=True)
    (mine / "thesis.txt").write_text("years of work", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not a plaidx index"):
        rag.index(corpus(3, seed=28), index_name="notes")
    assert (mine / "thesis.txt").read_text(encoding="utf-8") == "years of work"
    (mine / "thesis.txt").unlink()
    rag.index(corpus(3, seed=28), index_name="notes")  # an empty folder is fine


def test_concurrent_adds_with_automatic_integer_ids_get_distinct_ids(rag):
    docs = corpus(24, seed=29)
    rag.index(docs[:4], document_ids=[0, 1, 2, 3], index_name="auto")
    got = run_in_threads(lambda j: rag.add_to_index(docs[4 + 5 * j: 9 + 5 * j]), [(j,) for j in range(4)])
    assert sorted(i for ids in got for i in ids) == list(range(4, 24))
