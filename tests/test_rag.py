"""RAGPretrainedModel: RAGatouille's flows (index, search, add, delete, rerank, encode) on tiny checkpoints.

The tiny models are random, so expected results come from oracles: exhaustive MaxSim over the index's
own (decompressed) passages for searches, over the encoder's float embeddings for rerank and encode.
Queries are documents' own texts, kept where the oracle ranks that document first by a margin, so "the
right document comes first" is a real assertion about contents, ids, metadata and ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from encoder_fixtures import WORDS, make_tiny_checkpoint
from threads import run_in_threads

import plaidx
from plaidx import RAGPretrainedModel
from plaidx.engine.scoring import maxsim
from plaidx.rag.folder import CONFIG_FILE, DOCSTORE_FILE, ENGINE_DIR

VOCAB = list(dict.fromkeys(WORDS))
pytestmark = pytest.mark.filterwarnings("ignore:added documents drift")  # tiny indexes drift at once
EPS = 1e-3  # float differences between the kernels and numpy; ties within EPS may swap places


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "stanford", query_length=16, document_length=32)


@pytest.fixture()
def rag(checkpoint, tmp_path):
    return RAGPretrainedModel.from_pretrained(str(checkpoint), index_root=tmp_path / "indexes", verbose=0)


def corpus(n: int = 30, seed: int = 0, lo: int = 4, hi: int = 10) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=int(rng.integers(lo, hi)))) for _ in range(n)]


def float_oracle(rag: RAGPretrainedModel, queries: list[str], docs: list[str]) -> np.ndarray:
    """Exact MaxSim (nq, n_docs) of the encoder's float embeddings (what rerank and encode compute)."""
    enc = rag._fit_encoder(docs)
    return np.atleast_2d(maxsim(rag.model.encode_queries(queries), enc.encode_documents(docs)))


def index_oracle(rag: RAGPretrainedModel, queries: list[str], index_name=None) -> tuple[np.ndarray, list[int]]:
    """Exhaustive MaxSim (nq, n_live) over the index's own (decompressed) passages, and their passage ids."""
    engine = rag._handle(index_name).engine
    pids = engine.ids.tolist()
    return np.atleast_2d(maxsim(rag.model.encode_queries(queries), [engine.reconstruct(p) for p in pids])), pids


def assert_ranked(results, row, pids, k):
    """Results are the k best passages of the oracle row, best first, ranks 1..k (ties within EPS may swap)."""
    best = np.sort(row)[::-1][:k]
    assert len(results) == min(k, len(pids))
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    assert len({r["passage_id"] for r in results}) == len(results)
    for r, res in enumerate(results):
        j = pids.index(res["passage_id"])
        assert abs(row[j] - best[r]) <= EPS, (r, res, row[j], best[r])
        assert abs(res["score"] - row[j]) <= EPS


def self_queries(S: np.ndarray, n: int = 6) -> list[int]:
    """Rows i whose own column is the clear best (query i is the text of passage i)."""
    top = -np.sort(-S, axis=1)
    ok = [i for i in range(S.shape[0]) if S[i].argmax() == i and top[i, 0] - top[i, 1] > 0.05]
    assert len(ok) >= n, "the tiny model should retrieve most documents from their own text"
    return ok[:n]


# ---------------------------------------------------------------------------------------------- flows
def test_index_and_search_return_the_right_passages(rag, tmp_path):
    docs = corpus()
    ids = [f"doc-{i}" for i in range(len(docs))]
    metas = [{"n": i, "parity": "odd" if i % 2 else "even"} for i in range(len(docs))]
    path = rag.index(collection=docs, document_ids=ids, document_metadatas=metas, index_name="my_index")
    assert Path(path) == tmp_path / "indexes" / "my_index"
    assert {p.name for p in Path(path).iterdir()} >= {ENGINE_DIR, DOCSTORE_FILE, CONFIG_FILE}

    S, pids = index_oracle(rag, docs)
    assert pids == list(range(len(docs)))
    for i in self_queries(S):
        results = rag.search(docs[i], k=5)
        assert results[0] == {"content": docs[i], "score": pytest.approx(S[i, i], abs=EPS), "rank": 1,
                              "document_id": f"doc-{i}", "passage_id": i, "document_metadata": metas[i]}
        assert_ranked(results, S[i], pids, 5)
        for r in results:
            j = r["passage_id"]
            assert (r["document_id"], r["content"], r["document_metadata"]) == (ids[j], docs[j], metas[j])
        # the PLAID path with every cell probed and every candidate kept equals exhaustive search (with the
        # float last stage; the default int8 one gives the scores to int8 rounding)
        full = dict(nprobe=10_000, centroid_score_threshold=-1e9, ndocs=1000)
        assert rag.search(docs[i], k=5, exact_scores="float32", **full) == results
        assert [r["score"] for r in rag.search(docs[i], k=5, **full)] == pytest.approx(
            [r["score"] for r in results], abs=0.05)

    q = self_queries(S, 3)
    many = rag.search([docs[i] for i in q], index_name="my_index", k=3, zero_index_ranks=True)
    assert len(many) == 3 and all(len(res) == 3 for res in many)
    assert [res[0]["document_id"] for res in many] == [f"doc-{i}" for i in q]
    assert [r["rank"] for r in many[0]] == [0, 1, 2]
    fast = rag.search(docs[q[0]], k=3, force_fast=True)  # PLAID with small parameters
    assert len(fast) == 3 and all(r["document_id"] == ids[r["passage_id"]] for r in fast)


