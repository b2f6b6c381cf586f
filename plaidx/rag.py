"""RAGatouille-compatible text-in, results-out API: indexes of passages with ids and metadata, search, rerank."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

from . import __version__
from . import splitter as _splitter
from .docstore import DocStore, metadata_json
from .errors import IndexFormatError, IndexLockedError
from .index import Index
from .inputs import check_k
from .scoring import maxsim
from .storage import WriterLock, fsync_dir

FORMAT = "plaidx-rag"
FORMAT_VERSION = 1
CONFIG_FILE = "plaidx_rag.json"
ENGINE_DIR = "engine"
DOCSTORE_FILE = "docstore.sqlite"
DEFAULT_INDEX_ROOT = os.path.join(".plaidx", "indexes")
_NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$")
_SEARCH_KWARGS = ("nprobe", "centroid_score_threshold", "ndocs", "n_exact")
EXACT_MAX_TOKENS = 1 << 15  # indexes up to this many tokens are searched exhaustively (exact, and no slower)

__all__ = ["RAGPretrainedModel", "rerank"]


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


def _check_name(name: Any, strict: bool = True) -> str:
    """A new index's name: letters, digits, '.', '_', '-'; an existing one (strict=False): any folder name."""
    if not strict and isinstance(name, str) and name not in ("", ".", "..") and os.sep not in name and \
            (os.altsep is None or os.altsep not in name):
        return name
    if not isinstance(name, str) or not _NAME_OK.match(name) or name in (".", ".."):
        raise ValueError(f"index_name must be a folder name of letters, digits, '.', '_' or '-' (not starting "
                         f"with '.' or '-'), got {name!r}")
    return name


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_config(path: Path) -> dict[str, Any]:
    f = path / CONFIG_FILE
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{str(path)!r} is not a plaidx RAG index: {CONFIG_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{str(f)!r} is unreadable or not JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise IndexFormatError(f"{str(f)!r} is not a plaidx RAG index configuration")
    v = cfg.get("format_version")
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise IndexFormatError(f"{str(f)!r}: format version {v!r} is newer than this plaidx supports "
                               f"({FORMAT_VERSION}); upgrade plaidx")
    if not isinstance(cfg.get("model"), dict):
        raise IndexFormatError(f"{str(f)!r}: the model configuration is missing")
    return cfg


def _as_id_list(ids: Any, what: str) -> list[Any]:
    if isinstance(ids, (str, int, np.integer)) and not isinstance(ids, bool):
        return [ids]
    if ids is None or not hasattr(ids, "__iter__"):
        raise TypeError(f"{what} must be a document id or a list of them, got {type(ids).__name__}")
    return [int(x) if isinstance(x, np.integer) else x for x in ids]


def _check_collection(collection: Any, what: str = "collection") -> list[str]:
    from .encoder.model import _check_texts  # the encoder's validator, with the wording of an index call

    return _check_texts(collection, what, empty="give at least one document", blank="is empty or blank")


def _check_ids(ids: Optional[Sequence[Any]], n: int) -> list[Any]:
    """RAGatouille's rules: generated uuid4 strings when None; same length, unique, one type, no blanks."""
    if ids is None:
        return [str(uuid.uuid4()) for _ in range(n)]
    ids = _as_id_list(ids, "document_ids")
    if len(ids) != n:
        raise ValueError(f"document_ids must be the same length as collection ({len(ids)} ids for {n} documents)")
    for x in ids:
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            raise ValueError(f"document_ids must be strings or integers, got {type(x).__name__} {x!r}")
    if not all(isinstance(x, type(ids[0])) for x in ids):
        raise ValueError("All document_ids must be of the same type")
    if any(isinstance(x, str) and not x.strip() for x in ids):
        raise ValueError("document_ids must not contain empty strings")
    if len(set(ids)) != len(ids):
        seen: set[Any] = set()
        dups = [x for x in ids if x in seen or seen.add(x)]
        raise ValueError(f"document_ids must be unique (repeated: {dups[:10]})")
    return ids


def _check_metadatas(metadatas: Optional[Sequence[Any]], n: int) -> list[Optional[str]]:
    if metadatas is None:
        return [None] * n
    if isinstance(metadatas, dict) or not hasattr(metadatas, "__len__"):
        raise TypeError("document_metadatas must be a list of dicts, one per document")
    if len(metadatas) != n:
        raise ValueError(f"document_metadatas must be the same length as collection ({len(metadatas)} "
                         f"metadatas for {n} documents)")
    return [metadata_json(m, f"document_metadatas[{i}]") for i, m in enumerate(metadatas)]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first, ties by lower index."""
    order = np.argsort(-scores, kind="stable")
    return order[:k]


def _default_name(model: Any) -> str:
    base = Path(str(getattr(model, "name_or_path", "") or "plaidx")).name
    base = re.sub(r"[^A-Za-z0-9._\-]", "_", base).lstrip(".-") or "plaidx"
    return f"{base}_new_index"


def _document_encoder(model: Any, length: int) -> Any:
    """The model reading documents of ``length`` tokens (special tokens included); shares the weights."""
    limit = getattr(model, "max_length", None) or length
    length = int(min(length, limit))
    if length == model.document_length:
        return model
    ckpt = getattr(model, "_ckpt", None)
    if ckpt is not None:
        return type(model)(ckpt, model.name_or_path, model.device, model.dtype, model.query_length, length)
    return type(model).from_pretrained(model.name_or_path, device=model.device, dtype=model.dtype,
                                       query_length=model.query_length, document_length=length)


def _reserved(model: Any) -> int:
    return int(model.document_length - model.max_document_tokens)


# ---------------------------------------------------------------------------------------------- folders
def _build_dir(path: Path) -> Path:
    return path.parent / f".{path.name}.build"


def _recover(path: Path) -> None:
    """Finish or undo an interrupted overwrite of the index at ``path`` (see :func:`_publish`)."""
    bdir = _build_dir(path)
    if not bdir.is_dir():
        return
    try:
        lock = WriterLock(bdir).acquire()
    except IndexLockedError:
        return  # a build is running; it cleans up after itself
    try:
        replaced, staging = bdir / "replaced", bdir / "staging"
        if replaced.exists():
            if not path.exists():  # crashed between the two renames: the old index stays
                os.rename(replaced, path)
                fsync_dir(path.parent)
            else:
                shutil.rmtree(replaced, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()


def _publish(staging: Path, path: Path) -> None:
    """Move a complete index folder into place, replacing any index there; the build lock is held.

    Two renames: the old folder into the build folder, then the new one into place. A crash between them
    leaves no folder at ``path`` and the old one under the build folder, and :func:`_recover` puts it back.
    """
    fsync_dir(staging.parent)
    if path.exists():
        replaced = _build_dir(path) / "replaced"
        with WriterLock(path):  # no add/delete of the old index is half done
            os.rename(path, replaced)
        os.rename(staging, path)
        fsync_dir(path.parent)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.rename(staging, path)
        fsync_dir(path.parent)


# ---------------------------------------------------------------------------------------------- one index
class _OpenIndex:
    """An index folder opened for use: its engine, document store and configuration.

    Invariant: every passage in the document store is a live document of the engine. Writes keep it by
    their order (add: engine commit, then SQLite commit; delete: SQLite commit, then engine commit), so a
    crash can only leave engine documents that the store does not know: opening deletes them
    (reconciliation), and searches skip them meanwhile.
    """

    def __init__(self, path: Path):
        _recover(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no index at {str(path)!r}")
        self.path = path
        self.name = path.name
        self._folder = os.stat(path).st_ino
        self.config = _read_config(path)
        self.engine = Index.open(path / ENGINE_DIR)
        self.store = DocStore(path / DOCSTORE_FILE)
        self.write_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.reconciled = self._reconcile()
        self._stamp = self._manifest_stamp()

    def _manifest_stamp(self) -> Optional[tuple[int, int, int]]:
        try:
            st = os.stat(self.path / ENGINE_DIR / "manifest.json")
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def replaced(self) -> bool:
        """Whether the folder at this path is no longer the one opened (an overwrite replaced it)."""
        try:
            return os.stat(self.path).st_ino != self._folder
        except OSError:
            return True

    def refresh(self) -> None:
        """Switch the engine to its newest generation when another handle or process committed one."""
        stamp = self._manifest_stamp()
        if stamp != self._stamp:
            with self._reload_lock:
                if stamp != self._stamp:
                    self.engine.reload()
                    self._stamp = stamp

    def _reconcile(self) -> int:
        try:
            lock = WriterLock(self.path).acquire()
        except IndexLockedError:
            return 0  # another process is writing; its own order keeps the invariant
        try:
            self.engine.reload()
            engine_ids = self.engine.ids
            stored = self.store.all_passage_ids()
            missing = np.setdiff1d(stored, engine_ids, assume_unique=True)
            if missing.size:
                raise IndexFormatError(f"{str(self.path)!r}: the document store names {missing.size} passages the "
                                       f"engine does not hold (first: {missing[:5].tolist()}); the index is damaged")
            orphans = np.setdiff1d(engine_ids, stored, assume_unique=True)
            if orphans.size:
                self.engine.delete(orphans)
            return int(orphans.size)
        finally:
            lock.release()

    @property
    def max_document_length(self) -> int:
        return int(self.config["passages"]["max_document_length"])

    def close(self) -> None:
        self.store.close()

    # -- writes ---------------------------------------------------------------------------------
    def add(self, documents: list[tuple[Any, Optional[str]]], passages: list[tuple[Any, str]],
            embeddings: list[np.ndarray]) -> np.ndarray:
        with self.write_lock, WriterLock(self.path):
            dup = self.store.existing([d for d, _ in documents])
            if dup:
                raise ValueError(f"document ids already in the index: {dup[:10]}; delete them first or use new ids")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pids = self.engine.add(embeddings)
            self._relay(caught)
            try:
                self.store.add(documents, [(int(p), d, c) for p, (d, c) in zip(pids, passages)])
            except BaseException:
                self.engine.delete(pids)  # undo; were this to fail too, the next open reconciles
                raise
            finally:
                self._stamp = self._manifest_stamp()  # this handle already reads its own commit
            return pids

    def _relay(self, caught: list[warnings.WarningMessage]) -> None:
        """Re-emit the engine's warnings; its drift advice only where PLAID searches the index."""
        for w in caught:
            msg = str(w.message)
            if "drift" in msg:
                if self.engine.n_tokens <= EXACT_MAX_TOKENS:
                    continue  # searched exhaustively: drift costs no recall here
                msg = (f"index {self.name!r}: {msg.split(';')[0]}; rebuilding it with RAGPretrainedModel.index "
                       "restores full recall")
            warnings.warn(msg, w.category, stacklevel=4)

    def delete(self, document_ids: list[Any]) -> np.ndarray:
        with self.write_lock, WriterLock(self.path):
            pids = self.store.delete_documents(document_ids)
            if pids.size:
                try:
                    self.engine.delete(pids)
                finally:
                    self._stamp = self._manifest_stamp()
            return pids

    # -- search ---------------------------------------------------------------------------------
    def search(self, Q: np.ndarray, k: int, params: dict[str, Any], filter_pids: Optional[np.ndarray],
               exact: bool = False) -> list[list[tuple[int, float, tuple[Any, str, Any]]]]:
        """Per query, up to k (passage_id, score, (document_id, content, metadata)), best first."""
        self.refresh()
        engine = self.engine
        n_live = len(engine)
        if (filter_pids is not None and filter_pids.size == 0) or n_live == 0:
            return [[] for _ in range(Q.shape[0])]
        kk = min(k, n_live)
        while True:
            try:
                scores, ids = engine.search(Q, kk, doc_ids=filter_pids, exact=exact, **params)
            except KeyError:  # filter names passages this snapshot lacks (another handle changed the index)
                filter_pids = filter_pids[np.isin(filter_pids, engine.ids)]
                if filter_pids.size == 0:
                    return [[] for _ in range(Q.shape[0])]
                continue
            found = np.unique(ids[ids >= 0])
            rows = self.store.lookup(found.tolist())
            out, short = [], False
            for srow, irow in zip(scores, ids):
                hits = [(int(p), float(s), rows[int(p)]) for s, p in zip(srow, irow) if p >= 0 and int(p) in rows]
                short |= len(hits) < k and bool(irow[-1] >= 0) and len(hits) < len(irow)
                out.append(hits[:k])
            # passages in the engine but not in the store (a write in flight) took places: ask for more
            if not short or kk >= n_live:
                return out
            kk = min(2 * kk, n_live)


# ---------------------------------------------------------------------------------------------- the model
class RAGPretrainedModel:
    """A late-interaction model with its indexes, in RAGatouille's shape.

    Load one with :meth:`from_pretrained` (a checkpoint) or :meth:`from_index` (an index folder, with
    the model recorded in it). Index folders live under ``index_root`` (default ``.plaidx/indexes``):
    ``<index_root>/<index_name>/engine/`` (the compressed :class:`plaidx.Index`), ``docstore.sqlite``
    (passages, document ids and metadata) and ``plaidx_rag.json`` (model and parameters).

    Search, rerank and the in-memory methods are safe to call from several threads at once; writes to
    one index (index, add_to_index, delete_from_index) are serialised.
    """

    def __init__(self, model: Any, index_root: Optional[Union[str, os.PathLike]] = None, verbose: int = 1):
        self.model = model
        self.model_name = getattr(model, "name_or_path", None)
        self.index_root = Path(index_root if index_root is not None else DEFAULT_INDEX_ROOT)
        self.verbose = int(verbose)
        self.index_name: Optional[str] = None
        self._handles: dict[Path, _OpenIndex] = {}
        self._handles_lock = threading.RLock()
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
        verbose : 0 silent, 1 progress bars for long jobs, 2 progress bars always.
        index_root : folder of the indexes (default ``.plaidx/indexes``).
        """
        from .encoder import ColBERT

        model = ColBERT.from_pretrained(pretrained_model_name_or_path, device=_device_for(n_gpu))
        return cls(model, index_root=index_root, verbose=verbose)

    @classmethod
    def from_index(cls, index_path: Union[str, os.PathLike], n_gpu: int = -1, verbose: int = 1) -> RAGPretrainedModel:
        """Open an index folder with the model recorded in it (its root becomes ``index_root``)."""
        from .encoder import ColBERT

        path = Path(index_path)
        _recover(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no index at {str(path)!r}")
        cfg = _read_config(path)
        model = ColBERT.from_config_dict(cfg["model"], device=_device_for(n_gpu))
        rag = cls(model, index_root=path.parent, verbose=verbose)
        rag._open(path.name)
        rag.index_name = path.name
        return rag

    def __repr__(self) -> str:
        return f"RAGPretrainedModel({self.model!r}, index_root={str(self.index_root)!r}, index_name={self.index_name!r})"

    # -- index handles ---------------------------------------------------------------------------
    def _open(self, name: str) -> _OpenIndex:
        path = self.index_root / _check_name(name, strict=False)
        with self._handles_lock:
            h = self._handles.get(path)
            if h is not None and h.replaced():  # another handle or process overwrote the index
                del self._handles[path]
                h = None
            if h is None:
                if not path.is_dir():
                    _recover(path)
                if not path.is_dir():
                    known = sorted(p.name for p in self.index_root.iterdir()
                                   if p.is_dir() and (p / CONFIG_FILE).is_file()) if self.index_root.is_dir() else []
                    raise FileNotFoundError(f"no index named {name!r} under {str(self.index_root)!r} "
                                            f"(indexes there: {known})")
                h = _OpenIndex(path)
                self._check_model(h)
                self._handles[path] = h
            return h

    def _handle(self, index_name: Optional[str]) -> _OpenIndex:
        if index_name is None:
            if self.index_name is None:
                raise ValueError("no index selected: build one with index(), open one with from_index(), or pass "
                                 "index_name")
            index_name = self.index_name
        h = self._open(index_name)
        self.index_name = index_name
        return h

    def _forget(self, path: Path) -> None:
        """Drop a cached handle; searches still running on it finish (its files stay open until collected)."""
        with self._handles_lock:
            self._handles.pop(path, None)

    def _check_model(self, h: _OpenIndex) -> None:
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

    def _encode_queries(self, queries: list[str], bsize: int = 32) -> np.ndarray:
        with self._encode_lock:
            return self.model.encode_queries(queries, bsize=bsize, show_progress_bar=False)

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
            new = list(fn(items))
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
        docs = _check_collection(collection)
        if document_ids is None and id_type == "int":
            ids: list[Any] = list(range(next_int, next_int + len(docs)))
        else:
            ids = _check_ids(document_ids, len(docs))
        if id_type is not None and not isinstance(ids[0], int if id_type == "int" else str):
            raise ValueError(f"this index stores {id_type} document ids, got {type(ids[0]).__name__} ids")
        metas = _check_metadatas(document_metadatas, len(docs))
        if isinstance(max_document_length, bool) or not isinstance(max_document_length, int) or max_document_length < 1:
            raise ValueError(f"max_document_length must be a positive integer, got {max_document_length!r}")
        enc = self._doc_encoder(max_document_length)
        passages = self._passages(docs, ids, enc, max_document_length, split, splitter, preprocessing_fn)
        return enc, list(zip(ids, metas)), passages

    def _embed(self, enc: Any, passages: list[tuple[Any, str]], bsize: int, chunk: int = 4096) -> Iterator[list]:
        """Embeddings of the passages, in order, as batches (the build streams them to disk)."""
        for lo in range(0, len(passages), chunk):
            yield self._encode_documents(enc, [c for _, c in passages[lo:lo + chunk]], bsize)

    # -- RAGatouille API: indexes -------------------------------------------------------------------
    def index(self, collection: list[str], document_ids: Optional[Union[Any, list[Any]]] = None,
              document_metadatas: Optional[list[dict]] = None, index_name: Optional[str] = None,
              overwrite_index: Union[bool, str] = True, max_document_length: int = 256,
              split_documents: bool = True, document_splitter_fn: Optional[Callable] = _splitter.split_documents,
              preprocessing_fn: Optional[Union[Callable, list[Callable]]] = None, bsize: int = 32,
              use_faiss: bool = False, *, nbits: Optional[int] = None) -> str:
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
        preprocessing_fn : a function, or list of them, from and to that list of passage dicts.
        bsize : encoding batch size.
        use_faiss : accepted for compatibility and ignored (plaidx always trains its centroids with faiss
            k-means and searches with its own engine).
        nbits : (plaidx only) bits per residual dimension, 1, 2, 4 or 8; default as RAGatouille: 8 below 5,000
            passages, 4 below 10,000, else 2.
        """
        name = _check_name(index_name) if index_name is not None else _default_name(self.model)
        path = self.index_root / name
        _recover(path)
        if path.exists() and overwrite_index is not True:
            if overwrite_index == "reuse":
                self._open(name)
                self.index_name = name
                return str(path)
            raise FileExistsError(f"an index named {name!r} already exists under {str(self.index_root)!r}; pass "
                                  "overwrite_index=True to replace it or 'reuse' to use it as it is")
        enc, documents, passages = self._prepare(collection, document_ids, document_metadatas, max_document_length,
                                                 split_documents, document_splitter_fn, preprocessing_fn)
        return self._write_index(name, enc, documents, passages, self._embed(enc, passages, bsize), nbits=nbits,
                                 passages_config={"requested_max_document_length": int(max_document_length),
                                                  "split_documents": bool(split_documents),
                                                  "splitter": _fn_name(document_splitter_fn if split_documents
                                                                       else None)})

    def _write_index(self, name: str, enc: Any, documents: list[tuple[Any, Optional[str]]],
                     passages: list[tuple[Any, str]], embeddings: Any, *, nbits: Optional[int] = None,
                     passages_config: Optional[dict[str, Any]] = None) -> str:
        """Build an index folder from prepared documents, passages and their embeddings (an iterable of
        (n_tokens, dim) arrays or of batches of them, in passage order), then move it into place."""
        path = self.index_root / name
        n = len(passages)
        if nbits is None:  # as RAGatouille: more bits where the index is small anyway
            nbits = 8 if n < 5000 else (4 if n < 10000 else 2)
        self.index_root.mkdir(parents=True, exist_ok=True)
        bdir = _build_dir(path)
        with WriterLock(bdir):
            staging = bdir / "staging"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            try:
                engine = Index.build(staging / ENGINE_DIR, embeddings, nbits=nbits, progress=self.verbose >= 2,
                                     metadata={"plaidx_rag": {"index_name": name}})
                ids = engine.ids
                if ids.size != n:
                    raise ValueError(f"{ids.size} embeddings for {n} passages")
                with DocStore(staging / DOCSTORE_FILE, create=True) as store:
                    store.add(documents, [(int(p), d, c) for p, (d, c) in zip(ids, passages)])
                _write_json_atomic(staging / CONFIG_FILE, {
                    "format": FORMAT, "format_version": FORMAT_VERSION, "plaidx_version": __version__,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "model": enc.config_dict(),
                    "index": {"nbits": engine.nbits, "nlist": engine.nlist, "kmeans_niters": 4, "seed": 0},
                    "passages": {"max_document_length": int(enc.document_length), **(passages_config or {})},
                })
                self._forget(path)
                _publish(staging, path)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        self._open(name)
        self.index_name = name
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
        h = self._handle(index_name)
        store = h.store
        next_int = 0
        if new_document_ids is None and store.id_type == "int":
            next_int = store.max_int_id() + 1
        enc, documents, passages = self._prepare(new_collection, new_document_ids, new_document_metadatas,
                                                 h.max_document_length, split_documents, document_splitter_fn,
                                                 preprocessing_fn, id_type=store.id_type, next_int=next_int)
        dup = store.existing([d for d, _ in documents])
        if dup:  # checked again under the write lock; this saves the encoding
            raise ValueError(f"document ids already in the index: {dup[:10]}; delete them first or use new ids")
        embeddings = [e for batch in self._embed(enc, passages, bsize) for e in batch]
        h.add(documents, passages, embeddings)
        return [d for d, _ in documents]

    def delete_from_index(self, document_ids: Union[Any, list[Any]], index_name: Optional[str] = None) -> int:
        """Delete documents (all their passages) by id; returns the number of passages deleted.

        Raises KeyError naming unknown ids, and deletes nothing then.
        """
        h = self._handle(index_name)
        ids = list(dict.fromkeys(_as_id_list(document_ids, "document_ids")))
        if not ids:
            return 0
        return int(h.delete(ids).size)

    # -- RAGatouille API: search ------------------------------------------------------------------
    def search(self, query: Union[str, list[str]], index_name: Optional[str] = None, k: int = 10,
               force_fast: bool = False, zero_index_ranks: bool = False, doc_ids: Optional[list[Any]] = None,
               **kwargs: Any) -> Union[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Search an index with one query (a list of results) or a list of queries (a list of lists).

        Each result is ``{"content", "score", "rank", "document_id", "passage_id"}`` plus
        ``"document_metadata"`` when the document has metadata; ``score`` is the MaxSim score, ``rank`` is
        1-based (0-based with ``zero_index_ranks``). Fewer than k results come back only when fewer
        passages exist (or pass the filter).

        Parameters
        ----------
        doc_ids : restrict the search to these documents (inside the engine, so k results still come back
            when k of their passages exist); unknown ids raise KeyError.
        force_fast : smaller search parameters (fewer probed cells and candidates): faster, lower recall.
        **kwargs : ``nprobe``, ``centroid_score_threshold``, ``ndocs``, ``n_exact`` override the PLAID
            search parameters (see :class:`plaidx.SearchParams`); ``exact=True`` scores every passage,
            ``exact=False`` forces PLAID. By default indexes of at most ``EXACT_MAX_TOKENS`` tokens are
            scored exhaustively (exact MaxSim over the compressed index), larger ones with PLAID.
        """
        k = check_k(k)
        bad = set(kwargs) - set(_SEARCH_KWARGS) - {"exact"}
        if bad:
            raise TypeError(f"search() got unexpected keyword arguments {sorted(bad)}")
        exact = kwargs.pop("exact", None)
        single = isinstance(query, str)
        queries = [query] if single else _check_collection(query, "query")
        if single and not query.strip():
            raise ValueError("query is empty")
        h = self._handle(index_name)
        filter_pids = None
        if doc_ids is not None:
            filter_pids = h.store.passage_ids(list(dict.fromkeys(_as_id_list(doc_ids, "doc_ids"))))
        if exact is None:  # small indexes: exhaustive scoring is exact and costs no more than PLAID there
            exact = not force_fast and not kwargs and h.engine.n_tokens <= EXACT_MAX_TOKENS
        exact = bool(exact)
        params = {} if exact else _search_params(k, force_fast, kwargs)
        Q = self._encode_queries(queries)
        hits = h.search(Q, k, params, filter_pids, exact=exact)
        start = 0 if zero_index_ranks else 1
        out = []
        for row in hits:
            res = []
            for r, (pid, score, (doc_id, content, meta)) in enumerate(row):
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

    def _score(self, queries: list[str], documents: list[str], bsize: Any) -> np.ndarray:
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
        single = isinstance(query, str)
        queries = [query] if single else _check_collection(query, "query")
        docs = _check_collection(documents, "documents")
        scores = self._score(queries, docs, bsize)
        start = 0 if zero_index_ranks else 1
        out = [[{"content": docs[i], "score": float(row[i]), "rank": r + start, "result_index": int(i)}
                for r, i in enumerate(_top(row, k))] for row in scores]
        return out[0] if single else out

    def encode(self, documents: list[str], bsize: Union[Literal["auto"], int] = "auto",
               document_metadatas: Optional[list[dict]] = None, verbose: bool = True,
               max_document_length: Union[Literal["auto"], int] = "auto") -> None:
        """Encode documents into memory for :meth:`search_encoded_docs` (appends to earlier calls)."""
        docs = _check_collection(documents, "documents")
        if document_metadatas is not None:
            if len(document_metadatas) != len(docs):
                raise ValueError(f"document_metadatas must be the same length as documents "
                                 f"({len(document_metadatas)} for {len(docs)})")
            for i, m in enumerate(document_metadatas):
                metadata_json(m, f"document_metadatas[{i}]")
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
        single = isinstance(query, str)
        queries = [query] if single else _check_collection(query, "query")
        Q = self._encode_queries(queries, bsize=bsize)
        scores = np.atleast_2d(maxsim(Q, mem["embeddings"]))
        has_meta = any(m is not None for m in mem["metadata"])
        out = []
        for row in scores:
            res = []
            for r, i in enumerate(_top(row, k)):
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


def _fn_name(fn: Any) -> Optional[str]:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _search_params(k: int, force_fast: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """Per-call PLAID parameters: none (the engine's defaults for k and the index size), or smaller ones
    with force_fast."""
    base: dict[str, Any] = {}
    if force_fast:
        base = {"nprobe": 1, "centroid_score_threshold": 0.5, "ndocs": max(256, 4 * k)}
    base.update(overrides)
    return base


# ---------------------------------------------------------------------------------------------- Jina shape
def rerank(model: Any, query: str, documents: Sequence[Union[str, dict[str, str]]], top_n: Optional[int] = None,
           return_documents: bool = True) -> list[dict[str, Any]]:
    """Jina-API reranking: ``[{"index", "relevance_score", "document": {"text"}}]``, best first.

    Parameters
    ----------
    model : a :class:`plaidx.ColBERT`, a :class:`RAGPretrainedModel`, or a checkpoint name/path (None:
        the bundled default model).
    query : the query text.
    documents : texts, or ``{"text": ...}`` objects as the Jina API accepts.
    top_n : how many results (default all).
    return_documents : include ``"document": {"text": ...}`` in each result.
    """
    if isinstance(model, RAGPretrainedModel):
        rag = model
    elif hasattr(model, "encode_queries") and hasattr(model, "encode_documents"):
        rag = RAGPretrainedModel(model, verbose=0)
    elif model is None or isinstance(model, (str, os.PathLike)):
        rag = RAGPretrainedModel.from_pretrained(model, verbose=0)
    else:
        raise TypeError(f"model must be a plaidx.ColBERT, a RAGPretrainedModel or a checkpoint name, got "
                        f"{type(model).__name__}")
    if isinstance(query, dict):
        query = query.get("text")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty string")
    texts = [d.get("text") if isinstance(d, dict) else d for d in documents]
    texts = _check_collection(texts, "documents")
    if top_n is not None:
        top_n = check_k(top_n)
    scores = rag._score([query], texts, "auto")[0]
    out = []
    for i in _top(scores, top_n or len(texts)):
        item: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
        if return_documents:
            item["document"] = {"text": texts[i]}
        out.append(item)
    return out
