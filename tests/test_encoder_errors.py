"""Bad input and broken checkpoints give errors that name the problem."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from encoder_fixtures import (
    make_tiny_checkpoint,
    torch_single_thread,  # noqa: F401
)
from safetensors.torch import load_file, save_file

from plaidx.encoder import CheckpointError, ColBERT

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("err-ckpts")
    return {layout: make_tiny_checkpoint(root, layout, seed=7) for layout in ("stanford", "pylate", "jina")}


@pytest.fixture(scope="module")
def model(base):
    return ColBERT.from_pretrained(base["stanford"])


@pytest.fixture
def copy(base, tmp_path):
    def make(layout: str):
        dst = tmp_path / layout
        shutil.copytree(base[layout], dst)
        return dst
    return make


# -- texts and arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["encode_queries", "encode_documents", "encode", "count_tokens", "tokenize"])
def test_bad_texts(model, method):
    call = getattr(model, method)
    with pytest.raises(ValueError, match="empty: nothing"):
        call([])
    with pytest.raises(ValueError, match=r"texts\[1\] is an empty string"):
        call(["cat", ""])
    with pytest.raises(ValueError, match=r"texts\[0\] is an empty string"):
        call(["  \n"])
    with pytest.raises(TypeError, match=r"texts\[2\] is a int"):
        call(["cat", "dog", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType"):
        call([None])
    with pytest.raises(TypeError, match="single str; wrap it in a list"):
        call("the cat")
    with pytest.raises(TypeError, match="list of strings"):
        call(None)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="input_type must be 'query' or 'document', got 'passage'"):
        model.encode(["cat"], input_type="passage")
    with pytest.raises(ValueError, match="input_type"):
        model.tokenize(["cat"], input_type="queries")
    with pytest.raises(ValueError, match="dimensions=32 is not supported"):
        model.encode(["cat"], dimensions=32)
    with pytest.raises(TypeError, match="dimensions must be an integer"):
        model.encode_queries(["cat"], dimensions=8.0)
    with pytest.raises(ValueError, match="bsize must be a positive integer"):
        model.encode_documents(["cat"], bsize=0)
    with pytest.raises(ValueError, match="dtype"):
        ColBERT.from_pretrained(model.path, dtype="int8")
    with pytest.raises(ValueError, match="device"):
        ColBERT.from_pretrained(model.path, device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ColBERT.from_pretrained(model.path, device="cuda")


# -- checkpoint files ----------------------------------------------------------------------------------


def test_missing_folder_or_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        ColBERT.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        ColBERT.from_pretrained(tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        ColBERT.from_pretrained(tmp_path / "empty")
    with pytest.raises(TypeError, match="name_or_path"):
        ColBERT.from_pretrained(42)


def test_missing_or_corrupt_weights(copy):
    folder = copy("stanford")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        ColBERT.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ColBERT.from_pretrained(folder)


def test_missing_tokenizer_files(copy):
    """transformers builds a tokenizer with no vocabulary from a folder without its files (every word [UNK])."""
    folder = copy("stanford")
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / f).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="has no vocabulary.*lacks its tokenizer files"):
        ColBERT.from_pretrained(folder)


def test_malformed_metadata(copy):
    folder = copy("stanford")
    (folder / "artifact.metadata").write_text("{ not json")
    with pytest.raises(CheckpointError, match="malformed artifact.metadata"):
        ColBERT.from_pretrained(folder)
    (folder / "artifact.metadata").write_text(json.dumps({"query_maxlen": "32"}))
    with pytest.raises(CheckpointError, match="query_maxlen must be a positive integer"):
        ColBERT.from_pretrained(folder)
    (folder / "artifact.metadata").write_text(json.dumps({"query_token_id": "[NOT-A-TOKEN]"}))
    with pytest.raises(CheckpointError, match=r"query marker '\[NOT-A-TOKEN\]' is not a token"):
        ColBERT.from_pretrained(folder)
    (folder / "artifact.metadata").write_text(json.dumps({"attend_to_mask_tokens": "yes"}))
    with pytest.raises(CheckpointError, match="attend_to_mask_tokens must be true or false"):
        ColBERT.from_pretrained(folder)


def test_bad_head(copy):
    folder = copy("stanford")
    sd = load_file(str(folder / "model.safetensors"))
    sd["linear.weight"] = torch.zeros(16, 7)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'linear.weight' has shape \(16, 7\)"):
        ColBERT.from_pretrained(folder)
    del sd["linear.weight"]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="no 'linear.weight'"):
        ColBERT.from_pretrained(folder)


def test_missing_backbone_weights(copy):
    folder = copy("stanford")
    sd = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if ".layer.1." not in k}
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="do not match its config.json"):
        ColBERT.from_pretrained(folder)


def test_broken_pylate_files(copy):
    folder = copy("pylate")
    (folder / "modules.json").write_text(json.dumps({"0": "Transformer"}))
    with pytest.raises(CheckpointError, match="malformed modules.json"):
        ColBERT.from_pretrained(folder)
    shutil.rmtree(folder)
    folder = copy("pylate")
    cfg = json.loads((folder / "1_Dense" / "config.json").read_text())
    (folder / "1_Dense" / "config.json").write_text(json.dumps({**cfg, "out_features": 99}))
    with pytest.raises(CheckpointError, match="Dense weights in .*1_Dense do not match"):
        ColBERT.from_pretrained(folder)
    (folder / "1_Dense" / "config.json").write_text(json.dumps({**cfg, "activation_function": "os.system"}))
    with pytest.raises(CheckpointError, match="activation_function 'os.system' is not supported"):
        ColBERT.from_pretrained(folder)
    (folder / "1_Dense" / "config.json").write_text(json.dumps(cfg))
    (folder / "config_sentence_transformers.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match="malformed config_sentence_transformers.json"):
        ColBERT.from_pretrained(folder)


def test_broken_jina_files(copy):
    folder = copy("jina")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in cfg.items()
                                                    if k not in ("position_embedding_type", "auto_map")}))
    with pytest.raises(CheckpointError, match="no 'model_type'.*does not run remote code"):
        ColBERT.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="incomplete: missing roberta.encoder.layers.2"):
        ColBERT.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(CheckpointError, match="unexpected .*check num_hidden_layers"):
        ColBERT.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "hidden_act": "swiglu"}))
    with pytest.raises(CheckpointError, match="hidden_act 'swiglu'"):
        ColBERT.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        ColBERT.from_pretrained(folder)
