"""Tiny, randomly initialised checkpoints in the layouts plaidx.ColBERT loads, for tests.

``make_tiny_checkpoint(tmp_path, layout=...)`` writes a folder and returns its path. Layouts:

- ``"stanford"``: HF_ColBERT (BERT backbone under ``bert.``, ``linear.weight``, ``artifact.metadata``);
- ``"pylate"``: sentence-transformers layout (Transformer + Dense modules, ``[Q] ``/``[D] `` added tokens,
  ``config_sentence_transformers.json``);
- ``"jina"``: jina-colbert-v2 layout (rotary XLM-RoBERTa under ``roberta.`` with fused ``mixer.Wqkv``
  weights, config.json without ``model_type``, ``[QueryMarker]``/``[DocumentMarker]``, bfloat16 weights);
- ``"plain"``: a plain BERT encoder in a sentence-transformers folder (Transformer + Pooling + Normalize).

Everything is seeded and small (hidden 32, 2 layers, 4 heads), so a model loads and encodes in
milliseconds. Tokenizers are built locally (a WordPiece BERT tokenizer or a Unigram XLM-R tokenizer).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import torch

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 4, 64
WORDS = ("the a an cat cats dog dogs sat on mat what is how does late interaction search index query queries "
         "document documents fast model token tokens hello world colbert retrieval multi vector score max sim "
         "text encode plaid engine compressed of and to in for with by this that it be are was were find best "
         "match short long rotary position embedding layer").split()
LAYOUTS = ("stanford", "pylate", "jina", "plain")


@pytest.fixture(scope="module")
def torch_single_thread():
    """Tiny models run fastest on one thread (and do not stall when the machine is busy); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def bert_tokenizer(extra_tokens: tuple[str, ...] = ()):
    """A lowercasing WordPiece tokenizer over a small English vocabulary (BERT special tokens)."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.punctuation) + list(WORDS) + list(string.ascii_lowercase) + list(string.digits)
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits] + ["##s", "##ing", "##ed"]
    vocab = list(dict.fromkeys(vocab))
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=512)
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))
    return tok


def xlmr_tokenizer(extra_tokens: tuple[str, ...] = ("[QueryMarker]", "[DocumentMarker]")):
    """A Unigram (sentencepiece-style) tokenizer with XLM-RoBERTa special tokens."""
    from transformers import XLMRobertaTokenizer

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in WORDS]
    pieces += [("\u2581" + p, -3.0) for p in string.punctuation] + [(p, -3.5) for p in string.punctuation]
    pieces += [(c, -6.0) for c in string.ascii_letters + string.digits] + [("\u2581", -4.0)]
    pieces += [("<mask>", 0.0)]
    seen: dict[str, float] = {}
    for p, s in pieces:
        seen.setdefault(p, s)
    tok = XLMRobertaTokenizer(vocab=list(seen.items()), model_max_length=8192)
    tok.add_tokens(list(extra_tokens))
    return tok


def _bert_config(vocab_size: int, max_positions: int = 128):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                      max_position_embeddings=max_positions, type_vocab_size=2, initializer_range=0.3,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)


def _bert(vocab_size: int, seed: int):
    from transformers import BertModel

    torch.manual_seed(seed)
    model = BertModel(_bert_config(vocab_size))
    with torch.no_grad():  # let LayerNorm affine parameters vary, too
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def make_tiny_checkpoint(tmp_path: Path | str, layout: str = "stanford", *, seed: int = 0, dim: int = 16,
                         query_length: int = 12, document_length: int = 24, attend_to_mask_tokens: bool | None = None,
                         mask_punctuation: bool = True, extra_heads: tuple[int, ...] = (), name: str | None = None,
                         weights: str = "safetensors", **options: Any) -> Path:
    """Write a tiny checkpoint of ``layout`` under tmp_path and return its folder.

    dim: output size of the ColBERT head; extra_heads: Matryoshka head sizes to ship besides it
    (stanford/jina). query_length/document_length: the lengths recorded in the checkpoint.
    attend_to_mask_tokens: recorded flag (default: False for stanford/pylate, True for jina).
    weights: "safetensors" or "bin" (stanford). Options: pylate ``dense`` (list of (out, bias, activation)),
    ``do_query_expansion``, ``skiplist_words``; jina ``rotary_emb_base``, ``interleaved``, ``weights_dtype``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(tmp_path) / (name or f"tiny-{layout}-{seed}")
    root.mkdir(parents=True, exist_ok=True)
    writer = {"stanford": _stanford, "pylate": _pylate, "jina": _jina, "plain": _plain}[layout]
    writer(root, seed=seed, dim=dim, query_length=query_length, document_length=document_length,
           attend=attend_to_mask_tokens, mask_punctuation=mask_punctuation, extra_heads=extra_heads,
           weights=weights, **options)
    return root


