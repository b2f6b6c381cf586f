"""The HTTP server through a real uvicorn server on a loopback port: endpoints, errors, auth, schema, load."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from encoder_fixtures import WORDS, make_tiny_checkpoint  # noqa: E402
from synth import clustered_collection  # noqa: E402

import plaidx  # noqa: E402
from plaidx.server import BackgroundServer, Limits, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"


def _corpus(n: int = 80, seed: int = 0) -> tuple[list[str], list[str], list[dict]]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 40)))) for _ in range(n)]
    ids = [f"doc-{i}" for i in range(n)]
    metas = [{"n": i, "even": i % 2 == 0} for i in range(n)]
    return texts, ids, metas


QUERIES = ["the cat sat on the mat", "late interaction search", "how does a compressed index score tokens",
           "best match for a short query", "rotary position embedding layer", "dogs and cats",
           "multi vector retrieval with colbert", "what is max sim"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    ckpt = make_tiny_checkpoint(root, "stanford", seed=3)
    model = plaidx.ColBERT.from_pretrained(ckpt)
    rag = plaidx.RAGPretrainedModel(model, index_root=root / "indexes", verbose=0)
    texts, ids, metas = _corpus()
    rag.index(texts, document_ids=ids, document_metadatas=metas, index_name="docs", max_document_length=24,
              metadata_indexes=["n"])
    docs, queries, _ = clustered_collection(n_docs=200, dim=16, n_topics=12, mean_len=12, n_queries=12, q_len=8,
                                            seed=5)
    engine = plaidx.Index.build(root / "engine", docs, nbits=4, seed=0, keep_vectors="int8")
    return {"root": root, "ckpt": ckpt, "model": model, "rag": rag, "texts": texts, "ids": ids, "metas": metas,
            "rag_path": root / "indexes" / "docs", "engine": engine, "engine_queries": queries}


@pytest.fixture(scope="module")
def server(env):
    app = create_app({"docs": env["rag_path"], "vectors": env["engine"].path}, model=env["model"],
                     limits=Limits(max_body_bytes=256 << 10, max_inputs=32, max_input_chars=2000, max_tokens=2000,
                                   max_k=100))
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        client.app = app
        yield client


@pytest.fixture(scope="module")
def openapi(server):
    r = server.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


# ------------------------------------------------------------------------ a small OpenAPI validator
def _check(schema: dict, value, spec: dict, where: str = "$") -> None:
    """Validate ``value`` against the subset of JSON Schema FastAPI emits; AssertionError names the spot."""
    if "$ref" in schema:
        _check(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], value, spec, where)
        return
    if "anyOf" in schema or "oneOf" in schema:
        errors = []
        for sub in schema.get("anyOf", schema.get("oneOf")):
            try:
                _check(sub, value, spec, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: {value!r:.80} matches no alternative ({errors})")
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != const {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if kind in types:
        assert isinstance(value, types[kind]), f"{where}: expected {kind}, got {type(value).__name__}"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: expected integer, got {value!r}"
    elif kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: expected number"
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{where}: required field {name!r} missing"
        for name, v in value.items():
            if name in props:
                _check(props[name], v, spec, f"{where}.{name}")
            else:
                assert schema.get("additionalProperties", True) is not False, f"{where}: undeclared field {name!r}"
    if kind == "array":
        for i, item in enumerate(value[:50]):
            _check(schema.get("items", {}), item, spec, f"{where}[{i}]")


def _conforms(spec: dict, method: str, path: str, response) -> None:
    op = spec["paths"][path][method.lower()]
    declared = op["responses"]
    assert str(response.status_code) in declared, f"{method} {path}: status {response.status_code} not in the schema"
    schema = declared[str(response.status_code)]["content"]["application/json"]["schema"]
    _check(schema, response.json(), spec)


# ------------------------------------------------------------------------ endpoints with real payloads
def test_health_and_indexes(server, env, openapi):
    r = server.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["indexes"] == 2
    _conforms(openapi, "GET", "/health", r)
    r = server.get("/v1/indexes")
    assert r.status_code == 200
    _conforms(openapi, "GET", "/v1/indexes", r)
    by_name = {d["name"]: d for d in r.json()["data"]}
    eng = env["engine"]
    assert by_name["vectors"] == {"name": "vectors", "kind": "engine", "documents": len(eng), "passages": len(eng),
                                  "tokens": eng.n_tokens, "dim": 16, "nbits": 4, "nlist": eng.nlist,
                                  "generation": eng.generation, "model": None, "metadata_indexes": []}
    docs = by_name["docs"]
    # documents are the user's (80), passages what the engine ranks (long documents are split at 24 tokens)
    assert docs["kind"] == "rag" and docs["documents"] == len(env["ids"])
    assert docs["passages"] == len(env["rag"]._handle("docs").engine) > docs["documents"]
    assert docs["model"] == Path(env["ckpt"]).name and docs["metadata_indexes"] == ["n"]


def test_model_names_are_names_a_client_can_send_never_server_paths(server, env):
    """/health, /v1/indexes and every response name the model by a name /v1/multi-vector accepts as 'model'."""
    root = str(env["root"])
    shown = [server.get("/health").json()["model"]]
    shown += [d["model"] for d in server.get("/v1/indexes").json()["data"] if d["model"]]
    shown.append(server.post("/v1/search", json={"index": "docs", "query": "cats", "k": 2}).json()["model"])
    emb = server.post("/v1/search", json={"index": "docs", "query_embeddings": [[0.1] * env["model"].dim], "k": 2})
    shown.append(emb.json()["model"])
    shown.append(server.post("/v1/multi-vector", json={"input": ["cats"]}).json()["model"])
    shown.append(server.post("/v1/rerank", json={"query": "cats", "documents": ["a cat"]}).json()["model"])
    assert shown and all(s == Path(env["ckpt"]).name for s in shown), shown
    for name in set(shown):
        assert root not in name and os.sep not in name
        r = server.post("/v1/multi-vector", json={"model": name, "input": ["cats"]})
        assert r.status_code == 200 and r.json()["model"] == name


def test_docs_page_works_offline(server):
    """/docs loads nothing from outside the server: every referenced asset is served here."""
    import re

    r = server.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    page = r.text
    assert not re.search(r"https?://", page), re.findall(r"https?://[^\s\"']+", page)
    refs = re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r"url: *'([^']+)'", page)
    assert "/openapi.json" in refs and any(x.endswith(".js") for x in refs)
    for ref in refs:
        got = server.get(ref)
        assert got.status_code == 200 and len(got.content) > 100, ref
    assert server.get("/docs/assets/..%2Fswagger-ui.css").status_code == 404
    assert server.get("/docs/assets/index.html").status_code == 404
    assert server.get("/redoc").status_code == 404  # its page loads from a CDN: not served


def test_post_without_a_json_content_type_is_read_as_json(server, env):
    """``curl -d '{...}'`` sends a form content type, and some clients none: parse JSON or answer 400, never 500."""
    body = b'{"index": "docs", "query": "cats", "k": 3}'
    want = server.post("/v1/search", json={"index": "docs", "query": "cats", "k": 3}).json()["results"]
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
        r = server.post("/v1/search", content=body, headers=headers)
        assert r.status_code == 200, (headers, r.text[:300])
        assert [h["id"] for h in r.json()["results"]] == [h["id"] for h in want]
    r = server.post("/v1/multi-vector", content=b'{"input": ["cats"]}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    for body in (b"index=docs&query=cats", b"\xff\xfe"):
        r = server.post("/v1/search", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400 and r.json()["type"] == "malformed_json", (body, r.text[:300])
    r = server.post("/v1/search", content=b"", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "body" in r.json()["detail"], r.text[:300]
    r = server.post("/v1/search", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert 400 <= r.status_code < 500 and r.json()["type"] in ("invalid_request", "malformed_json"), r.text[:300]


def test_multi_vector_equals_the_model(server, env, openapi):
    model = env["model"]
    texts = ["the cat sat on the mat", "dogs", "late interaction search with a compressed index"]
    r = server.post("/v1/multi-vector", json={"model": str(env["ckpt"]), "input_type": "query",
                                               "embedding_type": "float", "input": texts})
    assert r.status_code == 200, r.text[:500]
    _conforms(openapi, "POST", "/v1/multi-vector", r)
    body = r.json()
    want = model.encode_queries(texts)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for d, w in zip(body["data"], want):
        got = np.array(d["embeddings"], dtype=np.float32)
        assert got.shape == (model.query_length, model.dim)  # queries: always query_length vectors
        np.testing.assert_allclose(got, w, atol=1e-5)
    counts = model.count_tokens(texts, add_special_tokens=True)
    assert body["usage"]["total_tokens"] == sum(min(c, model.query_length) for c in counts)

    r = server.post("/v1/multi-vector", json={"input": [{"text": t} for t in texts], "input_type": "document"})
    assert r.status_code == 200
    for d, w in zip(r.json()["data"], model.encode_documents(texts)):
        np.testing.assert_allclose(np.array(d["embeddings"], dtype=np.float32), w, atol=1e-5)

    r = server.post("/v1/multi-vector", json={"input": texts[2], "input_type": "document", "dimensions": 8,
                                               "embedding_type": "base64"})
    assert r.status_code == 200
    _conforms(openapi, "POST", "/v1/multi-vector", r)
    (d,) = r.json()["data"]
    got = np.frombuffer(base64.b64decode(d["embeddings"]), dtype="<f4").reshape(-1, 8)
    np.testing.assert_allclose(got, model.encode_documents([texts[2]], dimensions=8)[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("query", ["the cat sat on the mat", " ".join(["the cat sat on the mat"] * 8)])
def test_rerank_equals_plaidx_rerank(server, env, openapi, query):
    """A short query and one longer than the model's query length (read whole by both)."""
    docs = env["texts"][:12]
    r = server.post("/v1/rerank", json={"model": str(env["ckpt"]), "query": query, "documents": docs, "top_n": 5,
                                         "return_documents": True})
    assert r.status_code == 200, r.text[:500]
    _conforms(openapi, "POST", "/v1/rerank", r)
    want = plaidx.rerank(env["model"], query, docs, top_n=5)
    got = r.json()["results"]
    assert [g["index"] for g in got] == [w["index"] for w in want]
    np.testing.assert_allclose([g["relevance_score"] for g in got], [w["relevance_score"] for w in want], rtol=1e-5)
    assert [g["document"]["text"] for g in got] == [docs[w["index"]] for w in want]
    r = server.post("/v1/rerank", json={"query": {"text": query}, "documents": [{"text": d} for d in docs[:3]],
                                         "return_documents": False})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    assert all(x["document"] is None for x in r.json()["results"])


