"""Turning texts into the token sequences ColBERT-family models expect.

Query:    ``prefix [Q] tokens suffix`` truncated to ``query_length``; with query expansion the rest is
          filled with the mask token, whose positions are attended to only when the checkpoint says so
          (``attend_to_mask_tokens`` / ``attend_to_expansion_tokens``); all ``query_length`` vectors are kept.
Document: ``prefix [D] tokens suffix`` truncated to ``document_length``; padding and skiplisted tokens are
          dropped from the output (they are still seen by the encoder).

``prefix``/``suffix`` are the tokenizer's own special tokens around a single sequence (``[CLS]``/``[SEP]``
for BERT, ``<s>``/``</s>`` for XLM-RoBERTa), found by probing the tokenizer. The marker goes right after
the prefix, as Stanford ColBERT (which overwrites position 1) and PyLate (which inserts after the first
token) both do. Models without markers (plain encoders) get ``prefix tokens suffix``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

SKIPLIST_FIRST_SUBTOKEN = "first_subtoken"  # Stanford: first id of tokenizer.encode(word)
SKIPLIST_VOCAB = "vocab"  # PyLate: tokenizer.convert_tokens_to_ids(word)


@dataclass(frozen=True)
class TokenizationSpec:
    query_marker: str | None = None
    document_marker: str | None = None
    query_expansion: bool = False
    attend_to_mask_tokens: bool = False
    skiplist_words: tuple[str, ...] = field(default_factory=tuple)
    skiplist_mode: str = SKIPLIST_FIRST_SUBTOKEN
    lowercase: bool = False


class TextTokenizer:
    """Builds query/document id sequences for one tokenizer and spec."""

    def __init__(self, tokenizer: Any, spec: TokenizationSpec):

        self.tokenizer = tokenizer
        self.spec = spec
        # a fast tokenizer keeps its truncation length as state: two threads tokenizing at different lengths at
        # once would each read with the other's
        self._lock = threading.Lock()
        self.prefix_ids, self.suffix_ids = self._special_template()
        self.query_marker_id = self._token_id(spec.query_marker, "query marker")
        self.document_marker_id = self._token_id(spec.document_marker, "document marker")
        self.mask_id = tokenizer.mask_token_id
        if spec.query_expansion and self.mask_id is None:
            raise CheckpointError("query expansion needs a mask token, but the tokenizer has none")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.mask_id if self.mask_id is not None else 0))
        self.skiplist_ids = self._skiplist()

    # -- setup -------------------------------------------------------------------------------------

    def _special_template(self) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        probe = "hello world"
        bare = tok(probe, add_special_tokens=False)["input_ids"]
        full = tok(probe, add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if bare and full[i:i + len(bare)] == bare:
                return list(full[:i]), list(full[i + len(bare):])
        prefix = [tok.cls_token_id] if tok.cls_token_id is not None else []
        suffix = [tok.sep_token_id] if tok.sep_token_id is not None else []
        return prefix, suffix

    def _token_id(self, token: str | None, what: str) -> int | None:

        if token is None or token == "":
            return None
        tok = self.tokenizer
        for candidate in (token, token.strip()):
            tid = tok.convert_tokens_to_ids(candidate)
            if tid is not None and (tid != tok.unk_token_id or candidate == tok.unk_token):
                return int(tid)
        raise CheckpointError(f"the {what} {token!r} is not a token of the checkpoint's tokenizer")

    def _skiplist(self) -> frozenset[int]:
        ids: set[int] = set()
        tok = self.tokenizer
        for word in self.spec.skiplist_words:
            if self.spec.skiplist_mode == SKIPLIST_VOCAB:
                tid = tok.convert_tokens_to_ids(word)
                if tid is not None:
                    ids.add(int(tid))
            else:
                enc = tok(word, add_special_tokens=False)["input_ids"]
                if enc:
                    ids.add(int(enc[0]))
        return frozenset(ids)

    # -- lengths -----------------------------------------------------------------------------------

    def n_special(self, kind: str) -> int:
        marker = self.query_marker_id if kind == "query" else self.document_marker_id
        return len(self.prefix_ids) + len(self.suffix_ids) + (marker is not None)

    def content_ids(self, texts: Sequence[str], max_content: int | None) -> list[list[int]]:
        if self.spec.lowercase:
            texts = [t.lower() for t in texts]
        kwargs: dict[str, Any] = dict(add_special_tokens=False, return_attention_mask=False,
                                      return_token_type_ids=False, verbose=False)
        if max_content is not None:
            kwargs.update(truncation=True, max_length=max_content)
        with self._lock:
            return self.tokenizer(list(texts), **kwargs)["input_ids"]

    def _wrap(self, content: list[int], marker: int | None) -> list[int]:
        mid = [marker] if marker is not None else []
        return self.prefix_ids + mid + list(content) + self.suffix_ids

    # -- batches -----------------------------------------------------------------------------------

    def query_sequences(self, texts: Sequence[str], length: int) -> list[list[int]]:
        """Query id sequences (unpadded), each at most ``length`` long."""
        return [self._wrap(c, self.query_marker_id)
                for c in self.content_ids(texts, length - self.n_special("query"))]

    def pad_queries(self, seqs: Sequence[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, attention, keep), each (n, L): L = length with query expansion, else the longest query.

        ``keep`` marks the positions whose vectors are returned (all of them with query expansion).
        """
        n = len(seqs)
        width = length if self.spec.query_expansion else max(len(s) for s in seqs)
        fill = self.mask_id if self.spec.query_expansion else self.pad_id
        ids = np.full((n, width), fill, dtype=np.int64)
        real = np.zeros((n, width), dtype=bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            real[i, :len(s)] = True
        if self.spec.query_expansion:
            attention = np.ones_like(real) if self.spec.attend_to_mask_tokens else real
            keep = np.ones_like(real)
        else:
            attention = keep = real
        return torch.from_numpy(ids), torch.from_numpy(attention.astype(np.int64)), torch.from_numpy(keep)

    def queries(self, texts: Sequence[str], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pad_queries(query_sequences(texts, length), length)."""
        return self.pad_queries(self.query_sequences(texts, length), length)

    def documents(self, texts: Sequence[str], length: int) -> list[list[int]]:
        """Full id sequences (unpadded), each at most ``length`` long."""
        return [self._wrap(c, self.document_marker_id)
                for c in self.content_ids(texts, length - self.n_special("document"))]

    def pad_documents(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, attention, keep) for a batch of document sequences, right-padded to the longest."""
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        real = np.zeros((len(seqs), width), dtype=bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            real[i, :len(s)] = True
        keep = real.copy()
        if self.skiplist_ids:
            keep &= ~np.isin(ids, np.fromiter(self.skiplist_ids, dtype=np.int64))
        return torch.from_numpy(ids), torch.from_numpy(real.astype(np.int64)), torch.from_numpy(keep)
