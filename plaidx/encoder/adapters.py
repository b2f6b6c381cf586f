"""Other libraries' late-interaction model objects (PyLate ``ColBERT``, sentence-transformers
``MultiVectorEncoder``) behind plaidx's encoder interface, giving the vectors that library gives.

    enc = as_encoder(model)          # a plaidx.ColBERT is returned as it is
    Q = enc.encode_queries(texts)    # float32 (n, L, dim), zero rows after a query's own vectors
    D = enc.encode_documents(texts)  # list of float32 (n_tokens_i, dim)

The library does the tokenization and the forward pass (its markers, query expansion, skiplist and
lengths apply); the adapter only converts its output: numpy float32, queries padded with zero vectors to
one length (zero vectors add nothing to a MaxSim score), every vector L2-normalised (a ColBERT model's
vectors already are, so this changes nothing beyond float rounding). Anything else passed as a model is a
TypeError that says what is accepted. Neither PyLate nor sentence-transformers is imported here: a model
object is recognised by its class's module, so the library is there whenever such an object exists.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from .model import check_texts

ENCODER_METHODS = ("encode_queries", "encode_documents", "config_dict")
ADAPTER_VERSION = 1

__all__ = ["LibraryEncoder", "MultiVectorEncoderAdapter", "PyLateEncoder", "as_encoder", "is_encoder"]


def is_encoder(model: Any) -> bool:
    """Whether ``model`` already has plaidx's encoder interface (plaidx.ColBERT or an adapter)."""
    return all(callable(getattr(model, m, None)) for m in ENCODER_METHODS)


def _library(model: Any) -> str:
    return type(model).__module__.split(".", 1)[0]


def _is_multi_vector_encoder(model: Any) -> bool:
    return any(c.__name__ == "MultiVectorEncoder" and c.__module__.startswith("sentence_transformers")
               for c in type(model).__mro__)


def as_encoder(model: Any) -> Any:
    """``model`` as a plaidx encoder: itself when it has the interface, else a PyLate or sentence-transformers
    adapter; TypeError for anything else."""
    if is_encoder(model):
        return model
    if _library(model) == "pylate" and callable(getattr(model, "encode", None)):
        return PyLateEncoder(model)
    if _is_multi_vector_encoder(model):
        return MultiVectorEncoderAdapter(model)
    if _library(model) == "sentence_transformers":
        raise TypeError(f"{type(model).__name__} is a single-vector sentence-transformers model; a plaidx index needs "
                        "per-token vectors: use a multi-vector model (sentence_transformers.MultiVectorEncoder, or a "
                        "PyLate ColBERT)")
    raise TypeError(f"cannot use a {type(model).__module__}.{type(model).__name__} as an encoder: pass a checkpoint "
                    "folder or hub name, a plaidx.ColBERT, a PyLate models.ColBERT or a sentence-transformers "
                    "MultiVectorEncoder")


def _normalized(a: Any) -> np.ndarray:
    a = np.asarray(a.detach().cpu().float().numpy() if hasattr(a, "detach") else a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"the model returned a {a.ndim}-d array for one text; expected (tokens, dim)")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


