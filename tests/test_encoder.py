"""plaidx.ColBERT on tiny Stanford, PyLate and plain checkpoints, checked against transformers' own models.

Each reference below re-derives the inputs the way the reference implementation does it (Stanford:
'. ' placeholder overwritten by the marker, pad ids replaced by [MASK]; PyLate: prefix id inserted after
the first token, padding with the mask token) and runs transformers' BertModel with the checkpoint's
weights, so a wrong marker, mask, skiplist, head or normalisation shows up as a mismatch.
"""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch
from encoder_fixtures import (
    WORDS,
    make_tiny_checkpoint,
    torch_single_thread,  # noqa: F401
)
from safetensors.torch import load_file

from plaidx.encoder import ColBERT

pytestmark = pytest.mark.usefixtures("torch_single_thread")

QUERIES = ["what is late interaction?", "cat", "how does the plaid engine find the best match for a long query "
           "with many many tokens in it"]
DOCS = ["the cat sat on the mat.", "hello, world! colbert is fast; plaid is compressed.",
        "a", "late interaction: multi vector retrieval (max sim) of text tokens with a compressed index"]
ATOL = 2e-5


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder-ckpts")
    return {
        "stanford": make_tiny_checkpoint(root, "stanford", seed=1, extra_heads=(8,)),
        "stanford_attend": make_tiny_checkpoint(root, "stanford", seed=1, attend_to_mask_tokens=True,
                                                name="stanford-attend"),
        "stanford_nopunct": make_tiny_checkpoint(root, "stanford", seed=1, mask_punctuation=False,
                                                 name="stanford-nopunct"),
        "stanford_bin": make_tiny_checkpoint(root, "stanford", seed=1, weights="bin", name="stanford-bin"),
        "pylate": make_tiny_checkpoint(root, "pylate", seed=2),
        "pylate_attend": make_tiny_checkpoint(root, "pylate", seed=2, attend_to_mask_tokens=True, name="pylate-attend"),
        "pylate_noexp": make_tiny_checkpoint(root, "pylate", seed=2, do_query_expansion=False, name="pylate-noexp"),
        "plain": make_tiny_checkpoint(root, "plain", seed=3),
    }


def _bert(folder, prefix: str = ""):
    """transformers' BertModel holding the checkpoint's backbone weights (loaded by name, no plaidx code)."""
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig.from_pretrained(str(folder)), add_pooling_layer=False).eval()
    sd = {k[len(prefix):]: v for k, v in load_file(str(folder / "model.safetensors")).items() if k.startswith(prefix)}
    missing, _ = model.load_state_dict(sd, strict=False)
    assert not missing
    return model


def _tok(folder):
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(folder))


def _normalize(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.double(), dim=-1).numpy()