def test_k_larger_than_collection_returns_every_passage(rag):
    docs = corpus(8)
    rag.index(docs, index_name="small")
    results = rag.search(docs[0], k=50)
    assert sorted(r["content"] for r in results) == sorted(docs)
    assert [r["rank"] for r in results] == list(range(1, 9))
    S, pids = index_oracle(rag, [docs[0]])
    assert_ranked(results, S[0], pids, 50)
    assert "document_metadata" not in results[0]  # no metadata given
    assert all(len(r["document_id"]) == 36 for r in results)  # generated uuid4 ids


def test_add_and_delete_use_the_engine_updates(rag):
    docs = corpus(24, seed=1)
    rag.index(docs[:20], document_ids=[f"d{i}" for i in range(20)], index_name="live")
    h = rag._handle("live")
    centroids = np.array(h.engine._snap.codec.centroids)
    added = rag.add_to_index(docs[20:], new_document_ids=["n0", "n1", "n2", "n3"],
                             new_document_metadatas=[{"new": k} for k in range(4)])
    assert added == ["n0", "n1", "n2", "n3"]
    assert np.array_equal(h.engine._snap.codec.centroids, centroids)  # compressed in place, no rebuild
    assert len(h.engine) == 24 and h.engine.ids.tolist() == list(range(24))
    S, pids = index_oracle(rag, docs)
    new = [i for i in range(20, 24) if S[i].argmax() == i]
    assert new, "a new document should be found from its own text"
    for i in new:
        res = rag.search(docs[i], k=3)
        assert res[0]["document_id"] == f"n{i - 20}" and res[0]["document_metadata"] == {"new": i - 20}
        assert res[0]["passage_id"] == i and res[0]["content"] == docs[i]
        assert_ranked(res, S[i], pids, 3)

    assert rag.delete_from_index(["d3", "n1"]) == 2
    assert h.engine.info()["deleted_pending_compaction"] == 2 and len(h.engine) == 22
    everything = rag.search(docs[3], k=100)
    assert len(everything) == 22
    assert {r["document_id"] for r in everything}.isdisjoint({"d3", "n1"})
    S, pids = index_oracle(rag, [docs[3]])
    assert 3 not in pids and 21 not in pids
    assert_ranked(everything, S[0], pids, 100)
    assert rag.delete_from_index("d4") == 1  # a single id, as RAGatouille allows


def test_ids_and_metadata_survive_reopening(rag, checkpoint):
    docs = corpus(12, seed=2)
    ids = list(range(100, 112))
    path = rag.index(docs, document_ids=ids, document_metadatas=[{"k": [i, "x"]} for i in ids], index_name="ints")
    before = rag.search(docs[:3], k=4)
    del rag

    again = RAGPretrainedModel.from_index(path, verbose=0)
    assert again.index_name == "ints" and again.model.config_dict() == again._handle(None).config["model"]
    after = again.search(docs[:3], k=4)
    assert [[(r["document_id"], r["content"], r["document_metadata"], r["rank"]) for r in row] for row in after] == \
        [[(r["document_id"], r["content"], r["document_metadata"], r["rank"]) for r in row] for row in before]
    assert all(isinstance(r["document_id"], int) for row in after for r in row)
    assert [r["score"] for r in after[0]] == pytest.approx([r["score"] for r in before[0]], abs=1e-4)

    new_ids = again.add_to_index(["hello world colbert"])  # ids continue after the largest int id
    assert new_ids == [112]
    with pytest.raises(ValueError, match="stores int document ids"):
        again.add_to_index(["late interaction"], new_document_ids=["a-string"])


def test_filtered_search_returns_only_allowed_documents(rag):
    docs = corpus(40, seed=3)
    ids = [f"d{i}" for i in range(40)]
    rag.index(docs, document_ids=ids, index_name="filtered")
    allowed = ["d1", "d5", "d9", "d22", "d31"]
    for q in (docs[0], docs[22]):
        res = rag.search(q, k=3, doc_ids=allowed)
        assert len(res) == 3 and {r["document_id"] for r in res} <= set(allowed)
        S, pids = index_oracle(rag, [q])
        keep = [pids.index(ids.index(a)) for a in allowed]
        assert_ranked(res, S[0][keep], [pids[j] for j in keep], 3)
        plaid = rag.search(q, k=3, doc_ids=allowed, exact=False)  # filtered inside PLAID too
        assert len(plaid) == 3 and {r["document_id"] for r in plaid} <= set(allowed)
        res = rag.search(q, k=10, doc_ids=allowed)
        assert sorted(r["document_id"] for r in res) == sorted(allowed)
    assert [r["document_id"] for r in rag.search(docs[0], k=5, doc_ids="d7")] == ["d7"]
    with pytest.raises(KeyError, match="unknown document ids"):
        rag.search(docs[0], doc_ids=["d1", "nope"])
    # one list per query: each query as searched alone with its list
    per_query = [["d1", "d5"], ["d9", "d22", "d31"]]
    both = rag.search([docs[0], docs[22]], k=2, doc_ids=per_query)
    assert both == [rag.search(docs[0], k=2, doc_ids=per_query[0]), rag.search(docs[22], k=2, doc_ids=per_query[1])]
    assert rag.search(docs[0], k=2, doc_ids=[["d1", "d5"]]) == both[0]
    with pytest.raises(ValueError, match="1 list of ids for 2 queries"):
        rag.search([docs[0], docs[22]], doc_ids=[["d1"]])
    with pytest.raises(TypeError, match="mixes document ids and lists"):
        rag.search([docs[0], docs[22]], doc_ids=["d1", ["d5"]])
    rag.delete_from_index(["d5"])
    assert {r["document_id"] for r in rag.search(docs[0], k=10, doc_ids=["d1", "d9"])} == {"d1", "d9"}


