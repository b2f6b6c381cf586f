"""Qdrant export and import (qdrant-client local mode): MAX_SIM over the export equals exact search; ids,
metadata and text survive the round trip."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from encoder_fixtures import WORDS, make_tiny_checkpoint

from plaidx import cli
from plaidx.interop.colbert import convert_colbert

pytest.importorskip("qdrant_client")

from plaidx.interop import qdrant as qd  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "interop"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return convert_colbert(FIXTURES / "colbert_d128_b2" / "index", tmp_path_factory.mktemp("q") / "engine")


@pytest.fixture(scope="module")
def queries():
    return np.load(FIXTURES / "colbert_d128_b2" / "peer.npz")["queries"]


def _collection_bytes(stats):
    return stats["vector_bytes"]


@pytest.mark.parametrize("datatype", ["float32", "float16"])
def test_qdrant_maxsim_top10_equals_exact_search(engine, queries, datatype):
    client = qd.connect(path=":memory:")
    stats = qd.export_index(engine, client, "c", datatype=datatype, batch_tokens=300)
    assert stats["points"] == len(engine) and stats["tokens"] == sum(
        engine.reconstruct(int(i)).shape[0] for i in engine.ids)
    assert stats["batches"] >= stats["tokens"] // 300  # batched by token count
    info = client.get_collection("c")
    params = info.config.params.vectors["colbert"]
    assert params.multivector_config.comparator.value == "max_sim" and params.distance.value == "Dot"
    assert params.hnsw_config.m == 0
    scores, ids = engine.search(queries, k=10, exact=True)
    tol = 1e-4 if datatype == "float32" else 2e-2  # float16 rounding of 32 query-token maxima
    for q, s_row, i_row in zip(queries, scores, ids):
        hits = client.query_points("c", query=q.tolist(), using="colbert", limit=10).points
        q_ids = np.array([h.id for h in hits])
        q_scores = np.array([h.score for h in hits])
        assert np.allclose(q_scores, s_row, atol=tol)
        clear = np.abs(s_row - s_row[-1]) > 2 * tol  # ties at the cut aside
        assert set(i_row[clear].tolist()) <= set(q_ids.tolist())
        if datatype == "float32":
            assert np.array_equal(q_ids[clear], i_row[clear])
    assert 5 not in [p.id for p in client.scroll("c", limit=100)[0]]  # a deleted passage is not exported


def test_export_refuses_an_existing_collection_unless_overwrite(engine):
    client = qd.connect(path=":memory:")
    qd.export_index(engine, client, "c")
    with pytest.raises(FileExistsError, match="overwrite"):
        qd.export_index(engine, client, "c")
    assert qd.export_index(engine, client, "c", overwrite=True)["points"] == len(engine)
    with pytest.raises(ValueError, match="datatype"):
        qd.export_index(engine, client, "d", datatype="int8")
    assert client.get_collection("c").config.metadata["plaidx"]["complete"] is True
    calls = []

    def failing(ids):  # an export that fails after its first batch leaves no collection that passes for the index
        calls.append(len(ids))
        if len(calls) > 1:
            raise RuntimeError("payload service down")
        return [{"passage_id": int(i)} for i in ids]

    with pytest.raises(RuntimeError, match="payload service down"):
        qd.export_index(engine, client, "e", payloads=failing, batch_tokens=200)
    assert len(calls) == 2 and not client.collection_exists("e")
    meta = client.get_collection("c").config.metadata
    client.update_collection("c", metadata={"plaidx": {**meta["plaidx"], "complete": False}})  # as a kill leaves it
    with pytest.raises(ValueError, match="export that did not finish"):
        qd.read_collection(client, "c")
    with pytest.raises(ValueError, match="exactly one"):
        qd.connect()


def test_import_keeps_ids_and_builds_a_searchable_index(engine, queries, tmp_path):
    client = qd.connect(path=str(tmp_path / "qdrant"))
    qd.export_index(engine, client, "c", datatype="float32")
    back, ids, payloads, meta = qd.import_collection(client, "c", tmp_path / "back", nbits=4)
    assert np.array_equal(back.ids, engine.ids) and np.array_equal(ids, engine.ids)
    assert [p["passage_id"] for p in payloads] == engine.ids.tolist()
    assert meta["plaidx"]["dim"] == 128 and back.metadata["source"]["format"] == "qdrant"
    assert back.metadata["source"]["exported_from"]["format"] == "colbert-ai"
    _, exact = engine.search(queries, k=10, exact=True)
    _, again = back.search(queries, k=10, exact=True)  # re-compressed at 4 bits from the exported vectors
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, again)])
    assert overlap >= 0.8  # observed 0.93
    with pytest.raises(KeyError, match="does not exist"):
        qd.import_collection(client, "missing", tmp_path / "x")


def test_import_refuses_uuid_ids_and_wrong_vectors(tmp_path):
    from qdrant_client import models

    client = qd.connect(path=":memory:")
    client.create_collection("u", vectors_config={"v": models.VectorParams(
        size=8, distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM))})
    client.upsert("u", points=[models.PointStruct(id="6f1c1a3e-8a51-4a43-9a55-7f7f0a7d1c11",
                                                  vector={"v": [[1.0] * 8]})])
    with pytest.raises(ValueError, match="UUID"):
        qd.import_collection(client, "u", tmp_path / "a")
    client.create_collection("flat", vectors_config=models.VectorParams(size=8, distance=models.Distance.DOT))
    with pytest.raises(ValueError, match=r"has no multivector \(MAX_SIM\) vectors"):
        qd.import_collection(client, "flat", tmp_path / "b")
    client.create_collection("big", vectors_config={"v": models.VectorParams(
        size=8, distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM))})
    client.upsert("big", points=[models.PointStruct(id=(1 << 64) - 1, vector={"v": [[1.0] * 8]})])
    with pytest.raises(ValueError, match=r"above the largest plaidx document id"):
        qd.import_collection(client, "big", tmp_path / "c")


def test_cli_round_trip_of_a_rag_folder_keeps_ids_text_and_metadata(tmp_path, capsys):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", seed=3)
    rng = np.random.default_rng(3)
    rows = [{"_id": f"doc-{i}", "text": " ".join(rng.choice(WORDS, size=int(rng.integers(4, 30)))),
             "lang": "en", "n": i} for i in range(30)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    src = tmp_path / "indexes" / "src"
    assert run(capsys, "index", corpus, src, "--model", ckpt, "--quiet")[0] == 0
    qpath = tmp_path / "qdrant"
    code, out, err = run(capsys, "export", "qdrant", src, "--collection", "docs", "--path", qpath, "-q")
    assert code == 0, err
    assert "exported 30 points" in out and "x)" in out  # the size comparison
    code, out, err = run(capsys, "import", "qdrant", tmp_path / "indexes" / "back", "--collection", "docs",
                         "--path", qpath, "-q")
    assert code == 0, err
    assert "RAG folder" in out

    def rows_of(folder):
        con = sqlite3.connect(folder / "docstore.sqlite")
        got = con.execute("SELECT p.passage_id, p.document_id, p.content, d.metadata FROM passages p JOIN documents "
                          "d ON d.document_id = p.document_id ORDER BY p.passage_id").fetchall()
        con.close()
        return [(pid, doc, text, json.loads(meta) if meta else None) for pid, doc, text, meta in got]

    assert rows_of(tmp_path / "indexes" / "back") == rows_of(src)
    assert {r[1] for r in rows_of(src)} == {r["_id"] for r in rows}
    answers = []
    for folder in (tmp_path / "indexes" / "back", src):  # same model and vectors: the same best documents
        code, out, err = run(capsys, "search", folder, rows[4]["text"], "-k", "3", "--json")
        assert code == 0, err
        answers.append([(h["document_id"], h["content"], h.get("document_metadata")) for h in json.loads(out)[0]["results"]])
    assert answers[0][0] == answers[1][0] and answers[0][0][0] == "doc-4"
    code, _, err = run(capsys, "export", "qdrant", src, "--collection", "docs", "--path", qpath, "-q")
    assert code == 1 and "overwrite" in err
    code, _, err = run(capsys, "export", "qdrant", src, "--collection", "docs")
    assert code == 2 and "--path" in err