def _assert_same_hits(got: list[dict], want: list[dict], atol: float = 1e-4) -> None:
    """Same ranking (ids may swap only within a near tie) and the same scores, contents and metadata."""
    assert len(got) == len(want), (got, want)
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=atol)
    for g, w in zip(got, want):
        if g["passage_id"] != w["passage_id"]:
            assert abs(g["score"] - w["score"]) <= atol
            continue
        assert g["document_id"] == w["document_id"] and g["content"] == w["content"]
        assert g.get("document_metadata") == w.get("document_metadata")


def test_search_by_text_equals_rag_search(server, env, openapi):
    rag = env["rag"]
    for q in QUERIES[:4]:
        r = server.post("/v1/search", json={"index": "docs", "query": q, "k": 7})
        assert r.status_code == 200, r.text[:500]
        _conforms(openapi, "POST", "/v1/search", r)
        hits = r.json()["results"]
        assert [h["rank"] for h in hits] == list(range(1, 8))
        _assert_same_hits(hits, rag.search(q, index_name="docs", k=7))
    # long queries are read whole, each at its own length, as the RAG API reads them
    long_q = " ".join(QUERIES * 3)
    assert len(long_q.split()) * 1.35 > env["model"].query_length
    r = server.post("/v1/search", json={"index": "docs", "queries": [QUERIES[0], long_q], "k": 6})
    assert r.status_code == 200, r.text[:500]
    short_hits, long_hits = (d["results"] for d in r.json()["data"])
    _assert_same_hits(short_hits, rag.search(QUERIES[0], index_name="docs", k=6))
    _assert_same_hits(long_hits, rag.search(long_q, index_name="docs", k=6))
    cut = rag._handle("docs").search(env["model"].encode_queries([long_q]), 6)[0]
    assert long_hits[0]["score"] != pytest.approx(cut[0].score)  # not the query cut at query_length
    # filter and search parameters go through to the engine
    allowed = env["ids"][10:20]
    params = {"nprobe": 4, "ndocs": 64, "n_exact": 16, "centroid_score_threshold": 0.3}
    r = server.post("/v1/search", json={"index": "docs", "query": QUERIES[0], "k": 5, "doc_ids": allowed, **params})
    assert r.status_code == 200
    hits = r.json()["results"]
    assert hits and all(h["document_id"] in allowed for h in hits)
    _assert_same_hits(hits, rag.search(QUERIES[0], index_name="docs", k=5, doc_ids=allowed, **params))
    # one list per query
    per_query = [env["ids"][10:20], env["ids"][30:34]]
    r = server.post("/v1/search", json={"index": "docs", "queries": QUERIES[:2], "k": 3, "doc_ids": per_query})
    assert r.status_code == 200
    for d, q, ids in zip(r.json()["data"], QUERIES[:2], per_query):
        assert d["results"] and all(h["document_id"] in ids for h in d["results"])
        _assert_same_hits(d["results"], rag.search(q, index_name="docs", k=3, doc_ids=ids))
    # a metadata filter, with doc_ids too, per query; a bad filter is a 400 naming the problem
    where = {"n": {"$lt": 30}, "even": True}
    r = server.post("/v1/search", json={"index": "docs", "queries": QUERIES[:2], "k": 5, "where": where})
    assert r.status_code == 200
    for d, q in zip(r.json()["data"], QUERIES[:2]):
        assert len(d["results"]) == 5 and all(int(h["document_id"][4:]) in range(0, 30, 2) for h in d["results"])
        _assert_same_hits(d["results"], rag.search(q, index_name="docs", k=5, where=where))
    r = server.post("/v1/search", json={"index": "docs", "queries": QUERIES[:2], "k": 5, "where": where,
                                         "doc_ids": [["doc-2", "doc-3"], ["doc-40", "doc-4"]]})
    assert [{h["document_id"] for h in d["results"]} for d in r.json()["data"]] == [{"doc-2"}, {"doc-4"}]  # passages
    r = server.post("/v1/search", json={"index": "docs", "query": QUERIES[0], "where": {"n": {"$like": 3}}})
    assert r.status_code == 400 and r.json()["type"] == "invalid_request" and "unknown operator" in r.text
    r = server.post("/v1/search", json={"index": "vectors", "query_embeddings": env["engine_queries"][0].tolist(),
                                         "where": {"n": 1}})
    assert r.status_code == 400 and "bare engine folder" in r.text
    r = server.post("/v1/search", json={"index": "docs", "queries": QUERIES[:2], "k": 3, "doc_ids": per_query[:1]})
    assert r.status_code == 400 and r.json()["type"] == "invalid_request" and "1 list of ids for 2" in r.text
    r = server.post("/v1/search", json={"index": "docs", "query": QUERIES[1], "k": 5, "exact": True,
                                         "return_content": False, "return_metadata": False})
    want = rag.search(QUERIES[1], index_name="docs", k=5, exact=True)
    got = r.json()["results"]
    assert all(h["content"] is None and h["document_metadata"] is None for h in got)
    np.testing.assert_allclose([h["score"] for h in got], [w["score"] for w in want], atol=1e-4)


