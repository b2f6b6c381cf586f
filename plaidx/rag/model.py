"""RAGatouille's model class: indexes of passages with ids and metadata, search, rerank and in-memory search."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

from .. import __version__
from ..engine import Index, SearchParams, maxsim
from ..engine.codec import check_residual_codec
from ..engine.gpu import resolve_device
from ..engine.inputs import check_k, per_query_lists
from ..engine.params import is_integer
from ..engine.vectors import check_keep_vectors
from ..errors import check_unicode
from . import splitter as _splitter
from .checks import as_id_list, check_ids, check_metadatas, check_name, check_texts
from .docstore import DocStore
from .encoded import PassageCorpus
from .folder import (
    CONFIG_FILE,
    DOCSTORE_FILE,
    ENGINE_DIR,
    EXACT_MAX_TOKENS,
    FORMAT,
    FORMAT_VERSION,
    FolderCache,
    IndexFolder,
    read_config,
    recover,
    staged_folder,
    write_json_atomic,
    write_lock,
)
from .queries import encode_queries
from .ragatouille import converted_path, is_foreign_index
from .where import MAX_INT, check_fields

DEFAULT_INDEX_ROOT = os.path.join(".plaidx", "indexes")
DEFAULT_NBITS = 2  # see benchmarks/results/rag_defaults.md: 2 bits cost <= 0.01 nDCG@10 against 4 and 8 bits
_SEARCH_KWARGS = ("nprobe", "centroid_score_threshold", "ndocs", "n_exact", "exact_scores", "rerank")

__all__ = ["RAGPretrainedModel", "EXACT_MAX_TOKENS"]


# ---------------------------------------------------------------------------------------------- helpers
def _device_for(n_gpu: int) -> Optional[str]:
    """RAGatouille's n_gpu onto a torch device: -1 any (cuda when present), 0 the CPU, >= 1 CUDA."""
    if isinstance(n_gpu, bool) or not isinstance(n_gpu, int) or n_gpu < -1:
        raise ValueError(f"n_gpu must be -1 (auto), 0 (CPU) or a number of GPUs, got {n_gpu!r}")
    if n_gpu == -1:
        return None
    if n_gpu == 0:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        warnings.warn(f"n_gpu={n_gpu} but CUDA is not available; running on the CPU", stacklevel=3)
        return "cpu"
    if n_gpu > 1:
        warnings.warn("plaidx encodes on one GPU; n_gpu > 1 uses the first", stacklevel=3)
    return "cuda"


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first, ties by lower index."""
    order = np.argsort(-scores, kind="stable")
    return order[:k]


def _default_name(model: Any) -> str:
    base = Path(str(getattr(model, "name_or_path", "") or "plaidx")).name
    base = re.sub(r"[^A-Za-z0-9._\-]", "_", base).lstrip(".-") or "plaidx"
    return f"{base}_new_index"


def _document_encoder(model: Any, length: int) -> Any:
    """The model reading documents of ``length`` tokens; shares the weights (plaidx.ColBERT), or reloads."""
    if hasattr(model, "with_document_length"):
        return model.with_document_length(length)
    length = int(min(length, getattr(model, "max_length", None) or length))
    if length == model.document_length:
        return model
    return type(model).from_pretrained(model.name_or_path, device=model.device, dtype=model.dtype,
                                       query_length=model.query_length, document_length=length)


def _reserved(model: Any) -> int:
    return int(model.document_length - model.max_document_tokens)


# ---------------------------------------------------------------------------------------------- the model
class RAGPretrainedModel:
    """A late-interaction model with its indexes, in RAGatouille's shape.

    Load one with :meth:`from_pretrained` (a checkpoint) or :meth:`from_index` (an index folder, with
    the model recorded in it). Index folders live under ``index_root`` (default ``.plaidx/indexes``):
    ``<index_root>/<index_name>/engine/`` (the compressed :class:`plaidx.Index`), ``docstore.sqlite``
    (passages, document ids and metadata) and ``plaidx_rag.json`` (model and parameters).

    Search, rerank and the in-memory methods are safe to call from several threads at once; writes to
    one index (index, add_to_index, delete_from_index) wait for each other (across processes up to
    ``plaidx.rag.folder.WRITE_WAIT_S`` seconds), and an overwrite replaces the folder in one step.
    """

    def __init__(self, model: Any, index_root: Optional[Union[str, os.PathLike]] = None, verbose: int = 1):
        if not hasattr(model, "encode_queries"):  # a PyLate / sentence-transformers model object
            from ..encoder.adapters import as_encoder

            model = as_encoder(model)
        self.model = model
        self.model_name = getattr(model, "name_or_path", None)
        self.index_root = Path(index_root if index_root is not None else DEFAULT_INDEX_ROOT).absolute()
        self.verbose = int(verbose)
        self.index_name: Optional[str] = None
        self._folders = FolderCache()
        self._encode_lock = threading.RLock()  # one tokenizer/model call at a time (HF fast tokenizers are not
        #                                         reentrant); the engine's searches run in parallel
        self._encoders: dict[int, Any] = {}
        self._memory_lock = threading.Lock()
        self._memory: Optional[dict[str, Any]] = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Optional[Union[str, os.PathLike]] = None,
                        n_gpu: int = -1, verbose: int = 1,
                        index_root: Optional[Union[str, os.PathLike]] = None) -> RAGPretrainedModel:
        """Load a checkpoint (folder or hub name in the local cache); None loads the bundled all-MiniLM-L6-v2.

        Parameters
        ----------
        pretrained_model_name_or_path : checkpoint folder or name (Stanford ColBERT, PyLate,
            jina-colbert-v2 or a plain transformers encoder).
        n_gpu : -1 (default) uses a GPU when there is one, 0 the CPU; plaidx encodes on one device.
        verbose : 0 silent; 1 (default) a line on stderr per indexing step (encoding, k-means and
            compression, writing) and a progress bar while encoding; 2 also the engine's progress bars.
        index_root : folder of the indexes (default ``.plaidx/indexes``).
        """
        from ..encoder import ColBERT

        model = ColBERT.from_pretrained(pretrained_model_name_or_path, device=_device_for(n_gpu))
        return cls(model, index_root=index_root, verbose=verbose)

    @classmethod
    def from_index(cls, index_path: Union[str, os.PathLike], n_gpu: int = -1, verbose: int = 1,
                   model: Any = None) -> RAGPretrainedModel:
        """Open an index folder with the model recorded in it (its root becomes ``index_root``).

        A RAGatouille folder (``.ragatouille/colbert/indexes/NAME``) is converted once into a plaidx folder
        beside it (``NAME.plaidx``, reused while the source is unchanged; the source is never written to),
        with the checkpoint its metadata names when that is on this machine, else ``model`` (a checkpoint
        folder or hub name, a plaidx.ColBERT, or a PyLate / sentence-transformers model object); see
        :mod:`plaidx.rag.ragatouille`. For a plaidx folder ``model`` replaces the recorded model.
        """
        from ..encoder import ColBERT
        from .ragatouille import open_ragatouille

        path = Path(index_path)
        name = path.name  # a RAGatouille folder keeps its name: _open finds its conversion by it
        if is_foreign_index(path):
            path, model = open_ragatouille(path, model=model, device=_device_for(n_gpu), verbose=verbose)
        recover(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no index at {str(path)!r}")
        cfg = read_config(path)
        if isinstance(model, (str, os.PathLike)):
            model = ColBERT.from_pretrained(model, device=_device_for(n_gpu))
        elif model is None:
            model = ColBERT.from_config_dict(cfg["model"], device=_device_for(n_gpu))
        rag = cls(model, index_root=path.parent, verbose=verbose)
        rag._open(name)
        rag.index_name = name
        return rag

    def __repr__(self) -> str:
        return f"RAGPretrainedModel({self.model!r}, index_root={str(self.index_root)!r}, index_name={self.index_name!r})"

    # -- index handles ---------------------------------------------------------------------------
    def _open(self, name: str) -> IndexFolder:
        path = self.index_root / check_name(name, strict=False)
        if is_foreign_index(path) and (converted_path(path) / CONFIG_FILE).is_file():
            path = converted_path(path)  # a RAGatouille folder's name, as RAGatouille code passes it: its conversion
        recover(path)
        if not path.is_dir():
            known = sorted(p.name for p in self.index_root.iterdir()
                           if p.is_dir() and (p / CONFIG_FILE).is_file()) if self.index_root.is_dir() else []
            raise FileNotFoundError(f"no index named {name!r} under {str(self.index_root)!r} "
                                    f"(indexes there: {known})")
        return self._folders.get(path, check=self._check_model)

    def _handle(self, index_name: Optional[str]) -> IndexFolder:
        if index_name is None:
            if self.index_name is None:
                raise ValueError("no index selected: build one with index(), open one with from_index(), or pass "
                                 "index_name")
            index_name = self.index_name
        h = self._open(index_name)
        self.index_name = index_name
        return h

    def _check_model(self, h: IndexFolder) -> None:
        if h.kind != "rag":
            raise ValueError(f"{str(h.path)!r} is a bare engine folder, not a RAG index; open it with plaidx.Index")
        rec = h.config["model"]
        if rec.get("dim") is not None and rec["dim"] != self.model.dim:
            raise ValueError(f"index {h.name!r} holds {rec['dim']}-d vectors of {rec.get('name_or_path')!r}, but this "
                             f"model produces {self.model.dim}-d vectors; open it with RAGPretrainedModel.from_index")
        if rec.get("name_or_path") != getattr(self.model, "name_or_path", None):
            warnings.warn(f"index {h.name!r} was built with {rec.get('name_or_path')!r}, not with "
                          f"{self.model.name_or_path!r}; results are meaningless unless the models are the same "
                          "(RAGPretrainedModel.from_index opens an index with its own model)", stacklevel=4)

    def _doc_encoder(self, length: int) -> Any:
        with self._encode_lock:
            enc = self._encoders.get(length)
            if enc is None:
                enc = self._encoders[length] = _document_encoder(self.model, length)
            return enc

    def _show(self) -> Optional[bool]:
        return False if self.verbose <= 0 else (None if self.verbose == 1 else True)

    def _encode_queries(self, queries: list[str], bsize: int = 32) -> Union[np.ndarray, list[np.ndarray]]:
        with self._encode_lock:
            return encode_queries(self.model, queries, bsize=bsize)

    def _encode_documents(self, enc: Any, texts: list[str], bsize: int, show: Any = "default") -> list[np.ndarray]:
        with self._encode_lock:
            return enc.encode_documents(texts, bsize=bsize,
                                        show_progress_bar=self._show() if show == "default" else show)

    # -- passages --------------------------------------------------------------------------------
    def _passages(self, collection: list[str], ids: list[Any], enc: Any, max_document_length: int,
                  split: bool, splitter: Optional[Callable], preprocessing_fn: Any) -> list[tuple[Any, str]]:
        if split and splitter is _splitter.split_documents:
            with self._encode_lock:
                items = _splitter.split_documents(collection, ids, chunk_size=enc.document_length, tokenizer=enc.tokenizer,
                                        reserved_tokens=_reserved(enc))
        elif split and splitter is not None:
            items = splitter(collection, ids, chunk_size=max_document_length)
        else:
            items = [{"document_id": d, "content": c} for d, c in zip(ids, collection)]
        fns = preprocessing_fn if isinstance(preprocessing_fn, (list, tuple)) else (
            [preprocessing_fn] if preprocessing_fn is not None else [])
        for fn in fns:
            new = list(fn(items, ids) if _takes_two(fn) else fn(items))
            if new and all(isinstance(x, str) for x in new):
                if len(new) != len(items):
                    raise ValueError("preprocessing_fn returned a different number of passages as plain strings; "
                                     "return [{'document_id', 'content'}] dicts to add or drop passages")
                new = [{"document_id": it["document_id"], "content": t} for it, t in zip(items, new)]
            items = new
        known = set(ids)
        out = []
        for i, it in enumerate(items):
            if not isinstance(it, dict) or "document_id" not in it or "content" not in it:
                raise ValueError(f"the splitter/preprocessing gave passage #{i} as {type(it).__name__}; expected a "
                                 "dict with 'document_id' and 'content'")
            if it["document_id"] not in known:
                raise ValueError(f"passage #{i} names document_id {it['document_id']!r}, which is not in the collection")
            if not isinstance(it["content"], str) or not it["content"].strip():
                raise ValueError(f"passage #{i} of document {it['document_id']!r} has no text")
            out.append((it["document_id"], it["content"]))
        if not out:
            raise ValueError("no passages to index: the splitter/preprocessing dropped every document")
        lost = known - {d for d, _ in out}
        if lost:
            warnings.warn(f"{len(lost)} documents have no passage after splitting/preprocessing and cannot be found "
                          f"(e.g. {sorted(map(str, lost))[:3]})", stacklevel=3)
        if not (split and splitter is _splitter.split_documents):
            with self._encode_lock:
                _splitter.warn_if_truncated([c for _, c in out], enc.tokenizer, enc.max_document_tokens, "index")
        return out

    def _prepare(self, collection: Any, document_ids: Any, document_metadatas: Any, max_document_length: int,
                 split: bool, splitter: Optional[Callable], preprocessing_fn: Any,
                 id_type: Optional[str] = None, next_int: int = 0):
        docs = check_texts(collection)
        if document_ids is None and id_type == "int":
            ids: list[Any] = list(range(next_int, next_int + len(docs)))
        else:
            ids = check_ids(document_ids, len(docs))
        if id_type is not None and not isinstance(ids[0], int if id_type == "int" else str):
            raise ValueError(f"this index stores {id_type} document ids, got {type(ids[0]).__name__} ids")
        metas = check_metadatas(document_metadatas, len(docs))
        if isinstance(max_document_length, bool) or not isinstance(max_document_length, int) or max_document_length < 1:
            raise ValueError(f"max_document_length must be a positive integer, got {max_document_length!r}")
        enc = self._doc_encoder(max_document_length)
        passages = self._passages(docs, ids, enc, max_document_length, split, splitter, preprocessing_fn)
        return enc, list(zip(ids, metas)), passages

    def _note(self, message: str) -> None:
        """One line of progress on stderr (verbose >= 1)."""
        if self.verbose >= 1:
            print(f"plaidx: {message}", file=sys.stderr, flush=True)

    def _embed(self, enc: Any, passages: list[tuple[Any, str]], bsize: int, chunk: int = 256,
               then: str = "") -> Iterator[list]:
        """Embeddings of the passages, in order, as batches (the build streams them to disk); with verbose,
        a bar that moves every ``chunk`` passages, and a line when done naming what comes next (``then``)."""
        bar = None
        if self.verbose >= 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(passages), desc="plaidx: encoding passages", unit="passage", mininterval=1.0,
                       file=sys.stderr)
        t0, tokens = time.perf_counter(), 0
        try:
            for lo in range(0, len(passages), chunk):
                batch = self._encode_documents(enc, [c for _, c in passages[lo:lo + chunk]], bsize, show=False)
                tokens += sum(int(e.shape[0]) for e in batch)
                if bar is not None:
                    bar.update(len(batch))
                yield batch
        finally:
            if bar is not None:
                bar.close()
        self._note(f"encoded {len(passages)} passages ({tokens} tokens) in {time.perf_counter() - t0:.1f}s"
                   + (f"; {then}" if then else ""))

    # -- RAGatouille API: indexes -------------------------------------------------------------------
    def index(self, collection: list[str], document_ids: Optional[Union[Any, list[Any]]] = None,
              document_metadatas: Optional[list[dict]] = None, index_name: Optional[str] = None,
              overwrite_index: Union[bool, str] = True, max_document_length: int = 256,
              split_documents: bool = True, document_splitter_fn: Optional[Callable] = _splitter.split_documents,
              preprocessing_fn: Optional[Union[Callable, list[Callable]]] = None, bsize: int = 32,
              use_faiss: bool = False, *, nbits: Optional[int] = None, pool_factor: int = 1,
              device: Optional[str] = None, residual_codec: Optional[str] = None,
              metadata_indexes: Optional[list[str]] = None, keep_vectors: Optional[str] = None,
              shards: int = 1) -> str:
        """Build an index of a collection of texts; returns the index folder's path.

        Parameters
        ----------
        collection : the documents (non-empty strings).
        document_ids : one id per document, all str or all int, unique; default: generated uuid4 strings.
        document_metadatas : one JSON-serialisable dict (or None) per document, returned with its passages.
        index_name : folder name under ``index_root``; default ``<model name>_new_index``.
        overwrite_index : True replaces an existing index of that name (atomically: a crash keeps the old
            one), False raises FileExistsError, "reuse" opens the existing one without indexing.
        max_document_length : tokens per passage, special tokens included (at most what the model's
            positions allow); documents are encoded at this length.
        split_documents : split documents into passages that fit (no passage is silently truncated).
        document_splitter_fn : RAGatouille hook ``fn(documents, document_ids, chunk_size=...) ->
            [{"document_id", "content"}]``; the default splits by tokens of the model's tokenizer with
            overlap, at sentence boundaries where it can (:func:`plaidx.splitter.split_documents`).
        preprocessing_fn : a function, or list of them, from and to that list of passage dicts; called
            ``fn(passages, document_ids)`` as RAGatouille calls it, or ``fn(passages)`` when it takes one argument.
        bsize : encoding batch size.
        use_faiss : accepted for compatibility and ignored (plaidx always trains its centroids with faiss
            k-means and searches with its own engine).
        pool_factor : (plaidx only) token pooling: each passage's token vectors are merged by Ward clustering
            into ceil(n_tokens / pool_factor) (2 halves the index; see benchmarks/results/pooling_*.md for
            the cost in nDCG@10); 1 (default) keeps every token. Recorded in ``plaidx_rag.json``, so
            ``add_to_index`` pools new passages the same way.
        nbits : (plaidx only) bits per residual dimension, 1, 2, 4 or 8; default ``DEFAULT_NBITS`` (2) at
            every size: the index stays about 8x smaller than float16 vectors, at a cost in nDCG@10 measured
            in benchmarks/results/rag_defaults.md. The choice is recorded in ``plaidx_rag.json`` and shown
            by ``plaidx info``.
        device : (plaidx only) None/"cpu" (default) builds on the CPU; "cuda"/"cuda:N" builds on that GPU
            (k-means, assignment and compression: ``Index.build(device=...)``), streaming: passages are
            tokenised once, then encoded window by window while the GPU compresses the window before, and
            only compressed bytes come back to the host (with ``pool_factor`` > 1 the pooled vectors are made on
            the host first). A clear error when no usable GPU is there.
        residual_codec : (plaidx only) "scalar", "pq" or None (default: ``Index.build``'s choice, pq at nbits 1
            and 2 from 409,600 / nbits tokens on the CPU); recorded in ``plaidx_rag.json``.
        metadata_indexes : (plaidx only) metadata fields to index for ``where`` filters (``["lang",
            "source.year"]``): a filter on them reads only the matching documents instead of every document's
            metadata. Later: :meth:`index_metadata`. Added documents are indexed as they are stored; an index
            rebuilt with ``overwrite_index=True`` has the fields given in that call only.
        keep_vectors : (plaidx only) None (default), "int8" or "float16": also keep every token's vector in the
            rerank tier (``Index.build(keep_vectors=...)``; int8: d + 4 bytes a token, about 4.7x a 2-bit index at
            d 128), and searches re-score their best candidates with them (docs/benchmarks.md, "The int8 rerank
            tier"). ``add_to_index`` keeps the vectors of new passages.
        shards : (plaidx only) split the engine into this many shards with one codec (plaidx.distributed; the same
            passages and bytes), done before the folder is moved into place, so an overwrite stays atomic.

        Returns
        -------
        The index folder's absolute path (``RAGPretrainedModel.from_index`` opens it from any directory).
        """
        name = check_name(index_name) if index_name is not None else _default_name(self.model)
        pool_factor = _check_pool_factor(pool_factor)
        check_residual_codec(residual_codec, nbits if nbits is not None else DEFAULT_NBITS)
        keep_vectors = check_keep_vectors(keep_vectors)
        if not is_integer(shards) or shards < 1:
            raise ValueError(f"shards must be a positive integer, got {shards!r}")
        if metadata_indexes is not None:
            check_fields(metadata_indexes, "metadata_indexes")
        on_gpu = resolve_device(device, purpose="build") is not None  # a clear error before any work
        path = self.index_root / name
        recover(path)
        if path.exists() and (not path.is_dir() or (not (path / CONFIG_FILE).is_file() and any(path.iterdir()))):
            raise FileExistsError(f"{str(path)!r} exists and is not a plaidx index, so index() will not replace it: "
                                  "choose another index_name (or index_root), or move that folder away")
        if path.exists() and overwrite_index is not True:
            if overwrite_index == "reuse":
                self._open(name)
                self.index_name = name
                return str(path)
            raise FileExistsError(f"an index named {name!r} already exists under {str(self.index_root)!r}; pass "
                                  "overwrite_index=True to replace it or 'reuse' to use it as it is")
        enc, documents, passages = self._prepare(collection, document_ids, document_metadatas, max_document_length,
                                                 split_documents, document_splitter_fn, preprocessing_fn)
        if shards > len(passages):
            raise ValueError(f"shards={shards}: the collection makes {len(passages)} passages; use at most that many "
                             "shards")
        self._note(f"indexing {len(documents)} documents as {len(passages)} passages of at most "
                   f"{enc.document_length} tokens into {str(self.index_root / name)!r}")
        then = "clustering them (k-means) and compressing the residuals"
        embeddings = (PassageCorpus(enc, [c for _, c in passages], bsize, self._encode_lock)
                      if on_gpu and pool_factor == 1 else _pooled(self._embed(enc, passages, bsize, then=then),
                                                                  pool_factor))
        return self._write_index(name, enc, documents, passages, embeddings, nbits=nbits, device=device,
                                 residual_codec=residual_codec, metadata_indexes=metadata_indexes,
                                 keep_vectors=keep_vectors, shards=int(shards),
                                 passages_config={"pool_factor": pool_factor,
                                                  "requested_max_document_length": int(max_document_length),
                                                  "split_documents": bool(split_documents),
                                                  "splitter": _fn_name(document_splitter_fn if split_documents
                                                                       else None)})

    def _write_index(self, name: str, enc: Any, documents: list[tuple[Any, Optional[str]]],
                     passages: list[tuple[Any, str]], embeddings: Any, *, nbits: Optional[int] = None,
                     passages_config: Optional[dict[str, Any]] = None, device: Any = None,
                     residual_codec: Optional[str] = None, metadata_indexes: Optional[list[str]] = None,
                     keep_vectors: Optional[str] = None, shards: int = 1) -> str:
        """Build an index folder from prepared documents, passages and their embeddings (an iterable of
        (n_tokens, dim) arrays or of batches of them, in passage order), then move it into place."""
        path = self.index_root / name
        n = len(passages)
        chosen = "given"
        if nbits is None:
            nbits, chosen = DEFAULT_NBITS, "default"
        t0 = time.perf_counter()
        with staged_folder(path) as staging:
            engine = Index.build(staging / ENGINE_DIR, embeddings, nbits=nbits, progress=self.verbose >= 2,
                                 metadata={"plaidx_rag": {"index_name": name}}, device=device,
                                 residual_codec=residual_codec, keep_vectors=keep_vectors)
            ids = engine.ids
            if ids.size != n:
                raise ValueError(f"{ids.size} embeddings for {n} passages")
            timings = engine.info().get("build", {}).get("timings", {}) if self.verbose >= 1 else {}
            self._note(f"compressed {engine.n_tokens} tokens: {engine.nlist} centroids, nbits {nbits} "
                       f"({'default' if chosen == 'default' else 'as given'})"
                       + (f", k-means {timings['kmeans_s']:.1f}s, compression {timings['assign_compress_s']:.1f}s"
                          if {"kmeans_s", "assign_compress_s"} <= set(timings) else ""))
            if shards > 1:  # in the staging folder: the old index stays in place until the whole new one is there
                from ..distributed import reshard_in_place

                reshard_in_place(staging / ENGINE_DIR, shards)
            self._note(f"writing the document store ({n} passages)")
            with DocStore(staging / DOCSTORE_FILE, create=True) as store:
                store.add(documents, [(int(p), d, c) for p, (d, c) in zip(ids, passages)])
                if metadata_indexes:
                    store.index_metadata(metadata_indexes)
            write_json_atomic(staging / CONFIG_FILE, {
                "format": FORMAT, "format_version": FORMAT_VERSION, "plaidx_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": enc.config_dict(),
                "index": {"nbits": engine.nbits, "nbits_chosen": chosen, "nlist": engine.nlist,
                          "residual_codec": engine.residual_codec, "keep_vectors": engine.keep_vectors,
                          "kmeans_niters": 4, "seed": 0},
                "passages": {"max_document_length": int(enc.document_length), **(passages_config or {})},
            })
            self._folders.forget(path)
        self._open(name)
        self.index_name = name
        self._note(f"index {name!r} ready in {time.perf_counter() - t0:.1f}s: {str(path)!r}")
        return str(path)

    def add_to_index(self, new_collection: list[str], new_document_ids: Optional[Union[Any, list[Any]]] = None,
                     new_document_metadatas: Optional[list[dict]] = None, index_name: Optional[str] = None,
                     split_documents: bool = True, document_splitter_fn: Optional[Callable] = _splitter.split_documents,
                     preprocessing_fn: Optional[Union[Callable, list[Callable]]] = None, bsize: int = 32,
                     use_faiss: bool = False) -> list[Any]:
        """Add documents to an index (compressed against its centroids; no rebuild); returns their ids.

        Raises ValueError, and stores nothing, for ids already in the index, a metadata list of the wrong
        length or any other bad input. ``use_faiss`` is accepted and ignored.
        """
        with write_lock(self._handle(index_name).path):  # one write at a time here: automatic ids are free ones
            return self._add_locked(new_collection, new_document_ids, new_document_metadatas, index_name,
                                    split_documents, document_splitter_fn, preprocessing_fn, bsize)

    def _add_locked(self, new_collection: list[str], new_document_ids: Any, new_document_metadatas: Any,
                    index_name: Optional[str], split_documents: bool, document_splitter_fn: Optional[Callable],
                    preprocessing_fn: Any, bsize: int) -> list[Any]:
        h = self._handle(index_name)  # the folder on disk now: a rebuild may have finished while this waited
        store = h.store
        next_int = 0
        if new_document_ids is None and store.id_type == "int":
            next_int = store.max_int_id() + 1
            if next_int + (len(new_collection) if hasattr(new_collection, "__len__") else 1) - 1 > MAX_INT:
                raise ValueError(f"this index's integer ids reach {next_int - 1}, so new ones would pass {MAX_INT}: "
                                 "pass new_document_ids")
        enc, documents, passages = self._prepare(new_collection, new_document_ids, new_document_metadatas,
                                                 h.max_document_length, split_documents, document_splitter_fn,
                                                 preprocessing_fn, id_type=store.id_type, next_int=next_int)
        dup = store.existing([d for d, _ in documents])
        if dup:  # checked again under the write lock; this saves the encoding
            raise ValueError(f"document ids already in the index: {dup[:10]}; delete them first or use new ids")
        pool_factor = int(h.config["passages"].get("pool_factor", 1))  # as the index was built
        embeddings = [e for batch in _pooled(self._embed(enc, passages, bsize), pool_factor) for e in batch]
        h.add(documents, passages, embeddings, drift_hint="rebuilding it with RAGPretrainedModel.index")
        return [d for d, _ in documents]

    def delete_from_index(self, document_ids: Union[Any, list[Any]], index_name: Optional[str] = None) -> int:
        """Delete documents (all their passages) by id; returns the number of passages deleted.

        Raises KeyError naming unknown ids, and deletes nothing then.
        """
        h = self._handle(index_name)
        ids = list(dict.fromkeys(as_id_list(document_ids, "document_ids")))
        if not ids:
            return 0
        return int(h.delete(ids).size)

    def index_metadata(self, fields: list[str], index_name: Optional[str] = None, *, drop: bool = False) -> list[str]:
        """(plaidx only) Index metadata fields for ``where`` filters, or with ``drop=True`` remove their indexes;
        returns the indexed fields. A filter on an indexed field (``$eq``, ``$in``, comparisons) reads only the
        matching documents instead of every document's metadata; each index adds a little to every add."""
        return self._handle(index_name).index_metadata(check_fields(fields, "fields"), drop=drop)

    # -- RAGatouille API: search ------------------------------------------------------------------
    def search(self, query: Union[str, list[str]], index_name: Optional[str] = None, k: int = 10,
               force_fast: bool = False, zero_index_ranks: bool = False, doc_ids: Optional[list[Any]] = None,
               where: Optional[dict[str, Any]] = None,
               **kwargs: Any) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Search an index with one query (a list of results) or a list of queries (a list of lists).

        Each result is ``{"content", "score", "rank", "document_id", "passage_id"}`` plus
        ``"document_metadata"`` when the document has metadata; ``score`` is the MaxSim score, ``rank`` is
        1-based (0-based with ``zero_index_ranks``). Fewer than k results come back only when fewer
        passages exist (or pass the filter).

        Parameters
        ----------
        doc_ids : restrict the search to these documents (inside the engine, so k results still come back
            when k of their passages exist); unknown ids raise KeyError. A list of lists, one per query,
            restricts each query to its own.
        where : restrict the search to documents whose metadata matches, e.g. ``{"lang": "en", "year":
            {"$gte": 2020}}`` (operators and rules: :mod:`plaidx.rag.where`); with ``doc_ids``, both must hold.
        force_fast : smaller search parameters (fewer probed cells and candidates): faster, lower recall.
        **kwargs : ``nprobe``, ``centroid_score_threshold``, ``ndocs``, ``n_exact``, ``exact_scores`` and, on an
            index built with ``keep_vectors``, ``rerank`` override the PLAID search parameters (see
            :class:`plaidx.SearchParams`); ``exact=True`` scores every passage, ``exact=False`` forces PLAID. By
            default indexes of at most ``EXACT_MAX_TOKENS`` tokens are scored exhaustively (exact MaxSim over
            the kept vectors where the index has them, else over the compressed index), larger ones with PLAID.
        """
        k = check_k(k)
        bad = set(kwargs) - set(_SEARCH_KWARGS) - {"exact"}
        if bad:
            raise TypeError(f"search() got unexpected keyword arguments {sorted(bad)}")
        single, queries = _query_texts(query)
        exact = kwargs.pop("exact", None)
        path = self._handle(index_name).path
        per_query = per_query_lists(doc_ids, len(queries))
        if per_query is not None:
            per_query = [as_id_list(ids, "doc_ids") for ids in per_query]
        params = _search_params(k, force_fast, kwargs)
        encoded: list[Any] = []

        def run(h: IndexFolder) -> list[list[Any]]:  # again on the new folder if an overwrite lands meanwhile
            # small indexes (exact=None): exhaustive scoring is exact and costs no more than PLAID there
            if per_query is None:  # one filter: unknown ids and bad filters fail before the encoding
                allowed = h.allowed(None if doc_ids is None else as_id_list(doc_ids, "doc_ids"), where)
            if not encoded:  # once, whichever folder answers
                encoded.append(self._encode_queries(queries))
            if per_query is None:
                return h.search(encoded[0], k, params=params, passages=allowed, exact=exact)
            return h.search(encoded[0], k, params=params, doc_ids=per_query, where=where, exact=exact)

        hits = self._folders.read(path, run, check=self._check_model)
        start = 0 if zero_index_ranks else 1
        out = []
        for row in hits:
            res = []
            for r, (pid, score, doc_id, content, meta) in enumerate(row):
                item = {"content": content, "score": score, "rank": r + start, "document_id": doc_id,
                        "passage_id": pid}
                if meta is not None:
                    item["document_metadata"] = meta
                res.append(item)
            out.append(res)
        return out[0] if single else out

    # -- RAGatouille API: rerank and in-memory search -------------------------------------------------
    def _fit_encoder(self, documents: list[str], max_document_length: Any = "auto") -> Any:
        """The document encoder for in-memory use: long enough for the longest document (up to the model's
        positions) with "auto", else the given length."""
        if max_document_length == "auto":
            with self._encode_lock:
                longest = max(self.model.count_tokens(documents, add_special_tokens=True))
            limit = getattr(self.model, "max_length", None) or longest
            want = max(self.model.document_length, min(-(-longest // 64) * 64, limit))
            if longest > limit:
                warnings.warn(f"some documents are longer than the {limit} tokens the model reads and will be "
                              "truncated", stacklevel=4)
        else:
            if isinstance(max_document_length, bool) or not isinstance(max_document_length, int):
                raise ValueError(f"max_document_length must be 'auto' or an integer, got {max_document_length!r}")
            want = max_document_length
        return self._doc_encoder(int(want))

    def score(self, queries: list[str], documents: list[str], bsize: Any = "auto") -> np.ndarray:
        """float32 (n_queries, n_documents) MaxSim scores of texts, encoded in memory (no index)."""
        bsize = 32 if bsize == "auto" else bsize
        enc = self._fit_encoder(documents)
        Q = self._encode_queries(queries)
        D = self._encode_documents(enc, documents, bsize)
        return np.atleast_2d(maxsim(Q, D))

    def rerank(self, query: Union[str, list[str]], documents: list[str], k: int = 10,
               zero_index_ranks: bool = False, bsize: Union[Literal["auto"], int] = 64
               ) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Order documents by MaxSim with the query, in memory (no index).

        Returns ``[{"content", "score", "rank", "result_index"}]`` best first (a list of such lists for a
        list of queries); ``result_index`` is the document's position in ``documents``. k larger than the
        number of documents returns them all. Documents are read in full up to the model's positions.
        """
        k = check_k(k)
        single, queries = _query_texts(query)
        docs = check_texts(documents, "documents")
        scores = self.score(queries, docs, bsize)
        start = 0 if zero_index_ranks else 1
        out = [[{"content": docs[i], "score": float(row[i]), "rank": r + start, "result_index": int(i)}
                for r, i in enumerate(top_indices(row, k))] for row in scores]
        return out[0] if single else out

    def encode(self, documents: list[str], bsize: Union[Literal["auto"], int] = "auto",
               document_metadatas: Optional[list[dict]] = None, verbose: bool = True,
               max_document_length: Union[Literal["auto"], int] = "auto") -> None:
        """Encode documents into memory for :meth:`search_encoded_docs` (appends to earlier calls)."""
        docs = check_texts(documents, "documents")
        if document_metadatas is not None:
            check_metadatas(document_metadatas, len(docs))
        enc = self._fit_encoder(docs, max_document_length)
        emb = self._encode_documents(enc, docs, 32 if bsize == "auto" else bsize,
                                     show=self._show() if verbose else False)
        metas = list(document_metadatas) if document_metadatas is not None else [None] * len(docs)
        with self._memory_lock:
            mem = self._memory or {"documents": [], "embeddings": [], "metadata": []}
            self._memory = {"documents": mem["documents"] + docs, "embeddings": mem["embeddings"] + emb,
                            "metadata": mem["metadata"] + metas}

    def search_encoded_docs(self, query: Union[str, list[str]], k: int = 10, bsize: int = 32
                            ) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Search the documents given to :meth:`encode`: ``[{"content", "score", "rank", "result_index"}]``
        plus ``"document_metadata"`` when metadata was given, best first."""
        k = check_k(k)
        with self._memory_lock:
            mem = self._memory
        if not mem:
            raise ValueError("no encoded documents: call encode() first")
        single, queries = _query_texts(query)
        Q = self._encode_queries(queries, bsize=bsize)
        scores = np.atleast_2d(maxsim(Q, mem["embeddings"]))
        has_meta = any(m is not None for m in mem["metadata"])
        out = []
        for row in scores:
            res = []
            for r, i in enumerate(top_indices(row, k)):
                item = {"content": mem["documents"][i], "score": float(row[i]), "rank": r + 1, "result_index": int(i)}
                if has_meta:
                    item["document_metadata"] = mem["metadata"][i]
                res.append(item)
            out.append(res)
        return out[0] if single else out

    def clear_encoded_docs(self, force: bool = False) -> None:
        """Forget the documents given to :meth:`encode`; without ``force``, after a 10 s warning (as RAGatouille)."""
        if not force:
            warnings.warn("all in-memory encodings will be deleted in 10 seconds; interrupt now to keep them "
                          "(force=True skips the wait)", stacklevel=2)
            time.sleep(10)
        with self._memory_lock:
            self._memory = None

    # -- integrations ---------------------------------------------------------------------------------
    def as_langchain_retriever(self, **kwargs: Any) -> Any:
        """A LangChain retriever calling :meth:`search` with ``kwargs`` (e.g. ``k=5``); needs langchain-core."""
        from .langchain import PlaidxLangChainRetriever

        return PlaidxLangChainRetriever(model=self, kwargs=kwargs)

    def as_langchain_document_compressor(self, k: int = 5, **kwargs: Any) -> Any:
        """A LangChain document compressor calling :meth:`rerank`; needs langchain-core."""
        from .langchain import PlaidxLangChainCompressor

        return PlaidxLangChainCompressor(model=self, k=k, kwargs=kwargs)


def _check_pool_factor(pool_factor: Any) -> int:
    from ..encoder.pooling import check_pool_factor

    return check_pool_factor(pool_factor)


def _pooled(batches: Any, pool_factor: int) -> Iterator[list]:
    """Batches of passage embeddings with token pooling applied (``pool_factor`` 1: unchanged)."""
    if pool_factor == 1:
        yield from batches
        return
    from ..encoder.pooling import pool_documents

    for batch in batches:
        yield pool_documents(batch, pool_factor)


def _fn_name(fn: Any) -> Optional[str]:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _takes_two(fn: Callable) -> bool:
    """Whether a preprocessing hook takes (passages, document_ids), as RAGatouille calls its hooks, rather than
    (passages) alone."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: one argument
        return False
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(required) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _query_texts(query: Any) -> tuple[bool, list[str]]:
    """(whether ``query`` is one text, the queries as a list), checked: RAGatouille takes a string or a list."""
    if isinstance(query, str):
        if not query.strip():
            raise ValueError("query is empty")
        check_unicode(query, "query")
        return True, [query]
    return False, check_texts(query, "query", empty="give at least one query")


def _search_params(k: int, force_fast: bool, overrides: dict[str, Any]) -> SearchParams:
    """Per-call PLAID knobs: none set (the engine's defaults for k, the index size and nbits), or smaller ones
    with force_fast; ``overrides`` win."""
    base: dict[str, Any] = {}
    if force_fast:
        base = {"nprobe": 1, "centroid_score_threshold": 0.5, "ndocs": max(256, 4 * k)}
    base.update(overrides)
    return SearchParams(**base)