def test_metadata_filters_select_the_documents_whose_metadata_matches(rag):
    """where= keeps the documents whose JSON metadata matches: equality by kind, comparisons, membership, list
    contents, nested fields, missing fields and $and/$or/$not; with doc_ids both hold. Values are bound parameters
    (quotes in a value match nothing); a field name is a quoted literal (a single quote in it is a plain character,
    a double quote or a control character is refused). Indexing the fields (index_metadata) changes no answer, and
    SQLite then looks the values up in the index."""
    docs = corpus(8, seed=9)
    metas = [{"lang": "en", "year": 2019, "tags": ["a", "b"], "src": {"name": "wiki"}, "ok": True},
             {"lang": "de", "year": 2021, "tags": ["b"], "src": {"name": "news"}, "ok": False},
             {"lang": "en", "year": 2023.5, "tags": [], "ok": 1},
             {"lang": "fr", "year": "2021", "src": {"name": "wiki"}},
             {"lang": "en", "year": None, "tags": "a"},
             None, {"lang": "' OR 1=1 --"}, {"lang": "de", "year": 2025, "tags": ["a"], "it's": "x"}]
    ids = [f"d{i}" for i in range(8)]
    rag.index(docs, document_ids=ids, document_metadatas=metas, index_name="meta")

    def found(where, **kw):
        return sorted(r["document_id"] for r in rag.search(docs[0], k=8, where=where, **kw))

    cases = [({"lang": "en"}, [0, 2, 4]), ({"year": 2021}, [1]), ({"year": "2021"}, [3]),
             ({"year": {"$gte": 2021}}, [1, 2, 7]), ({"year": {"$gt": 2021, "$lt": 2025}}, [2]),
             ({"year": None}, [4]), ({"ok": True}, [0]), ({"ok": 1}, [2]), ({"ok": {"$ne": True}}, [1, 2, 3, 4, 5, 6, 7]),
             ({"lang": {"$in": ["de", "fr"]}}, [1, 3, 7]), ({"lang": {"$nin": ["en", "de"]}}, [3, 5, 6]),
             ({"tags": {"$contains": "a"}}, [0, 7]), ({"src": {"$contains": "wiki"}}, []),  # list fields only
             ({"src.name": "wiki"}, [0, 3]), ({"tags": {"$exists": False}}, [3, 5, 6]), ({"lang": "en", "year": {"$lt": 2020}}, [0]),
             ({"$or": [{"lang": "fr"}, {"src.name": "news"}]}, [1, 3]), ({"$not": {"lang": "en"}}, [1, 3, 5, 6, 7]),
             ({"lang": "' OR 1=1 --"}, [6]), ({"lang": "nobody"}, []), ({"lang": {"$in": []}}, []),
             ({"it's": "x"}, [7]), ({"it's": {"$in": ["x", "y"]}}, [7]), ({"x') OR 1=1 --": 1}, []),
             ({"x' OR '1'='1": {"$exists": False}}, list(range(8)))]
    for where, want in cases:
        assert found(where) == sorted(f"d{i}" for i in want), where
    fields = ["lang", "year", "src.name", "it's", "ok"]
    assert rag.index_metadata(fields) == fields == rag.index_metadata(["lang"])  # a second time: nothing new
    from plaidx.rag.where import where_sql

    store = rag._handle("meta").store
    for where in ({"lang": "en"}, {"year": {"$gte": 2021}}, {"src.name": "wiki"}, {"lang": {"$in": ["de", "fr"]}},
                  {"it's": "x"}):
        cond, params = where_sql(where)
        plan = " ".join(r[-1] for r in store._con().execute(
            f"EXPLAIN QUERY PLAN SELECT document_id FROM documents WHERE {cond}", params))
        assert "USING INDEX metadata_" in plan, (where, plan)
    for where, want in cases:  # the same answers through the indexes
        assert found(where) == sorted(f"d{i}" for i in want), where
    rag.add_to_index([docs[0] + " again"], new_document_ids=["d8"], new_document_metadatas=[{"lang": "fr"}])
    assert found({"lang": "fr"}) == ["d3", "d8"]  # an added document is found through the index at once
    assert rag.index_metadata(["ok", "tags"], drop=True) == ["lang", "year", "src.name", "it's"]
    assert plaidx.rag.RAGPretrainedModel.from_index(rag.index_root / "meta")._handle("meta").describe()[
        "metadata_indexes"] == ["lang", "year", "src.name", "it's"]  # kept in the store, seen on reopening
    for bad, err, msg in [("lang", TypeError, "non-empty list"), ([], TypeError, "non-empty list"),
                          (["a\x00b"], ValueError, "control characters"), (['a"b'], ValueError, "double quotes")]:
        with pytest.raises(err, match=msg):
            rag.index_metadata(bad)
        with pytest.raises(err, match=msg):
            rag.index(docs[:2], index_name="meta_bad", metadata_indexes=bad)
    assert not (rag.index_root / "meta_bad").exists()
    with pytest.raises(TypeError, match="drop must be True or False"):
        rag.index_metadata(["lang"], drop="false")
    assert rag._handle("meta").describe()["metadata_indexes"] == ["lang", "year", "src.name", "it's"]
    assert found({"lang": "en"}, doc_ids=["d0", "d1", "d2"]) == ["d0", "d2"]
    assert found({"lang": "en"}, exact=False) == ["d0", "d2", "d4"]  # inside PLAID too
    both = rag.search([docs[0], docs[1]], k=8, where={"lang": "de"}, doc_ids=[["d1"], ["d0", "d7"]])
    assert [[r["document_id"] for r in row] for row in both] == [["d1"], ["d7"]]
    with pytest.raises(KeyError, match="unknown document ids"):
        rag.search(docs[0], where={"lang": "en"}, doc_ids=["d0", "nope"])
    h = rag._handle("meta")
    with pytest.raises(TypeError, match="or passages"):  # a resolved filter excludes the unresolved ones
        h.search(rag._encode_queries([docs[0]]), 3, passages=h.allowed(None, {"lang": "en"}), where={"lang": "en"})
    for bad, err, msg in [({"lang": {"$like": "e%"}}, ValueError, "unknown operator '\\$like'"),
                          ({"$where": "1"}, ValueError, "not a metadata field name"),
                          ({'lang") OR 1=1 --': "x"}, ValueError, "without double quotes"),
                          ({"a..b": 1}, ValueError, "none empty"), ("lang = 'en'", TypeError, "must be a dict"),
                          ({}, ValueError, "where is empty"), ({"lang": {}}, ValueError, "empty operator dict"),
                          ({"lang": {"$in": "en"}}, TypeError, "takes a list"), ({"year": {"$gt": True}}, TypeError,
                          "compares strings or numbers"), ({"lang": ["en"]}, TypeError, "a value must be a string"),
                          ({"$or": []}, TypeError, "non-empty list"), ({"x": {"$exists": 1}}, TypeError, "true or false"),
                          ({"la\x1bng": "en"}, ValueError, "control characters"),
                          ({"lang": "e\x00n"}, ValueError, "must not contain NUL"),
                          ({"la\udce9ng": "en"}, ValueError, "not valid Unicode text")]:
        with pytest.raises(err, match=msg):
            rag.search(docs[0], where=bad)
    for meta, msg in (({"src": "wiki\x00secret"}, "must not contain NUL"), ({"n": -(1 << 63) - 1}, "fit in 64 bits"),
                      ({"a": [{"b": 1 << 64}]}, "fit in 64 bits")):  # what where= could not compare as stored
        with pytest.raises(ValueError, match=msg):
            rag.add_to_index(["x"], new_document_ids=["bad"], new_document_metadatas=[meta])