def test_search_by_embeddings_equals_the_engine(server, env, openapi):
    eng, queries = env["engine"], env["engine_queries"]
    for q in queries[:4]:
        r = server.post("/v1/search", json={"index": "vectors", "query_embeddings": q.tolist(), "k": 10})
        assert r.status_code == 200, r.text[:500]
        _conforms(openapi, "POST", "/v1/search", r)
        scores, ids = eng.search(q, k=10)
        scores, ids = scores[0], ids[0]
        hits = r.json()["results"]
        assert [h["id"] for h in hits] == ids.tolist()
        np.testing.assert_allclose([h["score"] for h in hits], scores, rtol=1e-6)
    # the rerank tier's knob goes through: rerank=0 searches the codes alone, as the engine does
    for rerank in (0, 40):
        r = server.post("/v1/search", json={"index": "vectors", "query_embeddings": queries[1].tolist(), "k": 10,
                                             "rerank": rerank})
        assert r.status_code == 200, r.text[:500]
        scores, ids = eng.search(queries[1], k=10, rerank=rerank)
        assert [h["id"] for h in r.json()["results"]] == ids[0].tolist()
        np.testing.assert_allclose([h["score"] for h in r.json()["results"]], scores[0], rtol=1e-6)
    bad = server.post("/v1/search", json={"index": "vectors", "query_embeddings": queries[1].tolist(), "n_exact": 16})
    assert bad.status_code == 400 and "rerank=0" in bad.text
    bad = server.post("/v1/search", json={"index": "vectors", "query_embeddings": queries[1].tolist(), "rerank": -1})
    assert bad.status_code == 400 and "rerank must be" in bad.text
    bad = server.post("/v1/search", json={"index": "docs", "query": QUERIES[0], "rerank": 8})  # no tier there
    assert bad.status_code == 400 and "keep_vectors" in bad.text
    r = server.post("/v1/search", json={"index": "vectors", "query_embeddings": queries[0].tolist(), "k": 5,
                                         "exact": True, "doc_ids": [3, 4, 5, 6]})
    scores, ids = eng.search(queries[0], k=5, exact=True, doc_ids=[3, 4, 5, 6])
    scores, ids = scores[0], ids[0]
    assert [h["id"] for h in r.json()["results"]] == [i for i in ids.tolist() if i >= 0]
    # the RAG index answers embedding queries too (e.g. from /v1/multi-vector)
    emb = server.post("/v1/multi-vector", json={"input": [QUERIES[2]], "input_type": "query"}).json()
    r = server.post("/v1/search", json={"index": "docs", "query_embeddings": emb["data"][0]["embeddings"], "k": 4})
    _assert_same_hits(r.json()["results"], env["rag"].search(QUERIES[2], index_name="docs", k=4))