class LibraryEncoder:
    """plaidx's encoder interface over another library's model object (see the module docstring).

    Subclasses implement ``_encode(texts, is_query, bsize, show_progress_bar)`` (the library's raw
    per-text outputs) and ``_lengths()`` (query_length, document_length).
    """

    library = "?"

    def __init__(self, model: Any, document_length: Optional[int] = None, lock: Optional[threading.RLock] = None):
        self.model = model
        self._lock = lock or threading.RLock()  # the library's length settings are swapped under it
        self._document_length = document_length
        self._dim: Optional[int] = None

    # -- description ---------------------------------------------------------------------------
    def _lengths(self) -> tuple[Optional[int], Optional[int]]:
        raise NotImplementedError

    def _encode(self, texts: list[str], is_query: bool, bsize: int, show_progress_bar: Optional[bool]) -> list:
        raise NotImplementedError

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def name_or_path(self) -> str:
        for get in (lambda m: m.name_or_path, lambda m: m[0].auto_model.config._name_or_path,
                    lambda m: m[0].model.config._name_or_path, lambda m: m.model_card_data.base_model):
            try:
                value = get(self.model)
            except Exception:  # noqa: BLE001 - each library keeps it elsewhere
                continue
            if isinstance(value, str) and value:
                return value
        return f"{self.library}:{type(self.model).__name__}"

    @property
    def device(self) -> Any:
        return getattr(self.model, "device", None)

    @property
    def query_length(self) -> int:
        return int(self._lengths()[0] or 32)

    @property
    def document_length(self) -> int:
        if self._document_length is not None:
            return self._document_length
        own = self._lengths()[1]
        return int(own or self.max_length or 512)

    @property
    def max_length(self) -> Optional[int]:
        limit = getattr(self.tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None

    @property
    def _n_special(self) -> int:
        """Tokens a document has besides its text ([CLS], [SEP] and the document marker)."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return len(full) - len(bare) + 1

    @property
    def max_document_tokens(self) -> int:
        return self.document_length - self._n_special

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode_documents(["dimension probe"], show_progress_bar=False)[0].shape[1])
        return self._dim

    def count_tokens(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[int]:
        """Tokens of each text under the model's tokenizer, without truncation (+ specials and marker)."""
        texts = check_texts(texts)
        extra = self._n_special if add_special_tokens else 0
        ids = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) + extra for x in ids]

    def config_dict(self) -> dict[str, Any]:
        """What an index records about this model (plaidx reopens it by ``name_or_path`` when it can)."""
        return {"encoder": f"{self.library} (adapted)", "version": ADAPTER_VERSION, "name_or_path": self.name_or_path,
                "format": self.library, "dim": self.dim, "query_length": self.query_length,
                "document_length": self.document_length, "normalized": True}

    def with_document_length(self, length: int) -> LibraryEncoder:
        """This model reading documents of ``length`` tokens (shares the model object)."""
        length = int(min(int(length), self.max_length or int(length)))
        if length == self.document_length:
            return self
        twin = type(self)(self.model, document_length=length, lock=self._lock)
        twin._dim = self._dim
        return twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_or_path!r}, document_length={self.document_length})"

    # -- encoding ------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], bsize: int = 32, show_progress_bar: Optional[bool] = None,
                       dimensions: Optional[int] = None) -> np.ndarray:
        """float32 (n, L, dim): the library's query vectors, zero-padded to the longest (L >= query_length)."""
        texts = check_texts(texts)
        self._no_dimensions(dimensions)
        parts = [_normalized(q) for q in self._encode(texts, True, bsize, show_progress_bar)]
        width = max(self.query_length, max(p.shape[0] for p in parts))
        out = np.zeros((len(parts), width, parts[0].shape[1]), dtype=np.float32)
        for i, p in enumerate(parts):
            out[i, :p.shape[0]] = p
        return out

    def encode_documents(self, texts: Sequence[str], bsize: int = 32, show_progress_bar: Optional[bool] = None,
                         dimensions: Optional[int] = None) -> list[np.ndarray]:
        """One float32 (n_tokens_i, dim) array per text: the library's document vectors."""
        texts = check_texts(texts)
        self._no_dimensions(dimensions)
        return [_normalized(d) for d in self._encode(texts, False, bsize, show_progress_bar)]

    def encode(self, texts: Sequence[str], input_type: str = "document", **kwargs: Any) -> Any:
        if input_type not in ("query", "document"):
            raise ValueError(f"input_type must be 'query' or 'document', got {input_type!r}")
        return (self.encode_queries if input_type == "query" else self.encode_documents)(texts, **kwargs)

    @staticmethod
    def _no_dimensions(dimensions: Optional[int]) -> None:
        if dimensions is not None:
            raise ValueError("dimensions= is not supported for an adapted model: truncate with the library itself")


class PyLateEncoder(LibraryEncoder):
    """A PyLate ``models.ColBERT`` (``encode(texts, is_query=...)``)."""

    library = "pylate"

    def _lengths(self) -> tuple[Optional[int], Optional[int]]:
        return getattr(self.model, "query_length", None), getattr(self.model, "document_length", None)

    def _encode(self, texts: list[str], is_query: bool, bsize: int, show_progress_bar: Optional[bool]) -> list:
        with self._lock:
            own = getattr(self.model, "document_length", None)
            swap = not is_query and self._document_length is not None and self._document_length != own
            if swap:
                self.model.document_length = self._document_length
            try:
                return list(self.model.encode(texts, is_query=is_query, batch_size=bsize, convert_to_numpy=True,
                                              show_progress_bar=bool(show_progress_bar)))
            finally:
                if swap:
                    self.model.document_length = own


class MultiVectorEncoderAdapter(LibraryEncoder):
    """A sentence-transformers (6.x) ``MultiVectorEncoder`` (``encode_query`` / ``encode_document``)."""

    library = "sentence_transformers"

    def _transformer(self) -> Any:
        return self.model[0]

    def _lengths(self) -> tuple[Optional[int], Optional[int]]:
        tf = self._transformer()
        q = getattr(tf, "query_length", None)
        expansion = getattr(tf, "query_expansion", None)
        if q is None and isinstance(expansion, dict):
            q = expansion.get("length")
        return q, getattr(tf, "document_length", None)

    def _encode(self, texts: list[str], is_query: bool, bsize: int, show_progress_bar: Optional[bool]) -> list:
        fn = self.model.encode_query if is_query else self.model.encode_document
        with self._lock:
            tf = self._transformer()
            own = getattr(tf, "document_length", None)
            swap = not is_query and self._document_length is not None and self._document_length != own
            if swap:
                tf.document_length = self._document_length
            try:
                return list(fn(texts, batch_size=bsize, convert_to_numpy=True,
                               show_progress_bar=bool(show_progress_bar)))
            finally:
                if swap:
                    tf.document_length = own
