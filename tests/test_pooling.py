"""Token pooling: Ward clustering of a document's tokens, in the encoder and recorded by the RAG layer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from encoder_fixtures import WORDS, make_tiny_checkpoint

from plaidx import RAGPretrainedModel
from plaidx.encoder import ColBERT
from plaidx.encoder.pooling import check_pool_factor, pool_documents, pool_tokens
from plaidx.rag.folder import CONFIG_FILE

pytestmark = pytest.mark.filterwarnings("ignore:added documents drift")  # tiny indexes drift at once
VOCAB = list(dict.fromkeys(WORDS))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "stanford", query_length=16, document_length=32)


def corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=int(rng.integers(8, 20)))) for _ in range(n)]


@pytest.mark.parametrize("n,factor", [(30, 2), (31, 2), (30, 3), (7, 4), (5, 8), (1, 3)])
def test_pooling_keeps_ceil_n_over_factor_unit_vectors(n, factor):
    x = _unit(np.random.default_rng(n).standard_normal((n, 16)))
    out = pool_tokens(x, factor)
    assert out.shape == (math.ceil(n / factor), 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(pool_tokens(x, factor), out)  # deterministic


def test_factor_one_is_the_identity():
    x = _unit(np.random.default_rng(0).standard_normal((12, 8)))
    assert pool_tokens(x, 1) is x
    docs = [x, x[:3]]
    assert pool_documents(docs, 1) is docs


def test_pooling_merges_the_tokens_that_belong_together():
    rng = np.random.default_rng(1)
    directions = _unit(rng.standard_normal((5, 32)))
    # 5 directions, 3 noisy copies each, interleaved in the text order
    owner = np.tile(np.arange(5), 3)
    x = _unit(directions[owner] + 0.05 * rng.standard_normal((15, 32)))
    out = pool_tokens(x, 3)
    assert out.shape == (5, 32)
    # each pooled vector is the renormalised mean of one direction's copies, in order of first appearance
    for i in range(5):
        want = _unit(x[owner == i].sum(axis=0))
        np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 0.5, 2.0, "2", True, None])
def test_bad_pool_factor_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="pool_factor must be a whole number >= 1"):
        check_pool_factor(bad)


def test_encode_documents_pools_each_text(checkpoint):
    model = ColBERT.from_pretrained(str(checkpoint))
    texts = corpus(6, seed=2)
    full = model.encode_documents(texts)
    pooled = model.encode_documents(texts, pool_factor=2)
    for f, p in zip(full, pooled):
        assert p.shape == (math.ceil(f.shape[0] / 2), f.shape[1])
        np.testing.assert_allclose(p, pool_tokens(f, 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pool_factor"):
        model.encode_documents(texts, pool_factor=0)


def test_rag_index_records_the_factor_and_add_to_index_pools_alike(checkpoint, tmp_path):
    rag = RAGPretrainedModel.from_pretrained(str(checkpoint), index_root=tmp_path / "indexes", verbose=0)
    first, more = corpus(20, seed=3), corpus(8, seed=4)
    with pytest.raises(ValueError, match="pool_factor must be"):
        rag.index(first, index_name="bad", pool_factor=-2)
    path = rag.index(first, index_name="pooled", pool_factor=3)
    cfg = json.loads((tmp_path / "indexes" / "pooled" / CONFIG_FILE).read_text())
    assert cfg["passages"]["pool_factor"] == 3
    engine = rag._handle("pooled").engine
    full = rag.model.encode_documents(first)
    assert engine.n_tokens == sum(math.ceil(d.shape[0] / 3) for d in full)
    before = engine.n_tokens
    rag.add_to_index(more, index_name="pooled")
    engine = rag._handle("pooled").engine
    added = rag.model.encode_documents(more)
    assert engine.n_tokens - before == sum(math.ceil(d.shape[0] / 3) for d in added)
    # a reopened handle pools added documents the same way (the factor comes from the folder)
    again = RAGPretrainedModel.from_index(path, verbose=0)
    extra = corpus(3, seed=5)
    n0 = again._handle(None).engine.n_tokens
    again.add_to_index(extra)
    n1 = again._handle(None).engine.n_tokens
    assert n1 - n0 == sum(math.ceil(d.shape[0] / 3) for d in again.model.encode_documents(extra))
