"""jina-colbert-v2 layout: plaidx's rotary XLM-RoBERTa against independent references.

- ``jina_reference`` recomputes the whole encoder in float64 straight from the safetensors names, with the
  rotary applied by transformers' own helpers (Llama's ``apply_rotary_pos_emb`` for the GPT-NeoX
  "rotate_half" convention, GPT-J's for the interleaved one) and angles built from the definition: a wrong
  convention, base, position offset, q/k/v split or weight mapping changes the result.
- With rotation switched off (``rotary_emb_dim: 0``), the block structure and weight mapping must equal
  transformers' XLMRobertaModel whose weights were renamed into the fused layout by the test.
"""

from __future__ import annotations

import builtins
import json
import math
import string

import numpy as np
import pytest
import torch
from encoder_fixtures import (
    HIDDEN,
    jina_config,
    make_tiny_checkpoint,
    torch_single_thread,  # noqa: F401
    xlmr_tokenizer,
)
from safetensors.torch import load_file, save_file

from plaidx.encoder import ColBERT

pytestmark = pytest.mark.usefixtures("torch_single_thread")

QUERIES = ["what is late interaction?", "rotary position", "how does the plaid engine find the best match for a "
           "long query with many tokens"]
DOCS = ["the cat sat on the mat.", "hello, world! colbert is fast; plaid is compressed.", "a",
        " ".join(["late interaction with rotary position embedding"] * 12)]
ATOL = 5e-5


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("jina-ckpts")
    return {
        "neox": make_tiny_checkpoint(root, "jina", seed=4, extra_heads=(12, 8), document_length=120),
        "interleaved": make_tiny_checkpoint(root, "jina", seed=4, interleaved=True, document_length=120,
                                            name="jina-interleaved"),
        "base10k": make_tiny_checkpoint(root, "jina", seed=4, rotary_emb_base=10000.0, document_length=120,
                                        name="jina-base10k"),
    }