def test_several_queries_per_request_one_result_list_each(server, env, openapi):
    """``queries`` (texts) and a list of query matrices give ``data``: one entry per query, in order, each equal
    to a search of that query alone; ``results`` is only for single-query requests."""
    rag, eng, qs = env["rag"], env["engine"], env["engine_queries"]
    r = server.post("/v1/search", json={"index": "docs", "queries": QUERIES[:3], "k": 4})
    assert r.status_code == 200, r.text[:500]
    _conforms(openapi, "POST", "/v1/search", r)
    body = r.json()
    assert body["results"] is None and [d["query_index"] for d in body["data"]] == [0, 1, 2]
    for d, want in zip(body["data"], rag.search(QUERIES[:3], index_name="docs", k=4)):
        _assert_same_hits(d["results"], want)
    # matrices of different lengths (8 and 3 tokens) in one request
    mats = [qs[0], qs[1][:3], qs[2]]
    r = server.post("/v1/search", json={"index": "vectors", "query_embeddings": [m.tolist() for m in mats], "k": 5})
    assert r.status_code == 200, r.text[:500]
    _conforms(openapi, "POST", "/v1/search", r)
    body = r.json()
    assert body["results"] is None and len(body["data"]) == 3
    for d, m in zip(body["data"], mats):
        scores, ids = eng.search(m, k=5)
        assert [h["id"] for h in d["results"]] == ids[0].tolist()
        np.testing.assert_allclose([h["score"] for h in d["results"]], scores[0], rtol=1e-6)
    # a single query: data holds one entry and results repeats it
    r = server.post("/v1/search", json={"index": "vectors", "query_embeddings": qs[0].tolist(), "k": 5}).json()
    assert len(r["data"]) == 1 and r["data"][0]["results"] == r["results"]
    # an empty doc_ids filter allows no document
    r = server.post("/v1/search", json={"index": "docs", "queries": QUERIES[:2], "k": 4, "doc_ids": []}).json()
    assert [d["results"] for d in r["data"]] == [[], []]


def test_served_indexes_are_warmed_at_start(env):
    """The server derives each index's inverted file as it starts, not in its first request."""
    app = create_app({"only": env["rag_path"]}, model=env["model"])
    _, folder = app.state.plaidx.index("only")
    assert folder.engine._snap._ivf is not None and folder.engine._snap._doc_cells is not None
    app.state.plaidx.close()


def test_index_may_be_omitted_when_one_index_is_served(env):
    from starlette.testclient import TestClient

    app = create_app({"only": env["rag_path"]}, model=env["model"])
    with TestClient(app) as c:
        r = c.post("/v1/search", json={"query": QUERIES[0], "k": 3})
        assert r.status_code == 200, r.text[:300]
        assert r.json()["index"] == "only"
        _assert_same_hits(r.json()["results"], env["rag"].search(QUERIES[0], index_name="docs", k=3))


_WORKER = """
import json, sys
import plaidx
rag = plaidx.RAGPretrainedModel.from_index(sys.argv[1], verbose=0)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "delete":
        rag.delete_from_index(cmd["ids"])
    elif cmd["op"] == "add":
        rag.add_to_index(cmd["texts"], new_document_ids=cmd["ids"])
    elif cmd["op"] == "compact":
        plaidx.Index.open(rag._handle(None).engine_path).compact()
    elif cmd["op"] == "overwrite":
        rag.index(cmd["texts"], document_ids=cmd["ids"], index_name=rag.index_name, max_document_length=24)
    print("done", flush=True)
"""


