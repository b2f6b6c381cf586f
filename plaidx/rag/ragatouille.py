"""Opening RAGatouille index folders: converted once, beside the source, into plaidx RAG folders.

A RAGatouille 0.0.x index (``.ragatouille/colbert/indexes/NAME``) is a colbert-ai PLAID folder plus
``collection.json`` (passage texts in pid order), ``pid_docid_map.json`` (``{"pid": document_id}``) and an
optional ``docid_metadata_map.json`` (``{document_id: metadata}``). :func:`open_ragatouille` converts it into
a plaidx RAG folder next to it (``NAME.plaidx``): the engine by :func:`plaidx.interop.colbert.convert_colbert`
(lossless: the same codes and residuals, passage ids kept), the document store from the JSON maps, and
``plaidx_rag.json`` recording the model and the source. The source is only read.

Later calls reuse the conversion while the source is unchanged (its files' names, sizes and modification
times are fingerprinted). When the source changed, an unmodified conversion is replaced; one that plaidx
has written to since (add_to_index, delete_from_index) is never replaced: the error says what to do.

The model: ``model=`` when given (a checkpoint folder or hub name, a :class:`plaidx.ColBERT`, or a PyLate /
sentence-transformers model object); otherwise the checkpoint named in the index's ``metadata.json`` when
it exists on this machine (a folder, or a hub name in the local Hugging Face cache); otherwise the model
recorded by an earlier conversion. Nothing is downloaded to guess a model.

Search answers are RAGatouille's result dicts (``content, score, rank, document_id, passage_id`` and
``document_metadata``); passage ids stay RAGatouille's pids. One difference: a document whose entry in
``docid_metadata_map.json`` is ``null`` gets no ``document_metadata`` key here (RAGatouille returns None).
Every ``.pt`` file is read without running its pickle (:mod:`plaidx.interop.safe_pickle`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .. import __version__
from ..engine import Index
from ..errors import CheckpointError, IndexFormatError, PlaidxError
from .docstore import DocStore, metadata_json
from .folder import (
    CONFIG_FILE,
    DOCSTORE_FILE,
    ENGINE_DIR,
    FORMAT,
    FORMAT_VERSION,
    read_config,
    recover,
    staged_folder,
    write_json_atomic,
)

COLLECTION_FILE = "collection.json"
PID_DOCID_FILE = "pid_docid_map.json"
METADATA_MAP_FILE = "docid_metadata_map.json"
CONVERTED_SUFFIX = ".plaidx"
SOURCE_FORMAT = "ragatouille"

__all__ = ["CONVERTED_SUFFIX", "RagatouilleCorpus", "converted_path", "fingerprint", "is_foreign_index",
           "is_ragatouille_index", "open_ragatouille", "read_corpus"]


# ---------------------------------------------------------------------------------------------- the source
def is_ragatouille_index(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is a RAGatouille index folder (colbert-ai files plus RAGatouille's JSON maps)."""
    p = Path(path)
    return (p.is_dir() and (p / "metadata.json").is_file() and (p / COLLECTION_FILE).is_file()
            and (p / PID_DOCID_FILE).is_file())