def test_long_documents_are_split_into_passages_that_fit(rag):
    rng = np.random.default_rng(4)
    docs = [". ".join(" ".join(rng.choice(VOCAB, size=8)) for _ in range(12)) + "." for _ in range(3)] + ["short one"]
    rag.index(docs, document_ids=["a", "b", "c", "s"], document_metadatas=[{"d": x} for x in "abcs"],
              max_document_length=40, index_name="split")
    h = rag._handle("split")
    assert h.config["passages"]["max_document_length"] == 40 and h.config["model"]["document_length"] == 40
    enc = rag._doc_encoder(40)
    passages = [(d, c) for pid, (d, c, _m) in sorted(h.store.lookup(h.engine.ids.tolist()).items())]
    assert len(passages) > 10
    assert max(enc.count_tokens([c for _, c in passages], add_special_tokens=True)) <= 40
    for doc_id, text in zip("abcs", docs):
        mine = [c for d, c in passages if d == doc_id]
        assert all(c in text for c in mine)
        assert all(any(w in c for c in mine) for w in text.split())  # no word lost
    res = rag.search(passages[5][1], k=len(passages))
    assert {r["document_id"] for r in res} == set("abcs")
    assert all(r["document_metadata"] == {"d": r["document_id"]} for r in res)


def test_splitter_and_preprocessing_hooks(rag):
    def splitter(documents, document_ids, chunk_size=256):
        return [{"document_id": i, "content": part.strip()} for i, d in zip(document_ids, documents)
                for part in d.split("|")]

    def tag(passages):
        return [{"document_id": p["document_id"], "content": f"{p['content']} tagged"} for p in passages]

    rag.index(["cat sat | dog mat", "hello world"], document_ids=["x", "y"], document_splitter_fn=splitter,
              preprocessing_fn=[tag, lambda ps: [p["content"].upper() for p in ps]], index_name="hooks")
    h = rag._handle("hooks")
    assert sorted(h.store.lookup(range(3)).values()) == [
        ("x", "CAT SAT TAGGED", None), ("x", "DOG MAT TAGGED", None), ("y", "HELLO WORLD TAGGED", None)]
    seen = []

    def ragatouille_hook(documents, document_ids):  # RAGatouille calls its hooks with the ids too
        seen.append(list(document_ids))
        return documents

    rag.index(["cat sat", "dog mat"], document_ids=["p", "q"], preprocessing_fn=ragatouille_hook, index_name="two")
    assert seen == [["p", "q"]] and len(rag.search("cat", index_name="two", k=5)) == 2
    rag.index(["cat sat | dog mat"], index_name="nosplit", split_documents=False)
    assert [c for _d, c, _m in rag._handle("nosplit").store.lookup([0]).values()] == ["cat sat | dog mat"]
    with pytest.raises(ValueError, match="not in the collection"):
        rag.index(["a b"], document_ids=["x"], document_splitter_fn=lambda d, i, chunk_size: [
            {"document_id": "zzz", "content": "a"}], index_name="bad-hook")