def test_a_served_index_follows_every_commit_of_another_process(env, tmp_path):
    """Another process deletes, adds, compacts and rebuilds the index the server serves: the next request sees
    each change, never returns a deleted document, and unknown-id errors name the user's document ids."""
    from starlette.testclient import TestClient

    texts, ids = env["texts"][:30], env["ids"][:30]
    rag = plaidx.RAGPretrainedModel(env["model"], index_root=tmp_path, verbose=0)
    path = rag.index(texts, document_ids=ids, index_name="live", max_document_length=24)
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"))

    def other_process(**cmd) -> None:
        worker.stdin.write(json.dumps(cmd) + "\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "done", worker.communicate(timeout=30)[1][-2000:]

    def search(**req):
        r = c.post("/v1/search", json={"query": QUERIES[0], **req})
        return r.status_code, r.json()

    def served_documents(k: int = 100) -> set:
        code, body = search(k=k)
        assert code == 200, body
        return {h["document_id"] for h in body["results"]}

    app = create_app({"live": path}, model=env["model"])
    try:
        with TestClient(app) as c:
            assert served_documents() == set(ids)
            gone = ids[:20]
            other_process(op="delete", ids=gone)
            assert served_documents() == set(ids[20:])
            code, body = search(k=3)
            assert code == 200 and len(body["results"]) == 3
            code, body = search(k=3, doc_ids=[gone[0], ids[25]])
            assert code == 400 and body["type"] == "unknown_doc_ids"
            assert repr(gone[0]) in body["detail"] and "10 documents" in body["detail"], body["detail"]
            assert c.get("/v1/indexes").json()["data"][0]["documents"] == 10

            other_process(op="add", texts=["a brand new document about cats"], ids=["fresh"])
            code, body = search(k=3, doc_ids=["fresh"])
            assert code == 200 and [h["document_id"] for h in body["results"]] == ["fresh"]
            assert served_documents() == set(ids[20:]) | {"fresh"}

            other_process(op="compact")
            assert served_documents() == set(ids[20:]) | {"fresh"}
            code, body = search(k=3, doc_ids=["fresh"])
            assert code == 200 and body["results"][0]["content"] == "a brand new document about cats"

            other_process(op="overwrite", texts=env["texts"][40:45], ids=[f"new-{i}" for i in range(5)])
            assert served_documents() == {f"new-{i}" for i in range(5)}
            code, body = search(k=3, doc_ids=[ids[25]])
            assert code == 400 and repr(ids[25]) in body["detail"] and "5 documents" in body["detail"]
    finally:
        err = worker.communicate(timeout=60)[1]  # closes its stdin: the worker ends
    assert worker.returncode == 0, err[-2000:]


# ------------------------------------------------------------------------ errors
def _error(r, status: int, kind: str, openapi=None, path: str = "", words: tuple[str, ...] = ()) -> dict:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert body["type"] == kind, body
    assert isinstance(body["detail"], str) and body["detail"]
    for w in words:
        assert w in body["detail"], (w, body["detail"])
    if openapi is not None:
        _conforms(openapi, "POST", path, r)
    return body


def test_bad_requests_get_named_4xx_errors_and_the_server_stays_up(server, openapi):
    post = server.post
    mv, se, rr = "/v1/multi-vector", "/v1/search", "/v1/rerank"
    hdr = {"content-type": "application/json"}
    _error(post(se, content=b'{"index": "docs", "query": ', headers=hdr), 400, "malformed_json", openapi, se)
    _error(post(mv, content=b"[1, 2", headers=hdr), 400, "malformed_json", openapi, mv)
    import gzip

    for body, extra in ((gzip.compress(b'{"index": "docs", "query": "cats"}'), {"content-encoding": "gzip"}),
                        (b'{"index": "docs", "query": "\xff"}', {})):  # compressed, or not UTF-8
        _error(post(se, content=body, headers={**hdr, **extra}), 400, "malformed_json", openapi, se,
               ("UTF-8, uncompressed",))
    b = _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 8]}), 400, "invalid_request", openapi,
               se, ("dimension",))
    assert b["param"] == "query_embeddings"
    b = _error(post(se, json={"index": "docs", "query": 5, "k": "ten"}), 422, "invalid_request", openapi, se,
               ("query", "k", "valid integer"))
    assert b["param"] == "query"
    _error(post(se, json={"query": "cats"}), 400, "invalid_request", openapi, se, ("index", "required", "docs"))
    _error(post(se, json={"index": "docs", "query": "x", "kk": 3}), 422, "invalid_request", openapi, se, ("kk",))
    _error(post(mv, json={"input": [1, 2]}), 422, "invalid_request", openapi, mv, ("input",))
    _error(post(mv, json={"input": ["a"], "input_type": "passage"}), 422, "invalid_request", openapi, mv,
           ("input_type",))
    _error(post(rr, json={"query": "q", "documents": "not a list"}), 422, "invalid_request", openapi, rr,
           ("documents",))
    _error(post(se, json=[1, 2, 3]), 422, "invalid_request", openapi, se)
    _error(post(se, json={"index": "nope", "query": "cats"}), 404, "index_not_found", openapi, se, ("'nope'", "docs"))
    _error(post(mv, json={"model": "no-such-model", "input": ["a"]}), 404, "model_not_found", openapi, mv,
           ("no-such-model",))
    _error(post(se, json={"index": "docs", "query": "cats", "k": 0}), 400, "invalid_request", openapi, se, ("k",))
    _error(post(se, json={"index": "docs", "query": "cats", "k": 101}), 400, "invalid_request", openapi, se, ("100",))
    _error(post(se, json={"index": "docs"}), 400, "invalid_request", openapi, se, ("query_embeddings",))
    _error(post(se, json={"index": "docs", "query": "x", "query_embeddings": [[0.0] * 16]}), 400, "invalid_request",
           openapi, se)
    _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 16, [0.1] * 15]}), 400,
           "invalid_request", openapi, se, ("rectangular",))
    _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 12]}), 400, "invalid_request", openapi, se,
           ("dimension",))
    _error(post(se, json={"index": "vectors", "query_embeddings": [[1e39] * 16]}), 400, "invalid_request", openapi, se,
           ("too large for float32",))
    for bad in (float("nan"), float("inf")):
        b = _error(post(se, content=json.dumps({"index": "vectors", "query_embeddings": [[0.1] * 15 + [bad]]}),
                        headers=hdr), 400, "invalid_request", openapi, se, ("NaN or infinite",))
        assert "too large" not in b["detail"]
    _error(post(se, json={"index": "vectors", "query_embeddings": [[[0.1] * 16], [[0.1] * 12]]}), 400,
           "invalid_request", openapi, se, ("widths",))
    _error(post(se, json={"index": "docs", "queries": ["cats", " "]}), 400, "invalid_request", openapi, se,
           ("queries[1]",))
    _error(post(se, json={"index": "docs", "queries": []}), 400, "invalid_request", openapi, se, ("empty",))
    _error(post(se, json={"index": "docs", "query": "cats", "doc_ids": ["doc-1", "ghost"]}), 400, "unknown_doc_ids",
           openapi, se, ("ghost",))
    _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 16], "doc_ids": [10 ** 9]}), 400,
           "unknown_doc_ids", openapi, se)
    b = _error(post(se, json={"index": "docs", "query": "cats", "nprobe": -1}), 400, "invalid_request", openapi, se,
               ("nprobe",))
    assert b["param"] == "nprobe"
    # integers past 64 bits: 400s naming the field, and never the native binding's dump of the index's arrays
    b = _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 16], "ndocs": 1 << 63}), 400,
               "invalid_request", openapi, se, ("ndocs must be a positive integer up to",))
    assert b["param"] == "ndocs" and len(b["detail"]) < 200
    for doc_ids in ([10 ** 30], [-(10 ** 30)]):
        _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 16], "doc_ids": doc_ids}), 400,
               "unknown_doc_ids", openapi, se, (str(doc_ids[0]),))
    _error(post(se, json={"index": "vectors", "query_embeddings": [[10 ** 400] + [0.1] * 15]}), 400,
           "invalid_request", openapi, se, ("too large for float32",))
    _error(post(mv, json={"input": []}), 400, "invalid_request", openapi, mv, ("empty",))
    _error(post(mv, json={"input": ["fine", "   "]}), 400, "invalid_request", openapi, mv, ("input[1]",))
    _error(post(mv, json={"input": ["a"], "dimensions": 99}), 400, "invalid_request", openapi, mv, ("dimensions",))
    _error(post(rr, json={"query": "q", "documents": ["a"], "top_n": 0}), 400, "invalid_request", openapi, rr,
           ("top_n",))
    # limits: body size, number of inputs, characters, tokens
    _error(post(mv, content=b'{"input": ["' + b"a" * (300 << 10) + b'"]}', headers=hdr), 413, "request_too_large",
           openapi, mv, (str(256 << 10),))
    _error(post(mv, json={"input": ["cat"] * 33}), 413, "too_many_inputs", openapi, mv, ("33", "32"))
    _error(post(rr, json={"query": "q", "documents": ["cat"] * 33}), 413, "too_many_inputs", openapi, rr)
    _error(post(mv, json={"input": ["cat " * 600]}), 413, "input_too_long", openapi, mv, ("2000",))
    # rerank reads documents in full (here up to the tiny model's 128 positions): 30 x 128 tokens > 2000
    b = _error(post(rr, json={"query": "q", "documents": ["cat " * 400] * 30}), 413, "too_many_tokens", openapi, rr,
               ("2000",))
    assert b["param"] == "documents"  # the field that holds the texts
    _error(post(se, json={"index": "vectors", "query_embeddings": [[0.1] * 16] * 1025}), 413,
           "too_many_query_tokens", openapi, se)
    # not an endpoint, wrong method
    assert server.get("/v1/nothing").status_code == 404 and server.get("/v1/nothing").json()["type"] == "not_found"
    r = server.get("/v1/search")
    assert r.status_code == 405 and r.json()["type"] == "method_not_allowed"
    # still serving, and correctly
    assert server.get("/health").status_code == 200
    assert server.post(se, json={"index": "docs", "query": "cats", "k": 3}).status_code == 200