def stanford_reference(folder, texts, kind, head="linear.weight", length=None):
    """Stanford ColBERT's QueryTokenizer/DocTokenizer + ColBERT.query/doc, re-derived."""
    meta = json.loads((folder / "artifact.metadata").read_text())
    tok, bert = _tok(folder), _bert(folder, "bert.")
    weight = load_file(str(folder / "model.safetensors"))[head]
    batch = [". " + t for t in texts]
    if kind == "query":
        length = length or meta["query_maxlen"]
        enc = tok(batch, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        ids[:, 1] = tok.convert_tokens_to_ids(meta["query_token_id"])
        ids[ids == tok.pad_token_id] = tok.mask_token_id
        if meta["attend_to_mask_tokens"]:
            mask[ids == tok.mask_token_id] = 1
    else:
        enc = tok(batch, padding="longest", truncation="longest_first", max_length=length or meta["doc_maxlen"],
                  return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        ids[:, 1] = tok.convert_tokens_to_ids(meta["doc_token_id"])
    with torch.no_grad():
        out = bert(input_ids=ids, attention_mask=mask).last_hidden_state @ weight.T
    vecs = _normalize(out)
    if kind == "query":
        return vecs
    skip = {tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation} if meta["mask_punctuation"] else set()
    keep = mask.bool() & ~torch.isin(ids, torch.tensor(sorted(skip) or [-1]))
    return [v[k.numpy()] for v, k in zip(vecs, keep)]


def pylate_reference(folder, texts, kind):
    """PyLate's ColBERT.tokenize + Transformer + Dense modules, re-derived."""
    from transformers import BertModel

    stc = json.loads((folder / "config_sentence_transformers.json").read_text())
    tok = _tok(folder)
    tok.pad_token_id = tok.mask_token_id  # PyLate pads with the mask token
    bert = BertModel.from_pretrained(str(folder)).eval()
    length = stc["query_length"] if kind == "query" else stc["document_length"]
    expand = kind == "query" and stc["do_query_expansion"]
    enc = tok(texts, padding="max_length" if expand else "longest", truncation=True, max_length=length - 1,
              return_tensors="pt")
    prefix = tok.convert_tokens_to_ids(stc["query_prefix"] if kind == "query" else stc["document_prefix"])

    def insert(x, value):
        return torch.cat([x[:, :1], torch.full((x.shape[0], 1), value, dtype=x.dtype), x[:, 1:]], dim=1)

    ids, mask = insert(enc["input_ids"], prefix), insert(enc["attention_mask"], 1)
    real = mask.clone()
    if kind == "query" and stc["attend_to_expansion_tokens"]:
        mask.fill_(1)
    with torch.no_grad():
        x = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        for path in sorted(p.name for p in folder.glob("*_Dense")):
            cfg = json.loads((folder / path / "config.json").read_text())
            w = load_file(str(folder / path / "model.safetensors"))
            x = x @ w["linear.weight"].T + (w["linear.bias"] if cfg["bias"] else 0)
            x = torch.tanh(x) if cfg["activation_function"].endswith("Tanh") else x
    vecs = _normalize(x)
    if expand:
        return vecs
    if kind == "query":
        return [v[k.numpy().astype(bool)] for v, k in zip(vecs, real)]
    skip = torch.tensor([tok.convert_tokens_to_ids(w) for w in stc["skiplist_words"]])
    keep = real.bool() & ~torch.isin(ids, skip)
    return [v[k.numpy()] for v, k in zip(vecs, keep)]


def _assert_docs_equal(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, atol=ATOL)


# -- Stanford (format 1) -------------------------------------------------------------------------------


def test_stanford_queries_and_documents_equal_reference(ckpts):
    folder = ckpts["stanford"]
    model = ColBERT.from_pretrained(folder)
    assert (model.format, model.dim, model.query_length, model.document_length) == ("stanford", 16, 12, 24)
    q = model.encode_queries(QUERIES)
    assert q.shape == (3, 12, 16) and q.dtype == np.float32
    np.testing.assert_allclose(q, stanford_reference(folder, QUERIES, "query"), atol=ATOL)
    _assert_docs_equal(model.encode_documents(DOCS), stanford_reference(folder, DOCS, "document"))


def test_stanford_marker_placement_and_mask_padding(ckpts):
    model = ColBERT.from_pretrained(ckpts["stanford"])
    tok = model.tokenizer
    qi = model.tokenize(["the cat"], "query")
    ids = qi["input_ids"][0].tolist()
    assert ids[:5] == [tok.cls_token_id, tok.convert_tokens_to_ids("[unused0]"),
                       *tok("the cat", add_special_tokens=False)["input_ids"], tok.sep_token_id]
    assert ids[5:] == [tok.mask_token_id] * 7 and len(ids) == model.query_length
    assert qi["attention_mask"][0].tolist() == [1] * 5 + [0] * 7  # attend_to_mask_tokens: false
    assert bool(qi["keep"].all())  # ... but all query_length vectors are kept
    di = model.tokenize(["the cat", "the cat sat on the mat"], "document")
    assert di["input_ids"][0, :2].tolist() == [tok.cls_token_id, tok.convert_tokens_to_ids("[unused1]")]
    assert di["input_ids"][0, 4].item() == tok.sep_token_id and di["input_ids"][0, 5:].eq(tok.pad_token_id).all()
    assert di["keep"][0].tolist() == [True] * 5 + [False] * 4


def test_stanford_attention_to_mask_tokens(ckpts):
    plain, attend = ColBERT.from_pretrained(ckpts["stanford"]), ColBERT.from_pretrained(ckpts["stanford_attend"])
    assert attend.tokenize(["cat"], "query")["attention_mask"].all()
    qa = attend.encode_queries(QUERIES)
    np.testing.assert_allclose(qa, stanford_reference(ckpts["stanford_attend"], QUERIES, "query"), atol=ATOL)
    # Same weights: attending to the [MASK] positions changes the real tokens' vectors, too.
    assert np.abs(qa[1, :3] - plain.encode_queries(QUERIES)[1, :3]).max() > 1e-3
    # Not attended, the padding cannot influence the real tokens: a longer query_length leaves them alone.
    short, longer = plain.encode_queries(["cat"]), ColBERT.from_pretrained(ckpts["stanford"], query_length=20)
    np.testing.assert_allclose(longer.encode_queries(["cat"])[0, :4], short[0, :4], atol=ATOL)
    attend_longer = ColBERT.from_pretrained(ckpts["stanford_attend"], query_length=20).encode_queries(["cat"])
    assert np.abs(attend_longer[0, :4] - attend.encode_queries(["cat"])[0, :4]).max() > 1e-4
    np.testing.assert_allclose(attend_longer, stanford_reference(ckpts["stanford_attend"], ["cat"], "query", length=20),
                               atol=ATOL)


def test_a_query_length_per_call_equals_a_model_built_with_it(ckpts):
    """encode_queries(query_length=n) reads the queries as a model made with query_length n does (Stanford's
    reference at that length), and says what to do with a length the model cannot read."""
    plain = ColBERT.from_pretrained(ckpts["stanford"])
    longer = ColBERT.from_pretrained(ckpts["stanford"], query_length=20)
    got = plain.encode_queries(QUERIES, query_length=20)
    assert got.shape == (3, 20, 16)
    np.testing.assert_allclose(got, longer.encode_queries(QUERIES), atol=ATOL)
    np.testing.assert_allclose(got, stanford_reference(ckpts["stanford"], QUERIES, "query", length=20), atol=ATOL)
    assert plain.encode_queries(QUERIES).shape == (3, 12, 16)  # the model's own length is untouched
    with pytest.raises(ValueError, match="leaves no room for text"):
        plain.encode_queries(QUERIES, query_length=1)
    with pytest.raises(ValueError, match="exceeds what the model supports"):
        plain.encode_queries(QUERIES, query_length=10**6)


def test_stanford_skiplist_drops_punctuation(ckpts):
    with_skip = ColBERT.from_pretrained(ckpts["stanford"]).encode_documents(["hello, world!", "the cat sat."])
    no_skip = ColBERT.from_pretrained(ckpts["stanford_nopunct"]).encode_documents(["hello, world!", "the cat sat."])
    # [CLS] [D] hello , world ! [SEP] -> 5 kept of 7; [CLS] [D] the cat sat . [SEP] -> 6 of 7
    assert [len(d) for d in with_skip] == [5, 6]
    assert [len(d) for d in no_skip] == [7, 7]
    np.testing.assert_allclose(with_skip[0], no_skip[0][[0, 1, 2, 4, 6]], atol=ATOL)
    _assert_docs_equal(no_skip, stanford_reference(ckpts["stanford_nopunct"], ["hello, world!", "the cat sat."],
                                                   "document"))


def test_stanford_pytorch_bin_weights(ckpts):
    a = ColBERT.from_pretrained(ckpts["stanford"])
    b = ColBERT.from_pretrained(ckpts["stanford_bin"])
    np.testing.assert_allclose(a.encode_queries(QUERIES), b.encode_queries(QUERIES), atol=1e-6)


def test_threads_encoding_queries_and_documents_at_once_get_their_own_vectors(ckpts):
    """The fast tokenizer keeps its truncation length as state: queries and documents tokenized at once in two
    threads must not read with each other's length."""
    import threading

    m = ColBERT.from_pretrained(ckpts["stanford"], device="cpu")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(list(WORDS), int(rng.integers(1, 40)))) for _ in range(40)]
    want_q, want_d = m.encode_queries(texts), m.encode_documents(texts)
    problems: list[str] = []

    def run(kind: str) -> None:
        for _ in range(6):
            try:
                if kind == "q":
                    assert np.allclose(m.encode_queries(texts, bsize=7), want_q, atol=1e-5)
                else:
                    got = m.encode_documents(texts, bsize=5)
                    assert all(x.shape == y.shape and np.allclose(x, y, atol=1e-5) for x, y in zip(got, want_d))
            except BaseException as exc:  # noqa: BLE001 - reported below
                problems.append(f"{kind}: {type(exc).__name__} {exc}")

    real = m._text.tokenizer
    inside, most = [0], [0]
    guard = threading.Lock()

    class Counting:  # the tokenizer, counting the calls in flight at once
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, *args, **kwargs):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            try:
                threading.Event().wait(0.002)  # widen the window a race needs
                return real(*args, **kwargs)
            finally:
                with guard:
                    inside[0] -= 1

    m._text.tokenizer = Counting()
    for _ in range(2):
        threads = [threading.Thread(target=run, args=(k,)) for k in "qdqd"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not problems, problems[:3]
    assert most[0] == 1  # one tokenizer call at a time


def test_truncation_at_lengths(ckpts):
    model = ColBERT.from_pretrained(ckpts["stanford"], query_length=8, document_length=10)
    long = " ".join(["cat"] * 50)
    assert model.tokenize([long], "query")["input_ids"].shape == (1, 8)
    ids = model.tokenize([long], "document")["input_ids"][0].tolist()
    assert len(ids) == 10 and ids[-1] == model.tokenizer.sep_token_id
    assert model.encode_documents([long])[0].shape == (10, 16)
    np.testing.assert_allclose(model.encode_queries([long]),
                               stanford_reference(ckpts["stanford"], [long], "query", length=8), atol=ATOL)
    _assert_docs_equal(model.encode_documents([long, "cat"]),
                       stanford_reference(ckpts["stanford"], [long, "cat"], "document", length=10))


# -- PyLate (format 2) ---------------------------------------------------------------------------------


def test_pylate_equals_reference(ckpts):
    folder = ckpts["pylate"]
    model = ColBERT.from_pretrained(folder)
    assert (model.format, model.dim, model.query_length, model.document_length) == ("pylate", 16, 12, 24)
    tok = model.tokenizer
    ids = model.tokenize(["cat"], "query")["input_ids"][0].tolist()
    assert ids[:4] == [tok.cls_token_id, tok.convert_tokens_to_ids("[Q] "), tok.convert_tokens_to_ids("cat"),
                       tok.sep_token_id]
    assert ids[4:] == [tok.mask_token_id] * 8
    assert model.tokenize(["cat"], "document")["input_ids"][0, 1].item() == tok.convert_tokens_to_ids("[D] ")
    np.testing.assert_allclose(model.encode_queries(QUERIES), pylate_reference(folder, QUERIES, "query"), atol=ATOL)
    _assert_docs_equal(model.encode_documents(DOCS), pylate_reference(folder, DOCS, "document"))


def test_pylate_attend_to_expansion_tokens(ckpts):
    model = ColBERT.from_pretrained(ckpts["pylate_attend"])
    assert model.tokenize(QUERIES, "query")["attention_mask"].all()
    q = model.encode_queries(QUERIES)
    np.testing.assert_allclose(q, pylate_reference(ckpts["pylate_attend"], QUERIES, "query"), atol=ATOL)
    assert np.abs(q - ColBERT.from_pretrained(ckpts["pylate"]).encode_queries(QUERIES)).max() > 1e-3


def test_pylate_without_query_expansion(ckpts):
    folder = ckpts["pylate_noexp"]
    model = ColBERT.from_pretrained(folder)
    q = model.encode_queries(QUERIES)
    assert q.shape == (3, 12, 16)
    ref = pylate_reference(folder, QUERIES, "query")
    for i, r in enumerate(ref):
        np.testing.assert_allclose(q[i, :len(r)], r, atol=ATOL)
        assert not q[i, len(r):].any()  # no expansion: zero vectors after the query's own tokens
    assert model.config_dict()["query_expansion"] is False


# -- plain transformers encoder (format 4) -------------------------------------------------------------


def test_plain_encoder_equals_transformers(ckpts):
    from transformers import BertModel

    folder = ckpts["plain"]
    model = ColBERT.from_pretrained(folder)
    assert (model.format, model.dim, model.query_length, model.document_length) == ("plain", 32, 32, 24)
    tok = _tok(folder)
    bert = BertModel.from_pretrained(str(folder)).eval()
    enc = tok(DOCS, padding="longest", truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        ref = _normalize(bert(**enc).last_hidden_state)
    docs = model.encode_documents(DOCS)
    _assert_docs_equal(docs, [r[m.numpy().astype(bool)] for r, m in zip(ref, enc["attention_mask"])])
    ids = model.tokenize(["cat!"], "query")["input_ids"][0].tolist()
    assert ids == [tok.cls_token_id, tok.convert_tokens_to_ids("cat"), tok.convert_tokens_to_ids("!"), tok.sep_token_id]
    q = model.encode_queries(["cat!"])
    assert q.shape == (1, 32, 32)
    np.testing.assert_allclose(q[0, :4], model.encode_documents(["cat!"])[0], atol=ATOL)  # no markers
    assert not q[0, 4:].any()


# -- rules shared by every format ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["stanford", "pylate", "plain"])
def test_batching_and_order_do_not_change_results(ckpts, layout):
    model = ColBERT.from_pretrained(ckpts[layout])
    texts = DOCS + QUERIES + ["cat cat cat", "the"]
    one = model.encode_documents(texts, bsize=1)
    many = model.encode_documents(texts, bsize=4)
    _assert_docs_equal(many, one)
    for d in many:
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model.encode_queries(texts, bsize=3), model.encode_queries(texts, bsize=100), atol=ATOL)
    rev = model.encode_documents(texts[::-1], bsize=4)[::-1]
    _assert_docs_equal(rev, one)


def test_dimensions_heads_and_truncation(ckpts):
    folder = ckpts["stanford"]
    model = ColBERT.from_pretrained(folder)
    assert model.head_dimensions == [16, 8]
    # A size with its own head uses that head.
    q8 = model.encode_queries(QUERIES, dimensions=8)
    np.testing.assert_allclose(q8, stanford_reference(folder, QUERIES, "query", head="linear_8.weight"), atol=ATOL)
    # Other sizes: the first components of the full vectors, renormalised.
    full = model.encode_documents(DOCS)
    cut = model.encode_documents(DOCS, dimensions=5)
    for f, c in zip(full, cut):
        assert c.shape == (f.shape[0], 5)
        np.testing.assert_allclose(c, f[:, :5] / np.linalg.norm(f[:, :5], axis=1, keepdims=True), atol=ATOL)
    np.testing.assert_allclose(model.encode(QUERIES, input_type="query", dimensions=16), model.encode_queries(QUERIES))
    _assert_docs_equal(model.encode(DOCS, input_type="document"), full)
    for bad in (0, 17, -8):
        with pytest.raises(ValueError, match="dimensions"):
            model.encode_queries(QUERIES, dimensions=bad)
    with pytest.raises(TypeError, match="dimensions"):
        model.encode(DOCS, dimensions="8")


def test_progress_bar_and_dtype_choice(ckpts, capsys):
    model = ColBERT.from_pretrained(ckpts["plain"], device="cpu", dtype="float32")
    assert model.device.type == "cpu" and model.dtype == torch.float32
    model.encode_documents(DOCS, bsize=2, show_progress_bar=True)
    assert "documents" in capsys.readouterr().err
    model.encode_documents(DOCS, bsize=2)  # short jobs: no bar by default
    assert capsys.readouterr().err == ""
    assert ColBERT.from_pretrained(ckpts["plain"], device="cpu").dtype == torch.float32  # CPU default


def test_config_dict_round_trip(ckpts):
    model = ColBERT.from_pretrained(ckpts["pylate"], query_length=10, document_length=20)
    cfg = json.loads(json.dumps(model.config_dict()))
    assert cfg["name_or_path"] == str(ckpts["pylate"]) and cfg["dim"] == 16 and cfg["format"] == "pylate"
    assert (cfg["query_length"], cfg["document_length"], cfg["query_marker"]) == (10, 20, "[Q] ")
    again = ColBERT.from_config_dict(cfg)
    np.testing.assert_allclose(again.encode_queries(QUERIES), model.encode_queries(QUERIES), atol=1e-6)
    with pytest.raises(ValueError, match="dimensions|produces"):
        ColBERT.from_config_dict({**cfg, "dim": 99})


def test_count_tokens_and_budget(ckpts):
    model = ColBERT.from_pretrained(ckpts["stanford"])
    long = " ".join(["cat"] * 40)
    assert model.count_tokens(["the cat sat", long]) == [3, 40]  # no truncation
    assert model.count_tokens(["the cat sat"], add_special_tokens=True) == [6]
    assert model.max_document_tokens == 24 - 3
    assert model.tokenizer is not None and model.name_or_path == str(ckpts["stanford"])


def test_length_overrides_are_checked(ckpts):
    with pytest.raises(ValueError, match="exceeds"):
        ColBERT.from_pretrained(ckpts["stanford"], document_length=10_000)
    with pytest.raises(ValueError, match="no room"):
        ColBERT.from_pretrained(ckpts["stanford"], query_length=3)
    with pytest.raises(ValueError, match="positive"):
        ColBERT.from_pretrained(ckpts["stanford"], query_length=0)


def test_hub_name_is_read_from_the_local_cache(ckpts, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    snap = cache / "models--tiny-org--tiny-colbert" / "snapshots" / ("0" * 40)
    shutil.copytree(ckpts["stanford"], snap)
    (cache / "models--tiny-org--tiny-colbert" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-colbert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = ColBERT.from_pretrained("tiny-org/tiny-colbert")
    assert model.name_or_path == "tiny-org/tiny-colbert" and model.dim == 16
    np.testing.assert_allclose(model.encode_queries(["cat"]),
                               ColBERT.from_pretrained(ckpts["stanford"]).encode_queries(["cat"]), atol=1e-6)
    from plaidx.encoder import CheckpointError

    with pytest.raises(CheckpointError, match="offline"):
        ColBERT.from_pretrained("tiny-org/not-cached")


def test_matryoshka_head_names():
    from plaidx.encoder import CheckpointError
    from plaidx.encoder.heads import stanford_projection

    g = torch.Generator().manual_seed(0)
    heads = {"linear.weight": torch.randn(16, 32, generator=g), "linear_8.weight": torch.randn(8, 32, generator=g),
             "linears.4.weight": torch.randn(4, 32, generator=g), "linear_16.weight": torch.randn(16, 32, generator=g)}
    proj = stanford_projection(heads, 32)
    assert proj.head_sizes == [16, 8, 4]  # a same-size duplicate does not replace the main head
    x = torch.randn(2, 3, 32, generator=g)
    torch.testing.assert_close(proj(x, 4), x @ heads["linears.4.weight"].T)
    torch.testing.assert_close(proj(x), x @ heads["linear.weight"].T)
    with pytest.raises(CheckpointError, match="its name says 12"):
        stanford_projection({**heads, "linear_12.weight": torch.randn(10, 32)}, 32)
