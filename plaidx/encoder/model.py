"""``plaidx.ColBERT``: text in, the per-token embeddings that a plaidx index stores out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import check_unicode
from .loading import DEFAULT_MODEL_NAME, LoadedCheckpoint, load_checkpoint, resolve_checkpoint
from .pooling import check_pool_factor, pool_tokens
from .runtime import choose_device, choose_dtype
from .tokenization import TextTokenizer

CONFIG_VERSION = 1
INPUT_TYPES = ("query", "document")
_PROGRESS_MIN_TEXTS = 2048


def check_texts(texts: Any, what: str = "texts", empty: str = "nothing to encode",
                 blank: str = "is an empty string") -> list[str]:
    """The texts as a list of non-blank strings; TypeError/ValueError naming the offending item."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, got a single {type(texts).__name__}; wrap it in a list")
    if texts is None or not hasattr(texts, "__iter__"):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: {empty}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] is a {type(t).__name__}, not a string")
        if not t.strip():
            raise ValueError(f"{what}[{i}] {blank}; drop it or give it some text")
        check_unicode(t, f"{what}[{i}]")
    return texts


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class ColBERT:
    """A ColBERT-family encoder (Stanford ColBERT, PyLate, jina-colbert-v2 or a plain transformers encoder).

    ``encode_queries`` returns float32 ``(n, query_length, dim)``: with query expansion (ColBERT models)
    every position holds a vector (the mask-token "expansion" vectors included); models without query
    expansion (plain encoders, PyLate models with ``do_query_expansion: false``) return zero vectors after
    the query's own tokens, which add nothing to a MaxSim score.
    ``encode_documents`` returns one float32 ``(n_tokens, dim)`` array per text, padding and skiplisted
    tokens removed. Every returned vector is L2-normalised.

    ``dimensions`` (Matryoshka): a size for which the checkpoint ships a head of its own uses that head;
    any other size below ``dim`` keeps the first ``dimensions`` components of the full vectors and
    renormalises them. Matryoshka training (jina-colbert-v2: 128/96/64) nests the smaller sizes in those
    leading components; for a model trained without it, truncation is only an approximation.
    """

    def __init__(self, checkpoint: LoadedCheckpoint, name_or_path: str, device: torch.device, dtype: torch.dtype,
                 query_length: int | None = None, document_length: int | None = None):
        self._ckpt = checkpoint
        self.name_or_path = name_or_path
        self.path = str(checkpoint.folder)
        self.format = checkpoint.format
        self.device = device
        self.dtype = dtype
        self.tokenizer = checkpoint.tokenizer
        self.similarity = checkpoint.similarity
        self._text = TextTokenizer(checkpoint.tokenizer, checkpoint.spec)
        self.backbone = checkpoint.backbone.to(device=device, dtype=dtype).eval()
        self.projection = checkpoint.projection.to(device=device, dtype=dtype).eval()
        self.max_length = checkpoint.max_length
        self.query_length = self._length(query_length, checkpoint.query_length, "query")
        self.document_length = self._length(document_length, checkpoint.document_length, "document",
                                            clip_default=True)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, device: Any = None, dtype: Any = None,
                        query_length: int | None = None, document_length: int | None = None) -> ColBERT:
        """Load a checkpoint folder or hub name (local cache first); None loads the bundled all-MiniLM-L6-v2.

        device: explicit, else cuda > mps > cpu. dtype: float32 on CPU, bfloat16/float16 on GPUs unless given.
        query_length / document_length override the checkpoint's settings (documents up to what the
        model's positions allow, e.g. 8192 for jina-colbert-v2).
        """
        folder, name = resolve_checkpoint(name_or_path)
        dev = choose_device(device)
        dt = choose_dtype(dtype, dev)
        return cls(load_checkpoint(folder, dt), name, dev, dt, query_length, document_length)

    @classmethod
    def from_config_dict(cls, config: dict[str, Any], device: Any = None, dtype: Any = None) -> ColBERT:
        """Reopen the model described by :meth:`config_dict` (e.g. read back from an index)."""
        if not isinstance(config, dict) or "name_or_path" not in config:
            raise ValueError("config must be a dict produced by ColBERT.config_dict() (it has no 'name_or_path')")
        model = cls.from_pretrained(config["name_or_path"], device=device, dtype=dtype,
                                    query_length=config.get("query_length"),
                                    document_length=config.get("document_length"))
        if config.get("dim") not in (None, model.dim):
            raise ValueError(f"the model at {config['name_or_path']!r} produces {model.dim}-d vectors, "
                             f"the recorded configuration says {config['dim']}")
        return model

    def with_document_length(self, length: int) -> ColBERT:
        """This model reading documents of ``length`` tokens (special tokens included, at most the model's
        positions); shares the weights, so it costs no memory. Returns ``self`` when nothing changes."""
        length = int(min(_check_positive(length, "document_length"), self.max_length or length))
        if length == self.document_length:
            return self
        return type(self)(self._ckpt, self.name_or_path, self.device, self.dtype, self.query_length, length)

    def _length(self, value: int | None, default: int, kind: str, clip_default: bool = False) -> int:
        floor = self._text.n_special(kind) + 1
        if value is None:
            value = min(default, self.max_length) if (clip_default and self.max_length) else default
        else:
            value = _check_positive(value, f"{kind}_length")
        if value < floor:
            raise ValueError(f"{kind}_length {value} leaves no room for text: it must be at least {floor} "
                             f"(the special tokens and marker take {floor - 1})")
        if self.max_length is not None and value > self.max_length:
            raise ValueError(f"{kind}_length {value} exceeds what the model supports ({self.max_length} positions)")
        return value

    # -- description -------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.projection.out_dim)

    @property
    def head_dimensions(self) -> list[int]:
        """Output sizes that have a head of their own in the checkpoint (the full ``dim`` first)."""
        return self.projection.head_sizes

    @property
    def max_document_tokens(self) -> int:
        """Text tokens a document keeps (document_length minus special tokens and marker)."""
        return self.document_length - self._text.n_special("document")

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable description to store with an index; :meth:`from_config_dict` reopens it."""
        spec = self._ckpt.spec
        return {
            "encoder": "plaidx.ColBERT", "version": CONFIG_VERSION,
            "name_or_path": self.name_or_path, "format": self.format, "dim": self.dim,
            "head_dimensions": self.head_dimensions, "hidden_size": self._ckpt.hidden_size,
            "query_length": self.query_length, "document_length": self.document_length,
            "query_marker": spec.query_marker, "document_marker": spec.document_marker,
            "query_expansion": spec.query_expansion, "attend_to_mask_tokens": spec.attend_to_mask_tokens,
            "skiplist_size": len(self._text.skiplist_ids), "lowercase": spec.lowercase,
            "similarity": self.similarity, "normalized": True, "dtype": str(self.dtype).removeprefix("torch."),
        }

    def __repr__(self) -> str:
        return (f"ColBERT({self.name_or_path!r}, format={self.format}, dim={self.dim}, query_length="
                f"{self.query_length}, document_length={self.document_length}, device={self.device})")

    def count_tokens(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[int]:
        """Tokens of each text under this model's tokenizer, without truncation.

        With add_special_tokens, the document special tokens and marker are counted too (what a document
        of that text occupies before truncation at ``document_length``).
        """
        texts = check_texts(texts)
        extra = self._text.n_special("document") if add_special_tokens else 0
        return [len(ids) + extra for ids in self._text.content_ids(texts, None)]

    def tokenize(self, texts: Sequence[str], input_type: str = "document") -> dict[str, torch.Tensor]:
        """The encoder inputs for texts, in order and right-padded: ``input_ids``, ``attention_mask`` and
        ``keep`` (the positions whose vectors encode_queries/encode_documents return)."""
        texts = check_texts(texts)
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be 'query' or 'document', got {input_type!r}")
        if input_type == "query":
            ids, attention, keep = self._text.queries(texts, self.query_length)
        else:
            ids, attention, keep = self._text.pad_documents(self._text.documents(texts, self.document_length))
        return {"input_ids": ids, "attention_mask": attention, "keep": keep}

    # -- encoding ----------------------------------------------------------------------------------

    def _resolve_dimensions(self, dimensions: Any) -> tuple[int | None, int | None]:
        """(head size to use or None for the main head, truncation size or None)."""
        if dimensions is None:
            return None, None
        if isinstance(dimensions, bool) or not isinstance(dimensions, (int, np.integer)):
            raise TypeError(f"dimensions must be an integer, got {type(dimensions).__name__}")
        d = int(dimensions)
        if d == self.dim:
            return None, None
        if d in self.head_dimensions:
            return d, None
        if 0 < d < self.dim:
            return None, d
        raise ValueError(f"dimensions={d} is not supported by this model: use a size from 1 to {self.dim} "
                         f"(dedicated heads: {self.head_dimensions})")

    def _embed(self, ids: torch.Tensor, attention: torch.Tensor, head: int | None, cut: int | None) -> torch.Tensor:
        ids, attention = ids.to(self.device), attention.to(self.device)
        hidden = self.backbone(ids, attention)
        out = self.projection(hidden, head).float()
        if cut is not None:
            out = out[..., :cut]
        return out

    def _progress(self, n_texts: int, n_batches: int, show: bool | None, desc: str):
        from tqdm.auto import tqdm

        if show is None:
            show = n_texts >= _PROGRESS_MIN_TEXTS
        return tqdm(total=n_batches, desc=desc, unit="batch", disable=not show)

    def encode_queries(self, texts: Sequence[str], bsize: int = 128, dimensions: int | None = None,
                       show_progress_bar: bool | None = None, query_length: int | None = None) -> np.ndarray:
        """float32 (n, query_length, d) L2-normalised query token embeddings.

        ``query_length`` reads these queries at another length than the model's (longer queries are cut there
        instead; with query expansion, shorter ones are filled up to it), at most the model's positions.
        """
        texts = check_texts(texts)
        bsize = _check_positive(bsize, "bsize")
        length = self.query_length if query_length is None else self._length(query_length, 0, "query")
        head, cut = self._resolve_dimensions(dimensions)
        d = cut or head or self.dim
        out = np.zeros((len(texts), length, d), dtype=np.float32)
        seqs = self._text.query_sequences(texts, length)
        # Longest first: without query expansion a batch stops at its longest query.
        order = np.argsort(-np.array([len(s) for s in seqs]), kind="stable")
        n_batches = -(-len(texts) // bsize)
        with torch.inference_mode(), self._progress(len(texts), n_batches, show_progress_bar, "queries") as bar:
            for start in range(0, len(texts), bsize):
                idx = order[start:start + bsize]
                ids, attention, keep = self._text.pad_queries([seqs[i] for i in idx], length)
                emb = F.normalize(self._embed(ids, attention, head, cut), p=2, dim=-1)
                emb = emb * keep.to(emb.device).unsqueeze(-1)
                out[idx, : emb.shape[1]] = emb.cpu().numpy()
                bar.update(1)
        return out

    def encode_documents(self, texts: Sequence[str], bsize: int = 32, dimensions: int | None = None,
                         show_progress_bar: bool | None = None, pool_factor: int = 1) -> list[np.ndarray]:
        """One float32 (n_tokens_i, d) L2-normalised array per text, padding and skiplisted tokens removed.

        ``pool_factor`` > 1 merges each text's tokens into ceil(n_tokens_i / pool_factor) vectors by Ward
        clustering (token pooling, :func:`plaidx.encoder.pooling.pool_tokens`): a smaller index for a
        small loss of quality; 1 (the default) keeps every token.
        """
        texts = check_texts(texts)
        pool_factor = check_pool_factor(pool_factor)
        bsize = _check_positive(bsize, "bsize")
        head, cut = self._resolve_dimensions(dimensions)
        seqs = self._text.documents(texts, self.document_length)
        # Longest first: batches of similar lengths waste no compute on padding, and a too-large batch
        # fails at once rather than at the end.
        order = np.argsort(-np.array([len(s) for s in seqs]), kind="stable")
        result: list[np.ndarray | None] = [None] * len(texts)
        n_batches = -(-len(texts) // bsize)
        with torch.inference_mode(), self._progress(len(texts), n_batches, show_progress_bar, "documents") as bar:
            for start in range(0, len(texts), bsize):
                idx = order[start:start + bsize]
                ids, attention, keep = self._text.pad_documents([seqs[i] for i in idx])
                emb = self._embed(ids, attention, head, cut)
                keep = keep.to(emb.device)
                flat = F.normalize(emb[keep], p=2, dim=-1).cpu().numpy()
                counts = keep.sum(dim=1).tolist()
                for i, part in zip(idx, np.split(flat, np.cumsum(counts)[:-1])):
                    result[int(i)] = pool_tokens(part, pool_factor) if pool_factor > 1 else part
                bar.update(1)
        return result  # type: ignore[return-value]

    def encode(self, texts: Sequence[str], input_type: str = "document", dimensions: int | None = None,
               **kwargs: Any) -> np.ndarray | list[np.ndarray]:
        """Jina-API style: ``input_type`` "query" (an (n, query_length, d) array) or "document" (a list)."""
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be 'query' or 'document', got {input_type!r}")
        if input_type == "query":
            return self.encode_queries(texts, dimensions=dimensions, **kwargs)
        return self.encode_documents(texts, dimensions=dimensions, **kwargs)


__all__ = ["ColBERT", "DEFAULT_MODEL_NAME"]