def _stanford(root: Path, *, seed, dim, query_length, document_length, attend, mask_punctuation, extra_heads,
              weights, **_):
    tok = bert_tokenizer()
    tok.save_pretrained(str(root))
    model = _bert(len(tok), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    sd = {f"bert.{k}": v for k, v in model.state_dict().items()}
    sd["linear.weight"] = torch.randn(dim, HIDDEN, generator=gen) * 0.3
    for size in extra_heads:
        sd[f"linear_{size}.weight"] = torch.randn(size, HIDDEN, generator=gen) * 0.3
    if weights == "bin":
        torch.save({k: v.contiguous().clone() for k, v in sd.items()}, root / "pytorch_model.bin")
    else:
        _save_tensors(root / "model.safetensors", sd)
    cfg = model.config.to_dict()
    cfg["architectures"] = ["HF_ColBERT"]
    _write_json(root / "config.json", cfg)
    _write_json(root / "artifact.metadata", {
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
        "query_maxlen": query_length, "doc_maxlen": document_length, "dim": dim, "similarity": "cosine",
        "attend_to_mask_tokens": bool(attend), "mask_punctuation": mask_punctuation,
        "nbits": 2, "kmeans_niters": 4, "checkpoint": "tiny", "interaction": "colbert",
        "meta": {"hostname": "test", "git_branch": "none"},  # unknown keys, to be ignored
    })


def _pylate(root: Path, *, seed, dim, query_length, document_length, attend, mask_punctuation, extra_heads,
            weights, dense=None, do_query_expansion=True, skiplist_words=None, **_):
    tok = bert_tokenizer(extra_tokens=("[Q] ", "[D] "))
    tok.save_pretrained(str(root))
    model = _bert(len(tok), seed)
    model.save_pretrained(str(root))
    dense = dense or [(24, True, "torch.nn.modules.activation.Tanh"), (dim, False, "torch.nn.modules.linear.Identity")]
    gen = torch.Generator().manual_seed(seed + 1)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    width = HIDDEN
    for i, (out, bias, act) in enumerate(dense, start=1):
        path = f"{i}_Dense"
        tensors = {"linear.weight": torch.randn(out, width, generator=gen) * 0.3}
        if bias:
            tensors["linear.bias"] = torch.randn(out, generator=gen) * 0.1
        _save_tensors(root / path / "model.safetensors", tensors)
        _write_json(root / path / "config.json", {"in_features": width, "out_features": out, "bias": bias,
                                                  "activation_function": act})
        modules.append({"idx": i, "name": str(i), "path": path, "type": "pylate.models.Dense.Dense"})
        width = out
    _write_json(root / "modules.json", modules)
    _write_json(root / "sentence_bert_config.json", {"max_seq_length": document_length - 1, "do_lower_case": False})
    _write_json(root / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": "5.0.0", "pylate": "1.3.0"},
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": query_length,
        "document_length": document_length, "attend_to_expansion_tokens": bool(attend),
        "skiplist_words": list(string.punctuation) if skiplist_words is None else list(skiplist_words),
        "do_query_expansion": do_query_expansion,
    })