def _ln(x, sd, name, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def jina_reference(folder, ids, attention, head="linear.weight"):
    """float64 forward of the checkpoint, read by name from model.safetensors."""
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rotary
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as neox_rotary

    cfg = json.loads((folder / "config.json").read_text())
    sd = {k: v.double() for k, v in load_file(str(folder / "model.safetensors")).items()}
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd, eps = h // nh, cfg["layer_norm_eps"]
    b, n = ids.shape
    x = sd["roberta.embeddings.word_embeddings.weight"][ids] + sd["roberta.embeddings.token_type_embeddings.weight"][0]
    x = _ln(x, sd, "roberta.emb_ln", eps)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * cfg["rotary_emb_base"] ** (
        -torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    interleaved = cfg.get("rotary_emb_interleaved", False)
    allowed = attention.bool()[:, None, None, :]
    for i in range(cfg["num_hidden_layers"]):
        p = f"roberta.encoder.layers.{i}"
        qkv = x @ sd[f"{p}.mixer.Wqkv.weight"].T + sd[f"{p}.mixer.Wqkv.bias"]
        q, k, v = (t.reshape(b, n, nh, hd) for t in qkv.split(h, dim=-1))
        if interleaved:
            q, k = gptj_rotary(q, angles.sin()[None], angles.cos()[None]), gptj_rotary(k, angles.sin()[None],
                                                                                    angles.cos()[None])
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        else:
            cos, sin = torch.cat([angles.cos()] * 2, -1)[None], torch.cat([angles.sin()] * 2, -1)[None]
            q, k = neox_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~allowed, float("-inf"))
        att = scores.softmax(-1) @ v.transpose(1, 2)
        att = att.transpose(1, 2).reshape(b, n, h) @ sd[f"{p}.mixer.out_proj.weight"].T + sd[f"{p}.mixer.out_proj.bias"]
        x = _ln(x + att, sd, f"{p}.norm1", eps)
        mlp = torch.nn.functional.gelu(x @ sd[f"{p}.mlp.fc1.weight"].T + sd[f"{p}.mlp.fc1.bias"])
        x = _ln(x + mlp @ sd[f"{p}.mlp.fc2.weight"].T + sd[f"{p}.mlp.fc2.bias"], sd, f"{p}.norm2", eps)
    return torch.nn.functional.normalize(x @ sd[head].T, dim=-1).numpy()


def stanford_inputs(folder, texts, kind, length):
    """Stanford ColBERT's tokenization for the jina checkpoint: '. ' placeholder replaced by the marker."""
    from transformers import XLMRobertaTokenizer

    meta = json.loads((folder / "artifact.metadata").read_text())
    tok = XLMRobertaTokenizer.from_pretrained(str(folder))
    batch = [". " + t for t in texts]
    if kind == "query":
        enc = tok(batch, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        ids = enc["input_ids"]
        ids[:, 1] = tok.convert_tokens_to_ids(meta["query_token_id"])
        ids[ids == tok.pad_token_id] = tok.mask_token_id
        return ids, torch.ones_like(ids), None  # attend_to_mask_tokens: true
    enc = tok(batch, padding="longest", truncation="longest_first", max_length=length, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids[:, 1] = tok.convert_tokens_to_ids(meta["doc_token_id"])
    skip = torch.tensor(sorted({tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}))
    return ids, mask, mask.bool() & ~torch.isin(ids, skip)


@pytest.mark.parametrize("variant", ["neox", "interleaved", "base10k"])
def test_jina_equals_independent_reference(ckpts, variant):
    folder = ckpts[variant]
    model = ColBERT.from_pretrained(folder)
    assert model.format == "jina" and model.dim == 16 and model.dtype == torch.float32
    ids, att, _ = stanford_inputs(folder, QUERIES, "query", model.query_length)
    np.testing.assert_array_equal(model.tokenize(QUERIES, "query")["input_ids"].numpy(), ids.numpy())
    np.testing.assert_allclose(model.encode_queries(QUERIES), jina_reference(folder, ids, att), atol=ATOL)
    ids, att, keep = stanford_inputs(folder, DOCS, "document", model.document_length)
    assert ids.shape[1] > 60  # positions far enough for a wrong frequency or offset to show
    ref = jina_reference(folder, ids, att)
    for got, r, k in zip(model.encode_documents(DOCS), ref, keep):
        np.testing.assert_allclose(got, r[k.numpy()], atol=ATOL)


def test_rotary_conventions_differ(ckpts):
    """The check above can tell the conventions apart: the same weights give other vectors."""
    a = ColBERT.from_pretrained(ckpts["neox"]).encode_documents(DOCS[1:2])[0]
    b = ColBERT.from_pretrained(ckpts["interleaved"]).encode_documents(DOCS[1:2])[0]
    c = ColBERT.from_pretrained(ckpts["base10k"]).encode_documents(DOCS[1:2])[0]
    assert np.abs(a - b).max() > 1e-2 and np.abs(a - c).max() > 1e-3


def test_jina_markers_and_query_expansion(ckpts):
    model = ColBERT.from_pretrained(ckpts["neox"])
    tok = model.tokenizer
    q = model.tokenize(["cat"], "query")
    ids = q["input_ids"][0].tolist()
    qm, dm = tok.convert_tokens_to_ids("[QueryMarker]"), tok.convert_tokens_to_ids("[DocumentMarker]")
    assert ids[:2] == [tok.bos_token_id, qm] and ids[3] == tok.eos_token_id
    assert ids[4:] == [tok.mask_token_id] * (model.query_length - 4)
    assert q["attention_mask"].all() and q["keep"].all()  # attend_to_mask_tokens: true
    assert model.tokenize(["cat"], "document")["input_ids"][0, :2].tolist() == [tok.bos_token_id, dm]
    cfg = model.config_dict()
    assert (cfg["query_marker"], cfg["document_marker"], cfg["attend_to_mask_tokens"]) == (
        "[QueryMarker]", "[DocumentMarker]", True)


def test_jina_matryoshka_heads(ckpts):
    folder = ckpts["neox"]
    model = ColBERT.from_pretrained(folder)
    assert model.head_dimensions == [16, 12, 8]
    ids, att, _ = stanford_inputs(folder, QUERIES, "query", model.query_length)
    for size in (12, 8):
        q = model.encode(QUERIES, input_type="query", dimensions=size)
        np.testing.assert_allclose(q, jina_reference(folder, ids, att, head=f"linear_{size}.weight"), atol=ATOL)
    full, cut = model.encode_queries(QUERIES), model.encode_queries(QUERIES, dimensions=4)
    np.testing.assert_allclose(cut, full[..., :4] / np.linalg.norm(full[..., :4], axis=-1, keepdims=True), atol=1e-5)


def test_long_documents_up_to_the_position_limit(ckpts):
    model = ColBERT.from_pretrained(ckpts["neox"], document_length=130)
    long = " ".join(["rotary"] * 400)
    assert model.encode_documents([long])[0].shape == (130, 16)
    with pytest.raises(ValueError, match="exceeds"):
        ColBERT.from_pretrained(ckpts["neox"], document_length=131)


def test_loading_runs_no_remote_code(ckpts, monkeypatch):
    def no_prompt(*_a, **_k):
        raise AssertionError("loading asked a question on stdin (remote code prompt)")

    monkeypatch.setattr(builtins, "input", no_prompt)
    assert ColBERT.from_pretrained(ckpts["neox"]).format == "jina"


def test_mapping_equals_transformers_xlmroberta_without_rotation(tmp_path):
    """rotary_emb_dim 0: the block structure and fused-weight mapping must equal XLMRobertaModel's."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tok = xlmr_tokenizer()
    tok.save_pretrained(str(tmp_path))
    cfg = jina_config(len(tok), rotary_emb_dim=0)
    torch.manual_seed(5)
    hf = XLMRobertaModel(XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"], intermediate_size=cfg["intermediate_size"],
        max_position_embeddings=cfg["max_position_embeddings"], type_vocab_size=1, layer_norm_eps=1e-5,
        initializer_range=0.3, pad_token_id=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        add_pooling_layer=False).eval()
    with torch.no_grad():
        hf.embeddings.position_embeddings.weight.zero_()  # the rotary model has no absolute positions
    s = hf.state_dict()
    sd = {"roberta.embeddings.word_embeddings.weight": s["embeddings.word_embeddings.weight"],
          "roberta.embeddings.token_type_embeddings.weight": s["embeddings.token_type_embeddings.weight"],
          "roberta.emb_ln.weight": s["embeddings.LayerNorm.weight"], "roberta.emb_ln.bias": s["embeddings.LayerNorm.bias"]}
    for i in range(cfg["num_hidden_layers"]):
        a, p = f"encoder.layer.{i}.", f"roberta.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            sd[p + f"mixer.Wqkv.{kind}"] = torch.cat([s[a + f"attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
            sd[p + f"mixer.out_proj.{kind}"] = s[a + f"attention.output.dense.{kind}"]
            sd[p + f"norm1.{kind}"] = s[a + f"attention.output.LayerNorm.{kind}"]
            sd[p + f"mlp.fc1.{kind}"] = s[a + f"intermediate.dense.{kind}"]
            sd[p + f"mlp.fc2.{kind}"] = s[a + f"output.dense.{kind}"]
            sd[p + f"norm2.{kind}"] = s[a + f"output.LayerNorm.{kind}"]
    sd["linear.weight"] = torch.eye(HIDDEN)  # the head is the identity: compare hidden states
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "artifact.metadata").write_text(json.dumps({"query_maxlen": 12, "doc_maxlen": 40,
                                                            "mask_punctuation": False}))
    model = ColBERT.from_pretrained(tmp_path)
    batch = model.tokenize(DOCS, "document")
    with torch.no_grad():
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    for got, r, k in zip(model.encode_documents(DOCS), ref, batch["keep"]):
        np.testing.assert_allclose(got, r[k.numpy()], atol=ATOL)