def is_foreign_index(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is a colbert-ai / RAGatouille folder rather than a plaidx one (``metadata.json`` and
    neither ``plaidx_rag.json`` nor ``manifest.json``); :func:`open_ragatouille` says what it lacks."""
    p = Path(path)
    return (p.is_dir() and (p / "metadata.json").is_file() and not (p / CONFIG_FILE).is_file()
            and not (p / "manifest.json").is_file())


def converted_path(src: Union[str, os.PathLike]) -> Path:
    """Where the plaidx conversion of the RAGatouille folder ``src`` lives: ``<src>.plaidx`` beside it."""
    src = Path(src).absolute()
    return src.with_name(src.name + CONVERTED_SUFFIX)


def fingerprint(src: Union[str, os.PathLike]) -> str:
    """sha256 over the names, sizes and modification times of the files in ``src`` (its top level)."""
    h = hashlib.sha256()
    for f in sorted(Path(src).iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing; the RAGatouille index is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path}: unreadable {what} ({exc})") from None


class RagatouilleCorpus:
    """The passages of a RAGatouille folder, by pid.

    Attributes
    ----------
    pids : int64 (n_live,) the live passage ids (doclen > 0), increasing.
    contents : the text of each live passage, aligned with ``pids``.
    document_ids : the document id of each live passage, aligned with ``pids``.
    documents : ``(document_id, metadata_json or None)`` once per document, in order of first passage.
    """

    def __init__(self, pids: np.ndarray, contents: list[str], document_ids: list[Any],
                 documents: list[tuple[Any, Optional[str]]]):
        self.pids, self.contents, self.document_ids, self.documents = pids, contents, document_ids, documents


def read_corpus(src: Union[str, os.PathLike], doclens: np.ndarray) -> RagatouilleCorpus:
    """Texts, document ids and metadata of the live passages of a RAGatouille folder.

    Parameters
    ----------
    src : the RAGatouille index folder.
    doclens : int64 (n_passages,) tokens per passage from the colbert-ai chunks; 0 marks a passage removed
        by colbert-ai's updater.

    ``collection.json`` is indexed by pid (RAGatouille's own search reads ``collection[pid]``). After a
    RAGatouille ``delete_from_index`` it holds only the remaining passages, in pid order, and that layout is
    read too; any other disagreement between the files is an IndexFormatError naming the counts.
    """
    src = Path(src)
    collection = _read_json(src / COLLECTION_FILE, "collection")
    raw_map = _read_json(src / PID_DOCID_FILE, "pid -> document id map")
    if not isinstance(collection, list) or not all(isinstance(t, str) for t in collection):
        raise IndexFormatError(f"{src / COLLECTION_FILE}: expected a list of passage texts")
    if not isinstance(raw_map, dict):
        raise IndexFormatError(f"{src / PID_DOCID_FILE}: expected an object mapping passage ids to document ids")
    try:
        pid_doc = {int(k): v for k, v in raw_map.items()}
    except (TypeError, ValueError):
        raise IndexFormatError(f"{src / PID_DOCID_FILE}: its keys must be passage ids (integers)") from None
    metas: dict[Any, Any] = {}
    if (src / METADATA_MAP_FILE).is_file():
        metas = _read_json(src / METADATA_MAP_FILE, "document metadata map")
        if not isinstance(metas, dict):
            raise IndexFormatError(f"{src / METADATA_MAP_FILE}: expected an object mapping document ids to metadata")
    n = int(doclens.size)
    live = np.flatnonzero(np.asarray(doclens) > 0).astype(np.int64)
    if len(collection) == n:
        contents = [collection[int(p)] for p in live]
    elif len(collection) == live.size and set(pid_doc) >= set(live.tolist()):
        contents = list(collection)  # compacted by a RAGatouille delete: the i-th text is the i-th live pid
    else:
        raise IndexFormatError(f"{src}: {COLLECTION_FILE} holds {len(collection)} passages but the colbert-ai index "
                               f"holds {n} ({live.size} not removed); the folder is inconsistent (RAGatouille's "
                               "add/delete can leave it so): rebuild it, or index the texts again with plaidx")
    missing = [int(p) for p in live if int(p) not in pid_doc]
    if missing:
        raise IndexFormatError(f"{src / PID_DOCID_FILE}: no document id for passages {missing[:10]} "
                               f"({len(missing)} in all); the folder is inconsistent")
    doc_ids = [pid_doc[int(p)] for p in live]
    kinds = {type(d) for d in doc_ids}
    if not (kinds <= {str} or kinds <= {int}) or any(isinstance(d, bool) for d in doc_ids):
        raise IndexFormatError(f"{src / PID_DOCID_FILE}: document ids must be all strings or all integers, got "
                               f"{sorted(k.__name__ for k in kinds)}")
    documents: list[tuple[Any, Optional[str]]] = []
    seen: set[Any] = set()
    for d in doc_ids:
        if d not in seen:
            seen.add(d)
            # JSON object keys are strings: an int document id finds its metadata under str(id)
            meta = metas.get(d, metas.get(str(d))) if metas else None
            documents.append((d, metadata_json(meta, f"{METADATA_MAP_FILE}[{d!r}]")))
    return RagatouilleCorpus(live, contents, doc_ids, documents)


# ---------------------------------------------------------------------------------------------- the model
def _is_local_checkpoint(name: str) -> bool:
    """A folder, or a hub name already in the local Hugging Face cache (nothing is downloaded)."""
    if not name.strip():
        return False
    if Path(name).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(name, local_files_only=True)
        return True
    except Exception:  # noqa: BLE001 - not cached, not a repo name, or no huggingface_hub
        return False


def _how_to_pass(src: Path) -> str:
    return (f"pass the model: RAGPretrainedModel.from_index({str(src)!r}, model=...) with a checkpoint folder or "
            "hub name, a plaidx.ColBERT, or a PyLate / sentence-transformers model object")


def resolve_encoder(src: Path, config: dict[str, Any], model: Any, device: Any,
                    recorded: Optional[dict[str, Any]] = None) -> Any:
    """The encoder for a RAGatouille index: ``model``, else its checkpoint when local, else ``recorded``."""
    from ..encoder import ColBERT
    from ..encoder.adapters import as_encoder

    lengths = {"query_length": config.get("query_maxlen"), "document_length": config.get("doc_maxlen")}
    if model is None:
        ckpt = config.get("checkpoint")
        if isinstance(ckpt, str) and ckpt and _is_local_checkpoint(ckpt):
            model = ckpt
        elif recorded is not None and _is_local_checkpoint(str(recorded.get("name_or_path", ""))):
            return ColBERT.from_config_dict(recorded, device=device)
        elif isinstance(ckpt, str) and ckpt:
            raise CheckpointError(f"the RAGatouille index {str(src)!r} was built with the checkpoint {ckpt!r}, which "
                                  f"is not on this machine (neither a folder nor in the local Hugging Face cache); "
                                  + _how_to_pass(src))
        else:
            raise CheckpointError(f"the RAGatouille index {str(src)!r} names no checkpoint in metadata.json; "
                                  + _how_to_pass(src))
    if isinstance(model, (str, os.PathLike)):
        enc = ColBERT.from_pretrained(model, device=device,
                                      **{k: v for k, v in lengths.items() if isinstance(v, int) and v > 0})
    else:
        enc = as_encoder(model)
    dim = config.get("dim")
    if isinstance(dim, int) and enc.dim != dim:
        raise ValueError(f"the RAGatouille index {str(src)!r} holds {dim}-d vectors but the model "
                         f"{getattr(enc, 'name_or_path', enc)!r} produces {enc.dim}-d vectors; pass the model it was "
                         "built with")
    return enc


# ---------------------------------------------------------------------------------------------- conversion
def _source_record(src: Path, fp: str, generation: int, passages: int) -> dict[str, Any]:
    return {"format": SOURCE_FORMAT, "path": str(src), "fingerprint": fp, "generation": generation,
            "passages": passages, "converted": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _convert(src: Path, dst: Path, encoder: Any, fp: str, verbose: int) -> None:
    """Build the plaidx RAG folder for ``src`` in a staging folder, then move it to ``dst`` (replacing it)."""
    from ..interop.colbert import convert_colbert, read_colbert

    ci = read_colbert(src)
    corpus = read_corpus(src, ci.doclens)
    config = ci.metadata.get("config") or {}
    with staged_folder(dst) as staging:
        engine = convert_colbert(src, staging / ENGINE_DIR, progress=verbose >= 2,
                                 metadata={"plaidx_rag": {"index_name": dst.name}})
        live = np.asarray(engine.ids)
        if not np.array_equal(live, corpus.pids):
            raise IndexFormatError(f"{str(src)!r}: the converted engine holds passages {live.size} "
                                   f"but the RAGatouille maps name {corpus.pids.size}; the folder is inconsistent")
        with DocStore(staging / DOCSTORE_FILE, create=True) as store:
            store.add(corpus.documents, [(int(p), d, c) for p, d, c in
                                         zip(corpus.pids, corpus.document_ids, corpus.contents)])
        generation = int(engine.info()["generation"])
        doc_maxlen = config.get("doc_maxlen")
        write_json_atomic(staging / CONFIG_FILE, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "plaidx_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": encoder.config_dict(),
            "index": {"nbits": engine.nbits, "nlist": engine.nlist, "converted_from": SOURCE_FORMAT},
            "passages": {"max_document_length": int(doc_maxlen if isinstance(doc_maxlen, int) and doc_maxlen > 0
                                                    else encoder.document_length)},
            "source": _source_record(src, fp, generation, int(corpus.pids.size)),
        })
        del engine


def _modified_since_conversion(dst: Path, record: dict[str, Any]) -> bool:
    """Whether plaidx wrote to the converted folder after converting it (its engine moved on a generation)."""
    try:
        return int(Index.open(dst / ENGINE_DIR).info()["generation"]) != int(record.get("generation", -1))
    except (IndexFormatError, OSError, ValueError, TypeError):
        return True


def _say(verbose: int, message: str) -> None:
    if verbose > 0:
        print(f"[plaidx] {message}", file=sys.stderr)


def open_ragatouille(src: Union[str, os.PathLike], *, model: Any = None, device: Any = None, verbose: int = 1,
                     dst: Optional[Union[str, os.PathLike]] = None) -> tuple[Path, Any]:
    """The plaidx RAG folder for the RAGatouille index ``src`` (converting it if needed) and its encoder.

    Parameters
    ----------
    src : a RAGatouille index folder (``.ragatouille/colbert/indexes/NAME``); only read.
    model : checkpoint folder or hub name, :class:`plaidx.ColBERT`, PyLate or sentence-transformers model;
        default: the checkpoint named in the index when it is on this machine (see the module docstring).
    device : torch device for a model loaded here.
    verbose : 0 silent; 1 says where the converted folder is; 2 also shows conversion progress.
    dst : where the conversion goes (default :func:`converted_path`, ``<src>.plaidx`` beside the source).

    Returns
    -------
    (path of the plaidx RAG folder, the encoder)
    """
    from ..interop.colbert import read_colbert

    src = Path(src).absolute()
    if not is_ragatouille_index(src):
        raise IndexFormatError(f"{str(src)!r} is not a RAGatouille index: it needs metadata.json, {COLLECTION_FILE} "
                               f"and {PID_DOCID_FILE} (an index without passage texts converts with `plaidx import "
                               "colbert|fastplaid|pylate SRC DST` or plaidx.interop.colbert.convert_colbert / "
                               "plaidx.interop.fastplaid.convert_fastplaid, then opens with plaidx.Index)")
    dst = Path(dst).absolute() if dst is not None else converted_path(src)
    if dst == src or src in dst.parents:
        raise ValueError(f"the conversion must go outside the RAGatouille folder {str(src)!r} (it is never written to)")
    config = read_colbert(src).metadata.get("config") or {}
    fp = fingerprint(src)
    recover(dst)
    record = existing = None
    if dst.exists():
        try:
            existing = read_config(dst)
        except IndexFormatError:
            raise IndexFormatError(f"{str(dst)!r} exists and is not a plaidx RAG folder; move it away, or pass "
                                   "dst= for the converted RAGatouille index") from None
        record = existing.get("source")
        if not isinstance(record, dict) or record.get("format") != SOURCE_FORMAT:
            raise IndexFormatError(f"{str(dst)!r} is a plaidx RAG folder that was not converted from {str(src)!r}; "
                                   "move it away, or pass dst= for the converted RAGatouille index")
    recorded = existing.get("model") if existing else None
    encoder = resolve_encoder(src, config, model, device, recorded)
    if record is not None and record.get("fingerprint") == fp:
        _say(verbose, f"using the plaidx conversion of {src} at {dst} (the source is unchanged)")
        return dst, encoder
    if record is not None and _modified_since_conversion(dst, record):
        raise PlaidxError(f"the RAGatouille index {str(src)!r} changed since it was converted to {str(dst)!r}, and "
                          "that conversion has been written to by plaidx since (documents added or deleted), so it "
                          f"is not replaced: open it as it is with RAGPretrainedModel.from_index({str(dst)!r}), or "
                          "move it away to convert the RAGatouille index again")
    _say(verbose, f"converting the RAGatouille index {src} to a plaidx folder at {dst} "
                  f"({'the source changed; ' if record else ''}the source is not modified; later calls reuse it)")
    _convert(src, dst, encoder, fp, verbose)
    return dst, encoder