# ---------------------------------------------------------------------------------------------- errors
def test_bad_input_is_refused_and_nothing_stored_is_lost(rag, tmp_path):
    docs = corpus(10, seed=5)
    rag.index(docs, document_ids=[f"d{i}" for i in range(10)], document_metadatas=[{"i": i} for i in range(10)],
              index_name="keep")
    h = rag._handle("keep")
    reference = rag.search(docs[2], k=10)

    def unchanged():
        assert len(h.engine) == 10 and h.store.count_documents() == 10 and h.store.count_passages() == 10
        assert rag.search(docs[2], index_name="keep", k=10) == reference

    with pytest.raises(FileNotFoundError, match=r"no index named 'nope'.*'keep'"):
        rag.search("cat", index_name="nope")
    with pytest.raises(ValueError, match="give at least one query"):
        rag.search([], index_name="keep")
    with pytest.raises(ValueError, match="unique"):
        rag.index(docs, document_ids=["same"] * 10, index_name="keep")
    unchanged()
    with pytest.raises(ValueError, match="same length"):
        rag.index(docs, document_metadatas=[{}] * 3, index_name="keep")
    with pytest.raises(ValueError, match="same length"):
        rag.index(docs, document_ids=["a"], index_name="keep")
    with pytest.raises(ValueError, match="same type"):
        rag.index(docs[:2], document_ids=["a", 1], index_name="keep")
    with pytest.raises(TypeError, match="JSON"):
        rag.index(docs[:1], document_metadatas=[{"x": object()}], index_name="keep")
    with pytest.raises(ValueError, match="empty"):
        rag.index([], index_name="keep")
    with pytest.raises(ValueError, match=r"collection\[1\] is empty"):
        rag.index(["a", "  "], index_name="keep")
    with pytest.raises(FileExistsError, match="already exists"):
        rag.index(docs, index_name="keep", overwrite_index=False)
    unchanged()
    assert rag.index(["other"], index_name="keep", overwrite_index="reuse") == str(tmp_path / "indexes" / "keep")
    unchanged()

    with pytest.raises(ValueError, match=r"already in the index: \['d3'\]"):
        rag.add_to_index(["new text", "more"], new_document_ids=["fresh", "d3"])
    with pytest.raises(ValueError, match="unique"):
        rag.add_to_index(["new text", "more"], new_document_ids=["z", "z"])
    with pytest.raises(ValueError, match="same length"):
        rag.add_to_index(["new text"], new_document_ids=["z"], new_document_metadatas=[{}, {}])
    with pytest.raises(KeyError, match=r"unknown document ids \['ghost'\]"):
        rag.delete_from_index(["d1", "ghost"])
    unchanged()

    # ids SQLite cannot look up again, text the tokenizer cannot read: refused before anything is stored
    with pytest.raises(ValueError, match="must not contain NUL"):
        rag.add_to_index(["new text"], new_document_ids=["a\x00b"])
    with pytest.raises(ValueError, match="not valid Unicode text"):
        rag.add_to_index(["new text"], new_document_ids=["caf\udce9"])
    with pytest.raises(ValueError, match=r"collection\[0\] is not valid Unicode text \(a lone surrogate"):
        rag.add_to_index(["caf\udce9 au lait"], new_document_ids=["x"])
    with pytest.raises(ValueError, match="not valid Unicode text"):
        rag.search("caf\udce9")
    with pytest.raises(TypeError, match="metadata keys must be strings"):
        rag.add_to_index(["new text"], new_document_ids=["y"], new_document_metadatas=[{1: "one"}])
    unchanged()
    with pytest.raises(ValueError, match="positive"):
        rag.search("cat", k=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        rag.search("cat", kk=3)
    with pytest.raises(TypeError, match="exact must be True or False or None"):
        rag.search("cat", exact="no")
    # where= values as numpy gives them are Python's numbers; ints past 64 bits are named
    assert rag.search(docs[2], k=3, where={"i": np.int64(2)})[0]["document_id"] == "d2"
    assert [r["document_id"] for r in rag.search(docs[2], k=10, where={"i": {"$gte": np.float32(8)}})] in \
        (["d8", "d9"], ["d9", "d8"])
    with pytest.raises(ValueError, match="beyond the 64-bit integers"):
        rag.search("cat", where={"i": 1 << 70})
    with pytest.raises(ValueError, match="index_name"):
        rag.index(docs, index_name="../escape")
    fresh = RAGPretrainedModel(rag.model, index_root=tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="no index selected"):
        fresh.search("cat")
    with pytest.raises(ValueError, match="no index selected"):
        fresh.add_to_index(["cat"])


def test_integer_ids_stay_within_64_bits(rag):
    rag.index(corpus(3, seed=9), document_ids=[1, 2, (1 << 63) - 1], index_name="ints")
    with pytest.raises(ValueError, match="fit in 64 bits"):
        rag.add_to_index(["x"], new_document_ids=[1 << 63])
    with pytest.raises(ValueError, match="new ones would pass 9223372036854775807: pass new_document_ids"):
        rag.add_to_index(["x"])
    assert rag.add_to_index(["x"], new_document_ids=[3]) == [3]


def test_overwrite_replaces_the_whole_index(rag):
    rag.index(corpus(10, seed=6), document_ids=[f"old{i}" for i in range(10)], index_name="ow")
    docs = corpus(5, seed=7)
    rag.index(docs, document_ids=[f"new{i}" for i in range(5)], index_name="ow")
    res = rag.search(docs[0], k=20)
    assert sorted(r["document_id"] for r in res) == [f"new{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------------- rerank
def test_rerank_orders_like_exact_maxsim(rag):
    docs = corpus(12, seed=8)
    S = float_oracle(rag, docs, docs)
    i = self_queries(S, 1)[0]
    res = rag.rerank(docs[i], docs, k=4)
    assert res[0] == {"content": docs[i], "score": pytest.approx(S[i, i], abs=1e-4), "rank": 1, "result_index": i}
    assert [r["result_index"] for r in res] == np.argsort(-S[i], kind="stable")[:4].tolist()
    assert [r["score"] for r in res] == pytest.approx(np.sort(S[i])[::-1][:4].tolist(), abs=1e-4)
    everything = rag.rerank(docs[i], docs[:3], k=10, zero_index_ranks=True)
    assert sorted(r["result_index"] for r in everything) == [0, 1, 2] and everything[0]["rank"] == 0
    two = rag.rerank([docs[0], docs[1]], docs, k=2)
    assert len(two) == 2 and all(len(r) == 2 for r in two)

    jina = plaidx.rerank(rag.model, docs[i], [{"text": d} for d in docs], top_n=3)
    assert [(r["index"], r["document"]["text"]) for r in jina] == [(r["result_index"], r["content"]) for r in res[:3]]
    assert [r["relevance_score"] for r in jina] == pytest.approx([r["score"] for r in res[:3]], abs=1e-5)
    assert len(plaidx.rerank(rag, docs[i], docs)) == len(docs)
    assert "document" not in plaidx.rerank(rag.model, docs[i], docs, return_documents=False)[0]
    with pytest.raises(ValueError, match="empty"):
        plaidx.rerank(rag.model, docs[i], [])
    with pytest.raises(TypeError, match="model must be"):
        plaidx.rerank(42, docs[i], docs)
    for one in ("kitten", {"text": "kitten"}):  # one document, not a list of characters or of keys
        with pytest.raises(TypeError, match="got a single (str|dict); wrap it in a list"):
            plaidx.rerank(rag.model, docs[i], one)
    with pytest.raises(TypeError, match="documents must be a list"):
        plaidx.rerank(rag.model, docs[i], None)
    with pytest.raises(ValueError, match=r"documents\[1\] is an object without a \"text\" field"):
        plaidx.rerank(rag.model, docs[i], [{"text": "a"}, {"content": "b"}])


def test_encode_and_search_encoded_docs(rag):
    docs = corpus(9, seed=9)
    rag.encode(docs[:6], document_metadatas=[{"m": i} for i in range(6)], verbose=False)
    rag.encode(docs[6:], verbose=False)
    S = float_oracle(rag, docs, docs)
    i = self_queries(S, 1)[0]
    res = rag.search_encoded_docs(docs[i], k=3)
    assert res[0]["content"] == docs[i] and res[0]["result_index"] == i and res[0]["rank"] == 1
    assert res[0]["document_metadata"] == ({"m": i} if i < 6 else None)
    assert [r["result_index"] for r in res] == np.argsort(-S[i], kind="stable")[:3].tolist()
    assert len(rag.search_encoded_docs([docs[0], docs[1]], k=2)) == 2
    for call in (lambda: rag.rerank("  ", docs), lambda: rag.search_encoded_docs("")):
        with pytest.raises(ValueError, match="query is empty"):
            call()
    rag.clear_encoded_docs(force=True)
    with pytest.raises(ValueError, match="call encode"):
        rag.search_encoded_docs(docs[0])
    with pytest.raises(TypeError, match="document_metadatas must be a list of dicts"):
        rag.encode(docs[:1], document_metadatas={"src": "web"})


# ---------------------------------------------------------------------------------------------- threads
def test_search_and_rerank_from_many_threads(rag):
    docs = corpus(30, seed=10)
    rag.index(docs, index_name="threads")
    queries = docs[:4]
    want_search = [rag.search(q, k=5) for q in queries]
    want_rerank = [rag.rerank(q, docs[:10], k=3) for q in queries]
    got = {}

    def worker(t: int) -> None:
        for j in range(len(queries)):
            q = (t + j) % len(queries)
            got[(t, j, "s")] = (q, rag.search(queries[q], k=5))
            got[(t, j, "r")] = (q, rag.rerank(queries[q], docs[:10], k=3))

    run_in_threads(worker, [(t,) for t in range(3)])
    for (_t, _j, kind), (q, res) in got.items():
        assert res == (want_search[q] if kind == "s" else want_rerank[q])


def test_langchain_retriever(rag):
    pytest.importorskip("langchain_core")
    docs = corpus(6, seed=11)
    rag.index(docs, document_metadatas=[{"i": i} for i in range(6)], index_name="lc")
    out = rag.as_langchain_retriever(k=2).invoke(docs[1])
    assert len(out) == 2
    assert [d.page_content for d in out] == [r["content"] for r in rag.search(docs[1], k=2)]
    assert out[0].metadata["rank"] == 1 and "document_id" in out[0].metadata
    hits = rag.search(docs[1], k=2)  # the document's metadata at the top level, as RAGatouille's retriever gives it
    assert [d.metadata["i"] for d in out] == [h["document_metadata"]["i"] for h in hits]
    from langchain_core.documents import Document

    compressor = rag.as_langchain_document_compressor(k=2)
    kept = compressor.compress_documents([Document(page_content=d, metadata={"i": i}) for i, d in enumerate(docs)],
                                         docs[1])
    best = rag.rerank(docs[1], docs, k=2)
    assert [(d.page_content, d.metadata["i"]) for d in kept] == [(r["content"], r["result_index"]) for r in best]
    assert kept[0].metadata["relevance_score"] == pytest.approx(best[0]["score"])
    one = compressor.compress_documents([Document(page_content=d, id=f"x{i}") for i, d in enumerate(docs)], docs[1],
                                        k=1)  # a per-call k, as RAGatouille's compressor takes it; ids kept
    assert len(one) == 1 and one[0].id == f"x{best[0]['result_index']}"


def test_second_handle_sees_the_first_ones_writes(rag, checkpoint, tmp_path):
    docs = corpus(12, seed=12)
    path = rag.index(docs[:10], document_ids=[f"d{i}" for i in range(10)], index_name="shared")
    other = RAGPretrainedModel.from_index(path, verbose=0)  # another process would behave the same
    assert len(other.search(docs[0], k=50)) == 10
    rag.add_to_index(docs[10:], new_document_ids=["d10", "d11"])
    rag.delete_from_index(["d3"])
    seen = {r["document_id"] for r in other.search(docs[0], k=50)}
    assert seen == {f"d{i}" for i in range(12)} - {"d3"}
    other.delete_from_index(["d10"])
    assert "d10" not in {r["document_id"] for r in rag.search(docs[10], k=50)}
    fresh = corpus(3, seed=13)
    rag.index(fresh, document_ids=["x", "y", "z"], index_name="shared")  # overwrite under the other's feet
    assert sorted(r["document_id"] for r in other.search(fresh[0], k=50)) == ["x", "y", "z"]
    assert {r["content"] for r in other.search(fresh[0], k=50)} == set(fresh)


def test_index_returns_an_absolute_path_that_opens_from_another_directory(checkpoint, tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    rag = RAGPretrainedModel.from_pretrained(str(checkpoint), index_root="rel/indexes", verbose=0)
    docs = corpus(12, seed=4)
    path = rag.index(docs, document_ids=[f"d{i}" for i in range(12)], index_name="moved")
    assert Path(path).is_absolute() and Path(path) == work / "rel" / "indexes" / "moved"
    want = rag.search(docs[3], k=3)
    monkeypatch.chdir(elsewhere)
    again = RAGPretrainedModel.from_index(path, verbose=0)
    got = again.search(docs[3], k=3)
    assert [(r["document_id"], r["passage_id"]) for r in got] == [(r["document_id"], r["passage_id"]) for r in want]
    assert again.index_root == work / "rel" / "indexes"


def test_index_reports_each_step_unless_quiet(checkpoint, tmp_path, capsys):
    """verbose=1 (the default) prints a line per step and an encoding bar on stderr; verbose=0 prints nothing."""
    docs, ids = corpus(20, seed=5), [f"d{i}" for i in range(20)]
    loud = RAGPretrainedModel.from_pretrained(str(checkpoint), index_root=tmp_path, verbose=1)
    loud.index(docs, document_ids=ids, index_name="loud")
    err = capsys.readouterr().err
    steps = ["indexing 20 documents as", "encoding passages", "encoded 20 passages", "k-means", "compressed ",
             "nbits 2 (default)", "writing the document store", "index 'loud' ready in"]
    at = [err.find(s) for s in steps]
    assert all(i >= 0 for i in at) and at == sorted(at), (at, err[-1500:])
    loud.add_to_index(["one more document about cats"], new_document_ids=["extra"])
    assert "encoded 1 passages" in capsys.readouterr().err
    quiet = RAGPretrainedModel.from_pretrained(str(checkpoint), index_root=tmp_path, verbose=0)
    quiet.index(docs, document_ids=ids, index_name="quiet")
    quiet.add_to_index(["one more document about cats"], new_document_ids=["extra"])
    assert capsys.readouterr().err == ""


def test_default_nbits_is_compressed_and_recorded(rag):
    import json

    docs = corpus(10, seed=6)
    path = Path(rag.index(docs, index_name="small"))
    cfg = json.loads((path / CONFIG_FILE).read_text())
    assert cfg["index"]["nbits"] == 2 and cfg["index"]["nbits_chosen"] == "default"
    assert plaidx.Index.open(path / ENGINE_DIR).nbits == 2  # no longer 8 bits for small collections
    path = Path(rag.index(docs, index_name="given", nbits=4))
    cfg = json.loads((path / CONFIG_FILE).read_text())
    assert cfg["index"]["nbits"] == 4 and cfg["index"]["nbits_chosen"] == "given"
    assert cfg["index"]["residual_codec"] == "scalar"  # a small collection: below the pq default's line
    path = Path(rag.index(docs, index_name="pq", residual_codec="pq"))
    cfg = json.loads((path / CONFIG_FILE).read_text())
    assert cfg["index"]["residual_codec"] == "pq" and plaidx.Index.open(path / ENGINE_DIR).residual_codec == "pq"
    assert len(rag.search(docs[0], k=3)) == 3
    with pytest.raises(ValueError, match="residual_codec must be None or one of"):
        rag.index(docs, index_name="bad", residual_codec="opq")
    with pytest.raises(ValueError, match="nbits in"):
        rag.index(docs, index_name="bad", nbits=8, residual_codec="pq")


def test_keep_vectors_builds_the_rerank_tier_and_added_passages_keep_theirs(rag):
    import json

    docs = corpus(40, seed=8)
    ids = [f"d{i}" for i in range(40)]
    path = Path(rag.index(docs[:30], document_ids=ids[:30], index_name="tier", keep_vectors="int8"))
    assert json.loads((path / CONFIG_FILE).read_text())["index"]["keep_vectors"] == "int8"
    assert rag._handle(None).engine.keep_vectors == "int8" and rag._handle(None).describe()["keep_vectors"] == "int8"
    rag.add_to_index(docs[30:], new_document_ids=ids[30:])
    engine = rag._handle(None).engine
    assert len(engine) == 40 and engine.keep_vectors == "int8" and engine.verify() == []
    # PLAID with the tier re-scores by the kept int8 vectors: the same top-3 as exact MaxSim over those vectors
    queries = [" ".join(d.split()[:4]) for d in docs[::4]]
    for tier in ({}, {"rerank": 64}):
        fast = rag.search(queries, k=3, exact=False, **tier)
        exact = rag.search(queries, k=3, exact=True)
        assert [[h["document_id"] for h in r] for r in fast] == [[h["document_id"] for h in r] for r in exact]
        np.testing.assert_allclose([[h["score"] for h in r] for r in fast], [[h["score"] for h in r] for r in exact],
                                   rtol=1e-5)
    truth = float_oracle(rag, queries, docs)  # the kept int8 vectors score as the float embeddings, within 1%
    np.testing.assert_allclose([[h["score"] for h in r] for r in exact],
                               [[truth[i, ids.index(h["document_id"])] for h in r] for i, r in enumerate(exact)],
                               rtol=0.01)
    with pytest.raises(ValueError, match="keep_vectors must be None"):
        rag.index(docs, index_name="bad", keep_vectors="int4")
    rag.index(docs, index_name="plain")
    with pytest.raises(ValueError, match="keep_vectors / --keep-vectors"):
        rag.search(queries[0], k=3, rerank=8)


def test_single_query_and_query_list_shapes(rag):
    """A string query gives one result list, a list of queries one list per query (RAGatouille's shapes);
    the engine underneath always answers (nq, k)."""
    docs = corpus(15, seed=7)
    rag.index(docs, index_name="shapes")
    one = rag.search(docs[0], k=4)
    assert isinstance(one, list) and len(one) == 4 and all(isinstance(r, dict) for r in one)
    listed = rag.search([docs[0]], k=4)
    assert len(listed) == 1 and listed[0] == one
    two = rag.search([docs[0], docs[1]], k=4)
    assert len(two) == 2 and two[0] == one
    scores, ids = rag._handle(None).engine.search(rag.model.encode_queries([docs[0]])[0], k=4)
    assert scores.shape == ids.shape == (1, 4)


def test_a_long_query_is_read_whole_as_ragatouille_reads_it(rag):
    """A query of more words than the model's query_length (16 here) is read at int(words * 1.35) tokens, at its own
    length when searched with short ones: search, score and the encoded memory agree with that encoding, and its
    scores are not those of the query cut at 16."""
    from plaidx.rag.queries import encode_queries, query_length_for

    docs = corpus(20, seed=4)
    rag.index(docs, document_ids=[f"d{i}" for i in range(20)], index_name="long")
    long_q = " ".join(corpus(1, seed=5, lo=30, hi=31)[0].split()[:30])
    n = query_length_for(rag.model, long_q)
    assert n == int(30 * 1.35) and query_length_for(rag.model, "cat") == 16
    assert query_length_for(rag.model, " ".join(["cat"] * 10**4)) == rag.model.max_length
    mixed = encode_queries(rag.model, ["cat", long_q])
    assert isinstance(mixed, list) and [m.shape[0] for m in mixed] == [16, n]
    whole = rag.model.encode_queries([long_q], query_length=n)[0]
    np.testing.assert_allclose(mixed[1], whole, atol=1e-6)
    cut = rag.model.encode_queries([long_q])[0]
    h = rag._handle("long")
    want = [(x.document_id, x.score) for x in h.search(whole[None], 5)[0]]
    got = rag.search(long_q, k=5)
    assert [r["document_id"] for r in got] == [d for d, _ in want]
    assert [r["score"] for r in got] == pytest.approx([sc for _, sc in want])
    both = rag.search(["cat", long_q], k=5)  # a short query beside it does not change how it is read
    assert [r["document_id"] for r in both[1]] == [r["document_id"] for r in got]
    assert got[0]["score"] != pytest.approx(h.search(cut[None], 5)[0][0].score)
    in_memory = rag._encode_documents(rag._fit_encoder(docs[:3]), docs[:3], 8)
    np.testing.assert_allclose(rag.score([long_q], docs[:3])[0], maxsim(whole, in_memory), rtol=1e-5)
