"""PyLate / sentence-transformers model objects as plaidx encoders (plaidx.encoder.adapters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from plaidx.encoder import ColBERT  # noqa: E402
from plaidx.encoder.adapters import MultiVectorEncoderAdapter, PyLateEncoder, as_encoder  # noqa: E402
from plaidx.engine import maxsim  # noqa: E402
from plaidx.rag import RAGPretrainedModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Cells are the basic unit of life.", "Mitochondria produce most of the energy of a cell.",
         "The Eiffel tower stands in Paris.", "Paris is the capital of France and its largest city.",
         "Photosynthesis turns light into chemical energy in plants."]
QUERIES = ["what makes energy in a cell?", "capital of France"]


def _load_checkpoint_maker():
    spec = importlib.util.spec_from_file_location("make_stanford_checkpoint",
                                                  ROOT / "benchmarks" / "peers" / "make_stanford_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Stanford checkpoint (bundled MiniLM + seeded 384->128 head), made here: ~90 MB, never committed."""
    path = tmp_path_factory.getbasetemp() / "minilm-colbert-seed0"  # shared with test_ragatouille.py
    if not (path / "model.safetensors").is_file():
        _load_checkpoint_maker().make_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="module")
def plaidx_model(checkpoint):
    return ColBERT.from_pretrained(checkpoint, device="cpu")


# ---------------------------------------------------------------------------------------------- duck-typed PyLate
class FakePyLate:
    """PyLate's ColBERT API (encode(texts, is_query=...), query_length, document_length, tokenizer) over a plaidx
    model, with vectors scaled by 3 (unnormalised) and queries without expansion (one row per real token)."""

    __module__ = "pylate.models.colbert"

    def __init__(self, inner: ColBERT):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.query_length = inner.query_length
        self.document_length = inner.document_length
        self.calls: list[tuple[bool, int]] = []

    def encode(self, sentences, is_query=True, batch_size=32, convert_to_numpy=True, show_progress_bar=None):
        self.calls.append((is_query, self.document_length))
        if is_query:
            Q = self.inner.encode_queries(sentences)
            lens = [min(len(self.tokenizer(s)["input_ids"]) + 1, Q.shape[1]) for s in sentences]
            return [3.0 * q[:n] for q, n in zip(Q, lens)]
        enc = self.inner.with_document_length(self.document_length)
        return [3.0 * d for d in enc.encode_documents(sentences)]


def test_pylate_shaped_model_gives_its_vectors_normalised_and_padded(plaidx_model):
    fake = FakePyLate(plaidx_model)
    enc = as_encoder(fake)
    assert isinstance(enc, PyLateEncoder) and as_encoder(enc) is enc and as_encoder(plaidx_model) is plaidx_model
    Q = enc.encode_queries(QUERIES)
    raw = fake.encode(QUERIES, is_query=True)
    assert Q.dtype == np.float32 and Q.shape == (2, plaidx_model.query_length, 128)
    for q, r in zip(Q, raw):
        np.testing.assert_allclose(q[:len(r)], r / 3.0, atol=1e-6)
        assert not q[len(r):].any()  # zero padding adds nothing to MaxSim
    D = enc.encode_documents(TEXTS)
    for d, r in zip(D, plaidx_model.encode_documents(TEXTS)):
        np.testing.assert_allclose(d, r, atol=1e-6)
    assert enc.dim == 128 and enc.name_or_path == "pylate:FakePyLate"
    assert enc.config_dict()["dim"] == 128


def test_pylate_shaped_model_document_length_is_set_for_the_call_and_restored(plaidx_model):
    fake = FakePyLate(plaidx_model)
    short = as_encoder(fake).with_document_length(8)
    D = short.encode_documents([TEXTS[3]])
    assert fake.calls[-1] == (False, 8) and fake.document_length == plaidx_model.document_length
    assert D[0].shape[0] < plaidx_model.encode_documents([TEXTS[3]])[0].shape[0]


def test_rag_model_indexes_and_searches_with_a_pylate_shaped_model(plaidx_model, tmp_path):
    rag = RAGPretrainedModel(FakePyLate(plaidx_model), index_root=tmp_path, verbose=0)
    assert isinstance(rag.model, PyLateEncoder)
    ids = [f"d{i}" for i in range(len(TEXTS))]
    rag.index(TEXTS, document_ids=ids, index_name="fake", split_documents=False)
    D = rag.model.encode_documents(TEXTS)
    for q in QUERIES:
        exact = np.atleast_2d(maxsim(rag.model.encode_queries([q]), D))[0]  # brute force over the model's vectors
        top = rag.search(q, k=3)
        assert [r["document_id"] for r in top] == [ids[i] for i in np.argsort(-exact)[:3]]
        np.testing.assert_allclose([r["score"] for r in top], np.sort(exact)[::-1][:3], rtol=5e-2)  # compressed index