# ------------------------------------------------------------------------ auth
def test_bearer_auth(env):
    app = create_app({"docs": env["rag_path"]}, model=env["model"], api_key=API_KEY)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health").status_code == 200  # liveness needs no key
        for method, path, payload in (("POST", "/v1/search", {"index": "docs", "query": "cats"}),
                                      ("POST", "/v1/multi-vector", {"input": ["cats"]}),
                                      ("POST", "/v1/rerank", {"query": "cats", "documents": ["a"]}),
                                      ("GET", "/v1/indexes", None)):
            r = c.request(method, path, json=payload)
            assert r.status_code == 401 and r.json()["type"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in r.json()["detail"]
            r = c.request(method, path, json=payload, headers={"Authorization": "Bearer wrong-key"})
            assert r.status_code == 401 and "not valid" in r.json()["detail"]
            r = c.request(method, path, json=payload, headers={"Authorization": f"Basic {API_KEY}"})
            assert r.status_code == 401
            r = c.request(method, path, json=payload, headers={"Authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 200, r.text[:500]
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert spec["paths"]["/v1/search"]["post"]["security"] == [{"HTTPBearer": []}]
        assert "security" not in spec["paths"]["/health"]["get"]


def test_a_non_ascii_api_key_is_matched_as_clients_send_it_in_utf8(env):
    key = "s\u00ebkret-\u5bc6\u7801"
    app = create_app({"docs": env["rag_path"]}, model=env["model"], api_key=key)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        ok = c.get("/v1/indexes", headers={"Authorization": b"Bearer " + key.encode("utf-8")})
        assert ok.status_code == 200, ok.text
        wrong = c.get("/v1/indexes", headers={"Authorization": b"Bearer " + "s\u00ebkret".encode("utf-8")})
        assert wrong.status_code == 401


def test_auth_off_by_default_and_schema_says_so(server, openapi):
    assert server.post("/v1/search", json={"index": "docs", "query": "cats"}).status_code == 200
    assert "securitySchemes" not in openapi.get("components", {})
    assert all("security" not in op for p in openapi["paths"].values() for op in p.values())


def test_openapi_declares_the_request_shapes(openapi):
    schemas = openapi["components"]["schemas"]
    paths = openapi["paths"]
    assert set(paths) >= {"/health", "/v1/indexes", "/v1/multi-vector", "/v1/rerank", "/v1/search"}
    ref = paths["/v1/multi-vector"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    mv = schemas[ref.rsplit("/", 1)[1]]
    assert mv["required"] == ["input"]
    assert set(mv["properties"]) >= {"model", "input", "input_type", "embedding_type", "dimensions"}
    assert mv["properties"]["input_type"]["enum"] == ["query", "document"]
    rr = schemas["RerankRequest"]
    assert set(rr["required"]) == {"query", "documents"}
    assert set(rr["properties"]) >= {"model", "query", "documents", "top_n", "return_documents"}
    se = schemas["SearchRequest"]
    assert se["additionalProperties"] is False
    assert set(se["properties"]) >= {"index", "query", "queries", "query_embeddings", "k", "doc_ids", "nprobe", "ndocs",
                                     "n_exact", "centroid_score_threshold", "exact"}
    for path in ("/v1/multi-vector", "/v1/rerank", "/v1/search"):
        assert {"200", "400", "404", "413", "422"} <= set(paths[path]["post"]["responses"])


# ------------------------------------------------------------------------ the command line's serve
def test_serve_refuses_a_public_host_without_a_key(env, capsys, monkeypatch):
    from plaidx import cli
    from plaidx.server import serve

    monkeypatch.delenv("PLAIDX_API_KEY", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0", "--index", f"docs={env['rag_path']}"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "refusing to listen on '0.0.0.0' without an API key" in err and "PLAIDX_API_KEY" in err
    with pytest.raises(PermissionError, match="without an API key"):
        serve({}, host="::", api_key=None)
    with pytest.raises(ValueError, match="loopback"):
        BackgroundServer(None, host="0.0.0.0")
    assert cli.main(["serve", "--index", str(env["root"] / "missing")]) == cli.EXIT_USAGE
    assert "no such index folder" in capsys.readouterr().err
    assert cli.main(["serve", "--index", f"a/b={env['rag_path']}"]) == cli.EXIT_USAGE
    assert "index name 'a/b' is not usable" in capsys.readouterr().err
    with socket.socket() as taken:  # a port in use: a clear error before "serving", not the web server's exit 3
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port), "--index", f"docs={env['rag_path']}"]) == cli.EXIT_FAILURE
    out, err = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "serving" not in out


def test_serve_executor_options_join_a_named_cluster_or_say_what_is_missing(env, capsys, monkeypatch):
    """--executor ray never starts a cluster: without an address it says how to name one; the choice reaches the
    folders through PLAIDX_SHARDED_EXECUTOR before any index is opened."""
    from plaidx import cli

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PLAIDX_SHARDED_EXECUTOR", "local")
    spec = f"docs={env['rag_path']}"
    assert cli.main(["serve", "--ray-address", "127.0.0.1:6379", "--index", spec]) == cli.EXIT_USAGE
    assert "--ray-address is for --executor ray" in capsys.readouterr().err
    assert cli.main(["serve", "--executor", "ray", "--index", spec]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "does not start one" in err and "RAY_ADDRESS" in err and "ray start --head" in err
    assert os.environ["PLAIDX_SHARDED_EXECUTOR"] == "ray"  # set first, so every folder opened after reads it
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--executor", "spark"])
    assert e.value.code == cli.EXIT_USAGE and "invalid choice" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plaidx_serve_subprocess_with_key_from_the_environment(env):
    port = _free_port()
    envvars = dict(os.environ, PLAIDX_API_KEY=API_KEY, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "plaidx", "serve", "--index", f"docs={env['rag_path']}",
                             "--port", str(port), "--log-level", "warning", "--quiet"],
                            env=envvars, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=env["root"])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "plaidx serve did not come up in 60 s"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.post(f"{url}/v1/search", json={"index": "docs", "query": "cats"}).status_code == 401
        r = httpx.post(f"{url}/v1/search", json={"index": "docs", "query": QUERIES[0], "k": 3},
                       headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        assert r.status_code == 200
        _assert_same_hits(r.json()["results"], env["rag"].search(QUERIES[0], index_name="docs", k=3))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


# ------------------------------------------------------------------------ concurrent load
def test_concurrent_load_every_response_correct(server, env):
    """8 clients x 200 requests on 127.0.0.1, mixing text search, embedding search, multi-vector and rerank."""
    clients, per_client = 8, 200
    rag, eng, model = env["rag"], env["engine"], env["model"]
    text_want = {q: rag.search(q, index_name="docs", k=5) for q in QUERIES}
    emb_queries = env["engine_queries"]
    emb_want = [tuple(a[0] for a in eng.search(q, k=5)) for q in emb_queries]
    mv_texts = QUERIES[:4]
    mv_want = {t: model.encode_queries([t])[0] for t in mv_texts}
    rr_docs = env["texts"][:6]
    rr_want = plaidx.rerank(model, QUERIES[0], rr_docs)
    failures: list[str] = []
    counts = {"search_text": 0, "search_emb": 0, "multi_vector": 0, "rerank": 0}
    lock = threading.Lock()
    url = str(server.base_url)

    def worker(c: int) -> None:
        rng = np.random.default_rng(c)
        with httpx.Client(base_url=url, timeout=60) as cl:
            for i in range(per_client):
                kind = ("search_text", "search_emb", "search_text", "multi_vector", "search_emb", "rerank")[
                    int(rng.integers(6))]
                try:
                    if kind == "search_text":
                        q = QUERIES[int(rng.integers(len(QUERIES)))]
                        r = cl.post("/v1/search", json={"index": "docs", "query": q, "k": 5})
                        _assert_same_hits(r.json()["results"], text_want[q])
                    elif kind == "search_emb":
                        j = int(rng.integers(len(emb_queries)))
                        r = cl.post("/v1/search", json={"index": "vectors", "query_embeddings": emb_queries[j].tolist(),
                                                        "k": 5})
                        got = r.json()["results"]
                        assert [h["id"] for h in got] == emb_want[j][1].tolist()
                        np.testing.assert_allclose([h["score"] for h in got], emb_want[j][0], rtol=1e-6)
                    elif kind == "multi_vector":
                        t = mv_texts[int(rng.integers(len(mv_texts)))]
                        r = cl.post("/v1/multi-vector", json={"input": [t], "input_type": "query"})
                        np.testing.assert_allclose(np.array(r.json()["data"][0]["embeddings"]), mv_want[t], atol=1e-5)
                    else:
                        r = cl.post("/v1/rerank", json={"query": QUERIES[0], "documents": rr_docs})
                        got = r.json()["results"]
                        np.testing.assert_allclose([g["relevance_score"] for g in got],
                                                   [w["relevance_score"] for w in rr_want], rtol=1e-4)
                    assert r.status_code == 200
                    with lock:
                        counts[kind] += 1
                except Exception as exc:  # noqa: BLE001 - collected and reported below
                    with lock:
                        failures.append(f"client {c} request {i} ({kind}): {type(exc).__name__}: {exc}"[:500])

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "load did not finish within 300 s"
    assert not failures, f"{len(failures)} failures, first: {failures[:3]}"
    assert sum(counts.values()) == clients * per_client
    assert all(v > 0 for v in counts.values())


# ------------------------------------------------------------------------ the model-call batcher
class _GatedModel:
    """A stand-in model: a call with the text "hold" waits for the gate, so later requests queue behind it."""

    query_length, document_length, dim = 4, 8, 2

    def __init__(self):
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def count_tokens(self, texts, add_special_tokens=False):
        return [len(t.split()) + 2 for t in texts]

    def encode(self, texts, input_type="document", dimensions=None, show_progress_bar=None):
        if "hold" in texts:
            self.entered.set()
            assert self.gate.wait(30)
        self.batches.append(list(texts))
        if "boom" in texts:
            raise ValueError("texts: 'boom' cannot be encoded")
        return [np.full((len(t.split()), self.dim), float(len(t)), np.float32) for t in texts]


def _hold(model, enc):
    model.gate.clear()
    model.entered.clear()
    held = enc.submit(["hold"], "document", None, 100)
    assert model.entered.wait(30)
    return held


def test_encoder_batches_requests_that_wait_for_the_model():
    from plaidx.server import Encoder

    model = _GatedModel()
    enc = Encoder(model, max_batch_texts=64)
    try:
        held = _hold(model, enc)
        waiting = [enc.submit([f"t{i} x", "y"], "document", None, 100) for i in range(5)]
        query = enc.submit(["q"], "query", None, 100)
        model.gate.set()
        assert held.result(30)[0][0].shape == (1, 2)
        for i, f in enumerate(waiting):
            rows, tokens = f.result(30)
            assert [r.shape[0] for r in rows] == [2, 1] and rows[0][0, 0] == len(f"t{i} x") and tokens == 4 + 3
        assert query.result(30)[1] == 3
        # the five document requests that waited went into one model call; the query into its own
        assert model.batches == [["hold"], [t for i in range(5) for t in (f"t{i} x", "y")], ["q"]]
    finally:
        model.gate.set()
        enc.close()


def test_encoder_isolates_a_failing_request_from_its_batch():
    from plaidx.server import ApiError, Encoder

    model = _GatedModel()
    enc = Encoder(model, max_batch_texts=64)
    try:
        held = _hold(model, enc)
        good = enc.submit(["fine text"], "document", None, 100)
        bad = enc.submit(["boom"], "document", None, 100)
        too_long = enc.submit(["w " * 50], "document", None, 5)
        good2 = enc.submit(["also fine"], "document", None, 100)
        model.gate.set()
        held.result(30)
        assert good.result(30)[0][0].shape == (2, 2) and good2.result(30)[0][0].shape == (2, 2)
        with pytest.raises(ApiError, match="boom") as e:
            bad.result(30)
        assert e.value.status == 400
        with pytest.raises(ApiError, match="at most 5 per request") as e:
            too_long.result(30)
        assert e.value.status == 413 and e.value.type == "too_many_tokens"
        # one shared call failed, then each request was retried alone; the over-long one never reached the model
        assert model.batches[1] == ["fine text", "boom", "also fine"]
        assert model.batches[2:] == [["fine text"], ["boom"], ["also fine"]]
    finally:
        model.gate.set()
        enc.close()


def test_searches_run_in_parallel_not_behind_one_lock(env):
    """Three searches must all be inside the engine at once to pass the barrier (a global lock would break it)."""
    from plaidx.rag import IndexFolder

    barrier = threading.Barrier(3, timeout=30)

    class GatedFolder(IndexFolder):
        def search(self, *args, **kwargs):
            barrier.wait()
            return super().search(*args, **kwargs)

    app = create_app({"v": GatedFolder(env["engine"].path)}, model=env["model"], search_threads=4)
    q = env["engine_queries"][0].tolist()
    codes: list[int] = []
    with BackgroundServer(app) as url:
        def one() -> None:
            r = httpx.post(f"{url}/v1/search", json={"index": "v", "query_embeddings": q, "k": 3}, timeout=60)
            codes.append(r.status_code)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert codes == [200, 200, 200] and not barrier.broken