def _plain(root: Path, *, seed, document_length, **_):
    tok = bert_tokenizer()
    tok.save_pretrained(str(root))
    _bert(len(tok), seed).save_pretrained(str(root))
    _write_json(root / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(root / "1_Pooling" / "config.json", {"word_embedding_dimension": HIDDEN,
                                                     "pooling_mode_mean_tokens": True})
    _write_json(root / "sentence_bert_config.json", {"max_seq_length": document_length, "do_lower_case": False})


def jina_state_dict(vocab_size: int, dim: int, seed: int, extra_heads: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """Random weights named as in jina-colbert-v2's model.safetensors."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def ln(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1.0 + rnd(HIDDEN, scale=0.1), f"{prefix}.bias": rnd(HIDDEN, scale=0.1)}

    sd = {"roberta.embeddings.word_embeddings.weight": rnd(vocab_size, HIDDEN, scale=1.0),
          "roberta.embeddings.token_type_embeddings.weight": rnd(1, HIDDEN),
          **ln("roberta.emb_ln")}
    for i in range(LAYERS):
        p = f"roberta.encoder.layers.{i}"
        sd.update({f"{p}.mixer.Wqkv.weight": rnd(3 * HIDDEN, HIDDEN), f"{p}.mixer.Wqkv.bias": rnd(3 * HIDDEN, scale=0.1),
                   f"{p}.mixer.out_proj.weight": rnd(HIDDEN, HIDDEN), f"{p}.mixer.out_proj.bias": rnd(HIDDEN, scale=0.1),
                   f"{p}.mlp.fc1.weight": rnd(INTERMEDIATE, HIDDEN), f"{p}.mlp.fc1.bias": rnd(INTERMEDIATE, scale=0.1),
                   f"{p}.mlp.fc2.weight": rnd(HIDDEN, INTERMEDIATE), f"{p}.mlp.fc2.bias": rnd(HIDDEN, scale=0.1),
                   **ln(f"{p}.norm1"), **ln(f"{p}.norm2")})
    sd["roberta.pooler.dense.weight"] = rnd(HIDDEN, HIDDEN)  # present in the real file, unused
    sd["roberta.pooler.dense.bias"] = rnd(HIDDEN)
    sd["linear.weight"] = rnd(dim, HIDDEN)
    for size in extra_heads:
        sd[f"linear_{size}.weight"] = rnd(size, HIDDEN)
    return sd


def jina_config(vocab_size: int, rotary_emb_base: float = 20000.0, interleaved: bool | None = None,
                rotary_emb_dim: int | None = None) -> dict[str, Any]:
    cfg = {
        "_name_or_path": "jinaai/jina-colbert-v2", "architectures": ["HF_ColBERT"],
        "auto_map": {"AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
                     "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_xlm_roberta.XLMRobertaModel"},
        "attention_probs_dropout_prob": 0.1, "bos_token_id": 0, "eos_token_id": 2, "classifier_dropout": None,
        "emb_pooler": None, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE, "layer_norm_eps": 1e-05,
        "load_trained_adapters": False, "lora_adaptations": None, "lora_alpha": 1, "lora_dropout_p": 0.0,
        "lora_main_params_trainable": False, "lora_rank": 4, "matryoshka_dimensions": None,
        "max_position_embeddings": 130, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "output_past": True, "pad_token_id": 1, "position_embedding_type": "rotary",
        "rotary_emb_base": rotary_emb_base, "torch_dtype": "bfloat16", "truncate_dim": None,
        "type_vocab_size": 1, "use_cache": False, "use_flash_attn": True, "vocab_size": vocab_size,
    }
    if interleaved is not None:
        cfg["rotary_emb_interleaved"] = interleaved
    if rotary_emb_dim is not None:
        cfg["rotary_emb_dim"] = rotary_emb_dim
    return cfg


def _jina(root: Path, *, seed, dim, query_length, document_length, attend, mask_punctuation, extra_heads,
          weights, rotary_emb_base=20000.0, interleaved=None, rotary_emb_dim=None, weights_dtype=torch.bfloat16, **_):
    tok = xlmr_tokenizer()
    tok.save_pretrained(str(root))
    sd = jina_state_dict(len(tok), dim, seed, extra_heads)
    _save_tensors(root / "model.safetensors", {k: v.to(weights_dtype) for k, v in sd.items()})
    _write_json(root / "config.json", jina_config(len(tok), rotary_emb_base, interleaved, rotary_emb_dim))
    _write_json(root / "artifact.metadata", {
        "query_token_id": "[QueryMarker]", "doc_token_id": "[DocumentMarker]", "query_token": "[QueryMarker]",
        "doc_token": "[DocumentMarker]", "query_maxlen": query_length, "doc_maxlen": document_length, "dim": dim,
        "similarity": "cosine", "attend_to_mask_tokens": True if attend is None else bool(attend),
        "mask_punctuation": mask_punctuation, "model_name": "jinaai/jina-colbert-v2",
    })
