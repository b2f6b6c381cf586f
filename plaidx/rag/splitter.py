"""Splitting documents into overlapping passages that fit the encoder, counted in its tokenizer's tokens."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any, Optional

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SENTENCE_END = set(".!?\u3002\uff01\uff1f\u2026")  # . ! ? and the CJK full stop, !, ? and the ellipsis
_CLOSERS = set("\"')]}\u201d\u2019\u00bb")
_BATCH = 512  # texts tokenized per call


def default_overlap(max_tokens: int) -> int:
    """Tokens shared by consecutive passages: a quarter of the passage, at most 64 (as RAGatouille)."""
    return max(0, min(max_tokens // 4, 64))


def token_spans(texts: Sequence[str], tokenizer: Any = None) -> list[list[tuple[int, int]]]:
    """Character spans ``(start, end)`` of the tokens of each text, without special tokens.

    A fast Hugging Face tokenizer gives its own offsets. A slow one counts the sub-tokens of each
    word-or-punctuation unit and repeats that unit's span for each of them (so cuts fall between units).
    Without a tokenizer, each word-or-punctuation unit counts as one token.
    """
    out: list[list[tuple[int, int]]] = []
    for lo in range(0, len(texts), _BATCH):
        batch = list(texts[lo:lo + _BATCH])
        if tokenizer is not None and getattr(tokenizer, "is_fast", False):
            enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True,
                            return_attention_mask=False, return_token_type_ids=False, truncation=False,
                            verbose=False)
            out.extend([[(int(s), int(e)) for s, e in offs if e > s] for offs in enc["offset_mapping"]])
            continue
        for text in batch:
            spans = []
            for m in _WORD.finditer(text):
                n = 1 if tokenizer is None else max(1, len(tokenizer.tokenize(m.group())))
                spans.extend([(m.start(), m.end())] * n)
            out.append(spans)
    return out


def count_tokens(texts: Sequence[str], tokenizer: Any = None) -> list[int]:
    """Tokens of each text as :func:`token_spans` counts them (no special tokens)."""
    return [len(s) for s in token_spans(texts, tokenizer)]


def _windows(text: str, spans: list[tuple[int, int]], max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges [lo, hi) of the passages of one text: at most ``max_tokens`` each, cut at a sentence
    start when one lies in the second half of the window, else at a word start, else anywhere; the next
    passage starts at the earliest sentence (else word) start within the last ``overlap`` tokens."""
    n = len(spans)
    word = [True] * n
    sentence = [True] * n
    for i in range(1, n):
        ps, pe = spans[i - 1]
        s = spans[i][0]
        if s == ps:  # sub-tokens of one unit (slow tokenizers): never cut inside
            word[i] = sentence[i] = False
            continue
        gap = text[pe:s]
        prev = text[ps:pe].rstrip("".join(_CLOSERS)) or text[ps:pe]
        word[i] = bool(gap) and gap.isspace()
        full_width_end = prev[-1] in "\u3002\uff01\uff1f"
        sentence[i] = (word[i] and (prev[-1] in _SENTENCE_END or "\n" in gap)) or full_width_end
    out = []
    lo = prev_hi = 0
    while True:
        hi_max = lo + max_tokens
        if hi_max >= n:
            out.append((lo, n))
            return out
        hi = next((j for j in range(hi_max, lo + max_tokens // 2, -1) if sentence[j]), None)
        if hi is None:
            hi = next((j for j in range(hi_max, max(lo, prev_hi), -1) if word[j]), hi_max)
        out.append((lo, hi))
        prev_hi = hi
        first = max(hi - overlap, lo + 1)
        nxt = next((j for j in range(first, hi) if sentence[j]), None)
        if nxt is None:
            nxt = next((j for j in range(first, hi) if word[j]), hi)
        lo = nxt


def split_text(text: str, max_tokens: int, tokenizer: Any = None, overlap: Optional[int] = None) -> list[str]:
    """Passages of one text, each of at most ``max_tokens`` tokens (without special tokens).

    A text that fits is returned unchanged as the only passage; an empty or blank text gives none.
    Passages are slices of the original text (no detokenization), cut at sentence or word boundaries
    where possible, and consecutive passages share up to ``overlap`` tokens (default
    :func:`default_overlap`). Every passage is re-tokenized and split again if it does not fit.
    """
    return [text[a:b] for a, b in passage_spans(text, max_tokens, tokenizer, overlap)]


def passage_spans(text: str, max_tokens: int, tokenizer: Any = None, overlap: Optional[int] = None, *,
                  _spans: Optional[list[tuple[int, int]]] = None) -> list[tuple[int, int]]:
    """Character ranges ``(start, end)`` of the passages :func:`split_text` returns, in order."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    overlap = default_overlap(max_tokens) if overlap is None else int(overlap)
    if overlap < 0 or overlap > max_tokens // 2:
        raise ValueError(f"overlap must be in [0, max_tokens // 2 = {max_tokens // 2}], got {overlap}")
    spans = token_spans([text], tokenizer)[0] if _spans is None else _spans
    return _split(text, 0, spans, max_tokens, tokenizer, overlap, 0)


def _split(text: str, base: int, spans: list[tuple[int, int]], max_tokens: int, tokenizer: Any, overlap: int,
           depth: int) -> list[tuple[int, int]]:
    if not spans:
        return []
    if len(spans) <= max_tokens:
        return [(base, base + len(text))]
    ranges = [(spans[lo][0], spans[hi - 1][1]) for lo, hi in _windows(text, spans, max_tokens, overlap)]
    if tokenizer is None:
        return [(base + a, base + b) for a, b in ranges]
    pieces = [text[a:b] for a, b in ranges]
    out = []
    for (a, b), piece, piece_spans in zip(ranges, pieces, token_spans(pieces, tokenizer)):
        if len(piece_spans) <= max_tokens or depth >= 3:
            out.append((base + a, base + b))
        else:  # the piece tokenizes longer on its own than in context: split it again
            out.extend(_split(piece, base + a, piece_spans, max_tokens, tokenizer, overlap, depth + 1))
    return out


def split_documents(documents: Sequence[str], document_ids: Sequence[Any], chunk_size: int = 256, *,
                    tokenizer: Any = None, overlap: Optional[int] = None,
                    reserved_tokens: int = 0) -> list[dict[str, Any]]:
    """RAGatouille-style splitter: ``[{"document_id", "content"}]`` passages of every document, in order.

    Parameters
    ----------
    documents, document_ids : the texts and their ids (same length).
    chunk_size : passage length in tokens, special and marker tokens included.
    tokenizer : the encoder's Hugging Face tokenizer (without one, words and punctuation count as tokens).
    overlap : tokens shared by consecutive passages of a document; default :func:`default_overlap`.
    reserved_tokens : tokens the encoder adds to every passage ([CLS], marker, [SEP]); the text of a
        passage gets ``chunk_size - reserved_tokens`` tokens.
    """
    if len(documents) != len(document_ids):
        raise ValueError("document_ids must be the same length as documents")
    budget = int(chunk_size) - int(reserved_tokens)
    if budget < 1:
        raise ValueError(f"chunk_size={chunk_size} leaves no room for text after {reserved_tokens} special tokens")
    out: list[dict[str, Any]] = []
    for lo in range(0, len(documents), _BATCH):
        texts = list(documents[lo:lo + _BATCH])
        for doc_id, text, spans in zip(document_ids[lo:lo + _BATCH], texts, token_spans(texts, tokenizer)):
            out.extend({"document_id": doc_id, "content": text[a:b]}
                       for a, b in passage_spans(text, budget, tokenizer, overlap, _spans=spans))
    return out


def warn_if_truncated(passages: Sequence[str], tokenizer: Any, max_tokens: int, what: str) -> int:
    """Warn (once, with a count) when passages exceed ``max_tokens`` and will be truncated by the encoder."""
    lengths = count_tokens(passages, tokenizer)
    over = [i for i, n in enumerate(lengths) if n > max_tokens]
    if over:
        warnings.warn(f"{what}: {len(over)} of {len(passages)} passages are longer than the {max_tokens} tokens "
                      f"the encoder reads (first: #{over[0]}, {lengths[over[0]]} tokens) and will be truncated; "
                      "use split_documents=True or a splitter with a smaller chunk_size", stacklevel=3)
    return len(over)