def test_in_memory_encode_and_rerank_use_the_library_vectors(plaidx_model):
    rag = RAGPretrainedModel(FakePyLate(plaidx_model), verbose=0)
    rag.encode(TEXTS, document_metadatas=[{"i": i} for i in range(len(TEXTS))], verbose=False)
    Q = rag.model.encode_queries([QUERIES[1]])
    exact = np.atleast_2d(maxsim(Q, rag.model.encode_documents(TEXTS)))[0]
    found = rag.search_encoded_docs(QUERIES[1], k=2)
    assert [r["result_index"] for r in found] == np.argsort(-exact)[:2].tolist()
    assert found[0]["document_metadata"] == {"i": found[0]["result_index"]}
    np.testing.assert_allclose(found[0]["score"], exact.max(), rtol=1e-5)
    assert [r["result_index"] for r in rag.rerank(QUERIES[1], TEXTS, k=2)] == np.argsort(-exact)[:2].tolist()


def test_what_is_not_a_multi_vector_model_is_a_clear_error(plaidx_model):
    with pytest.raises(TypeError, match="PyLate models.ColBERT or a sentence-transformers MultiVectorEncoder"):
        as_encoder(object())

    class SingleVector:
        __module__ = "sentence_transformers.sentence_transformer.model"

    with pytest.raises(TypeError, match="single-vector"):
        RAGPretrainedModel(SingleVector())
    with pytest.raises(ValueError, match="dimensions"):
        as_encoder(FakePyLate(plaidx_model)).encode_queries(QUERIES, dimensions=64)


# ---------------------------------------------------------------------------------------------- real libraries
def _multi_vector_encoder():
    st = pytest.importorskip("sentence_transformers")
    if not hasattr(st, "MultiVectorEncoder"):
        pytest.skip("sentence-transformers < 6 has no MultiVectorEncoder")
    return st.MultiVectorEncoder


def test_sentence_transformers_multi_vector_encoder_gives_its_own_vectors(checkpoint, plaidx_model, tmp_path):
    mve = _multi_vector_encoder()(str(checkpoint), device="cpu", local_files_only=True)
    enc = as_encoder(mve)
    assert isinstance(enc, MultiVectorEncoderAdapter) and enc.dim == 128
    Q = enc.encode_queries(QUERIES)
    ref_q = mve.encode_query(QUERIES, convert_to_numpy=True)
    for q, r in zip(Q, ref_q):
        np.testing.assert_allclose(q[:len(r)], r, atol=1e-6)
    D = enc.encode_documents(TEXTS)
    for d, r in zip(D, mve.encode_document(TEXTS, convert_to_numpy=True)):
        np.testing.assert_allclose(d, r, atol=1e-6)
    # the same checkpoint read by plaidx's own loader gives the same vectors
    np.testing.assert_allclose(Q, plaidx_model.encode_queries(QUERIES), atol=1e-5)
    for d, r in zip(D, plaidx_model.encode_documents(TEXTS)):
        np.testing.assert_allclose(d, r, atol=1e-5)
    rag = RAGPretrainedModel(mve, index_root=tmp_path, verbose=0)
    path = rag.index(TEXTS, document_ids=[f"d{i}" for i in range(len(TEXTS))], index_name="mve", split_documents=False)
    top = rag.search("capital of France", k=2)
    assert {r["document_id"] for r in top} <= {f"d{i}" for i in range(len(TEXTS))}
    reopened = RAGPretrainedModel.from_index(path, verbose=0)  # plaidx reads the checkpoint it names
    assert [r["document_id"] for r in reopened.search("capital of France", k=2)] == [r["document_id"] for r in top]


def test_pylate_colbert_gives_its_own_vectors(checkpoint, plaidx_model):
    """Runs where PyLate imports (bash benchmarks/peers/setup_pylate.sh, then PYTHONPATH=.bench-venv-pylate)."""
    models = pytest.importorskip("pylate.models", exc_type=ImportError)
    model = models.ColBERT(model_name_or_path=str(checkpoint), device="cpu")
    enc = as_encoder(model)
    assert isinstance(enc, PyLateEncoder)
    ref_q = model.encode(QUERIES, is_query=True)
    np.testing.assert_allclose(enc.encode_queries(QUERIES), np.stack(ref_q), atol=1e-6)
    for d, r in zip(enc.encode_documents(TEXTS), model.encode(TEXTS, is_query=False)):
        np.testing.assert_allclose(d, r, atol=1e-6)
    np.testing.assert_allclose(enc.encode_queries(QUERIES), plaidx_model.encode_queries(QUERIES), atol=1e-5)
