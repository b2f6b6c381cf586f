"""RAGPretrainedModel and IndexFolder over a sharded engine: texts, ids and metadata, search, add and delete."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from encoder_fixtures import WORDS, make_tiny_checkpoint

from plaidx import RAGPretrainedModel
from plaidx.distributed import ShardedIndex, reshard
from plaidx.rag.folder import ENGINE_DIR, IndexFolder

VOCAB = list(dict.fromkeys(WORDS))
pytestmark = pytest.mark.filterwarnings("ignore:added documents drift")


def corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=int(rng.integers(4, 10)))) for _ in range(n)]


def test_a_rag_index_with_a_sharded_engine_searches_adds_and_deletes(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", query_length=16, document_length=32)
    rag = RAGPretrainedModel.from_pretrained(str(ckpt), index_root=tmp_path / "indexes", verbose=0)
    docs = corpus(28, seed=4)
    ids = [f"d{i}" for i in range(24)]
    path = rag.index(docs[:24], document_ids=ids, document_metadatas=[{"n": i} for i in range(24)],
                     index_name="sh")
    before = [rag.search(docs[i], k=5) for i in range(0, 24, 3)]
    engine = os.path.join(path, ENGINE_DIR)
    os.rename(engine, engine + ".src")
    reshard(engine + ".src", engine, 3)  # the same passages, split byte for byte over three shards
    shutil.rmtree(engine + ".src")

    sharded = RAGPretrainedModel.from_index(path, verbose=0)
    folder = sharded._handle(None)
    assert isinstance(folder.engine, ShardedIndex) and folder.engine.n_shards == 3
    after = [sharded.search(docs[i], k=5) for i in range(0, 24, 3)]
    for b, a in zip(before, after):
        assert [(r["document_id"], r["content"], r["document_metadata"]) for r in a] == \
               [(r["document_id"], r["content"], r["document_metadata"]) for r in b]
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)

    assert sharded.add_to_index(docs[24:], new_document_ids=["n0", "n1", "n2", "n3"],
                                new_document_metadatas=[{"new": k} for k in range(4)]) == ["n0", "n1", "n2", "n3"]
    assert folder.engine.generation == 2 and len(folder.engine) == 28
    found = sharded.search(docs[25], k=28)
    assert {r["document_id"] for r in found} >= {"n1"} and len(found) == 28
    n1 = next(r for r in found if r["document_id"] == "n1")
    assert n1["document_metadata"] == {"new": 1} and n1["content"] == docs[25]
    assert sharded.delete_from_index(["d0", "n1"]) == 2
    rest = sharded.search(docs[0], k=28)
    assert len(rest) == 26 and {r["document_id"] for r in rest}.isdisjoint({"d0", "n1"})
    with IndexFolder(path) as again:
        assert again.verify() == [] and again.describe()["passages"] == 26

    # `plaidx serve` over the sharded index: the same HTTP API and the same hits
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from plaidx.server.app import create_app

    with TestClient(create_app({"sh": path}, model=sharded.model)) as client:
        listed = client.get("/v1/indexes").json()["data"]
        assert [(x["name"], x["documents"], x["generation"]) for x in listed] == [("sh", 26, 3)]
        r = client.post("/v1/search", json={"index": "sh", "query": docs[6], "k": 4})
        assert r.status_code == 200, r.text[:300]
        want = sharded.search(docs[6], k=4)
        got = r.json()["results"]
        assert [(g["document_id"], g["content"], g["document_metadata"]) for g in got] == \
               [(w["document_id"], w["content"], w["document_metadata"]) for w in want]


def test_cli_index_with_shards_then_search_and_verify(tmp_path, capsys):
    import json

    from plaidx import cli

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", query_length=16, document_length=32)
    texts = corpus(30, seed=9)
    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(json.dumps({"_id": f"d{i}", "text": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    path = tmp_path / "idx"
    assert cli.main(["index", str(src), str(path), "--model", str(ckpt), "--shards", "3", "--quiet"]) == 0
    assert not any(p.name.startswith(".engine") for p in path.iterdir())  # no staging or old folder left
    rag = RAGPretrainedModel.from_index(path, verbose=0)
    engine = rag._handle(None).engine
    assert isinstance(engine, ShardedIndex) and engine.n_shards == 3 and len(engine) == 30
    hits = rag.search(texts[7], k=30)
    assert len(hits) == 30 and {h["document_id"] for h in hits} == {f"d{i}" for i in range(30)}
    assert next(h for h in hits if h["document_id"] == "d7")["document_metadata"] == {"n": 7}
    capsys.readouterr()
    assert cli.main(["search", str(path), texts[7], "-k", "3"]) == 0
    assert "d" in capsys.readouterr().out
    assert cli.main(["info", str(path), "--verify"]) == 0


def test_an_overwrite_with_shards_replaces_the_folder_in_one_step_and_open_handles_follow(tmp_path):
    """The shards are made before the folder goes into place: a handle opened on the old index answers from it
    or (StaleIndexError, then FolderCache.read) from the whole new one, never from a half-built folder."""
    from plaidx.errors import StaleIndexError
    from plaidx.rag.folder import FolderCache

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", query_length=16, document_length=32)
    rag = RAGPretrainedModel.from_pretrained(str(ckpt), index_root=tmp_path / "indexes", verbose=0)
    texts = corpus(30, seed=10)
    path = rag.index(texts[:20], document_ids=[f"a{i}" for i in range(20)], index_name="sh", shards=2)
    cache = FolderCache()
    old = cache.get(path)
    q = rag.model.encode_queries([texts[3]])
    assert {h.document_id[0] for h in old.search(q, 5)[0]} == {"a"}
    with pytest.raises(ValueError, match="shards=40: the collection makes 20 passages"):
        rag.index(texts[:20], index_name="sh", shards=40)  # refused before any work: the old index stays
    assert {h.document_id[0] for h in cache.read(path, lambda f: f.search(q, 5))[0]} == {"a"}
    rag.index(texts[10:], document_ids=[f"b{i}" for i in range(20)], index_name="sh", shards=2)
    with pytest.raises(StaleIndexError, match="search again"):
        old.search(q, 5)
    new = cache.read(path, lambda f: f.search(q, 5))
    assert {h.document_id[0] for h in new[0]} == {"b"}
    assert isinstance(cache.get(path).engine, ShardedIndex) and cache.get(path).engine.n_shards == 2
    with pytest.raises(ValueError, match="shards must be a positive integer"):
        rag.index(texts, index_name="x", shards=0)
