"""The ``plaidx import`` and ``plaidx export`` commands: other engines' indexes in, Qdrant collections out and in."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import IndexFormatError
from ..rag.folder import CONFIG_FILE
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def _check_dst(dst: Path, overwrite: bool, src: Optional[Path] = None) -> None:
    if src is not None and dst.exists() and dst.resolve() == src.resolve():
        raise CliError(f"{str(dst)!r} is the source itself: give another folder for the converted index", EXIT_USAGE)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise CliError(f"{str(dst)!r} exists and is not empty; choose a new folder (or --overwrite to replace a "
                       "plaidx index there)", EXIT_USAGE)


def cmd_import_index(args: argparse.Namespace) -> int:
    """plaidx import colbert|fastplaid|pylate SRC DST."""
    src, dst = Path(args.src), Path(args.dst)
    if not src.is_dir():
        raise CliError(f"{str(src)!r}: no such index folder", EXIT_USAGE)
    _check_dst(dst, args.overwrite, src)
    if (dst / CONFIG_FILE).is_file():
        raise CliError(f"{str(dst)!r} is a RAG index folder (made by `plaidx index`); this import writes an engine "
                       "folder and replaces only one of those: choose a new folder", EXIT_USAGE)
    from ..interop.colbert import convert_colbert, is_colbert_index
    from ..interop.fastplaid import convert_fastplaid, is_fastplaid_index

    looks = ("colbert" if is_colbert_index(src) else "fastplaid" if is_fastplaid_index(src)
             else "plaidx" if (src / "manifest.json").is_file() or (src / "engine").is_dir() else None)
    wanted = "colbert" if args.kind == "colbert" else "fastplaid"
    if looks != wanted:
        hint = {"colbert": "it is a colbert-ai index: use `plaidx import colbert`",
                "fastplaid": "it is a fast-plaid/PyLate index: use `plaidx import fastplaid` (or pylate)",
                "plaidx": "it is already a plaidx index: use it as it is"}.get(looks or "", "")
        raise CliError(f"{str(src)!r} is not a{'' if wanted == 'fastplaid' else ' colbert-ai'} "
                       f"{'fast-plaid/PyLate ' if wanted == 'fastplaid' else ''}index folder"
                       + (f" ({hint})" if hint else ""), EXIT_USAGE)
    convert = convert_colbert if wanted == "colbert" else convert_fastplaid
    t0 = time.perf_counter()
    src_bytes = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    try:
        index = convert(src, dst, overwrite=args.overwrite, progress=not args.quiet)
    except IndexFormatError as exc:
        raise CliError(f"{exc} (nothing was written to {str(dst)!r})", EXIT_FAILURE) from None
    info = index.info()
    source = index.metadata.get("source", {})
    dt = time.perf_counter() - t0
    print(f"converted {source.get('format', args.kind)} index {str(src)!r} -> {str(dst)!r}: {info['documents']} "
          f"documents ({info['deleted_pending_compaction']} removed in the source, kept as deleted), "
          f"{info['tokens']} tokens, dim {info['dim']}, nbits {info['nbits']}, nlist {info['nlist']}, "
          f"{_size(info['bytes_on_disk'])} in {dt:.1f}s ({src_bytes / 1e6 / max(dt, 1e-9):.1f} MB/s)"
          + (f"; checkpoint {source['checkpoint']!r}" if source.get("checkpoint") else ""))
    for note in source.get("notes") or []:
        _say(args, f"note: {note}")
    return EXIT_OK


def _client(args: argparse.Namespace) -> Any:
    from ..interop.qdrant import connect

    if (args.path is None) == (args.url is None):
        raise CliError("pass exactly one of --path DIR (Qdrant local mode) or --url URL (a Qdrant server)",
                       EXIT_USAGE)
    return connect(path=args.path, url=args.url, api_key=args.api_key, prefer_grpc=args.grpc)


def _payloads(folder: Any) -> Optional[Any]:
    """For a RAG folder: a function of passage ids -> payloads with document id, text and metadata."""
    if folder.store is None:
        return None
    store = folder.store

    def payloads(ids: np.ndarray) -> list[dict[str, Any]]:
        found = store.lookup(ids.tolist())
        out = []
        for pid in ids.tolist():
            doc_id, content, meta = found.get(int(pid), (None, None, None))
            out.append({"passage_id": int(pid), "document_id": doc_id, "content": content, "metadata": meta})
        return out

    return payloads


def cmd_export_qdrant(args: argparse.Namespace) -> int:
    from ..interop.qdrant import DEFAULT_VECTOR, export_index
    from .folders import open_folder

    client = _client(args)
    t0 = time.perf_counter()
    with open_folder(args.index) as folder:
        extra = {"rag_config": folder.config} if folder.kind == "rag" else {}
        stats = export_index(folder.engine, client, args.collection, vector_name=args.vector_name or DEFAULT_VECTOR,
                             datatype=args.datatype, payloads=_payloads(folder), collection_metadata=extra,
                             batch_tokens=args.batch_tokens, overwrite=args.overwrite, progress=not args.quiet)
        index_bytes = folder.engine.info()["bytes_on_disk"]
    print(f"exported {stats['points']} points ({stats['tokens']} tokens, {stats['datatype']}) to collection "
          f"{args.collection!r} in {stats['batches']} batches, {time.perf_counter() - t0:.1f}s: "
          f"{_size(stats['vector_bytes'])} of vectors vs {_size(index_bytes)} for the plaidx index "
          f"({stats['vector_bytes'] / max(index_bytes, 1):.1f}x)")
    return EXIT_OK


def import_qdrant_folder(client: Any, collection: str, dst: Path, *, vector_name: Optional[str] = None,
                         nbits: Optional[int] = None, model: Optional[str] = None, overwrite: bool = False,
                         progress: bool = False) -> tuple[str, int]:
    """Build a plaidx index folder at ``dst`` from a Qdrant collection; returns (kind, points).

    When the points carry ``document_id`` and ``content`` payloads (an export of a RAG folder), ``dst`` is a
    RAG folder: the engine (point ids kept as passage ids) plus a document store with every document's id,
    text and metadata, and the exported folder's configuration (or ``model``). Otherwise it is a bare
    engine folder. The folder is staged beside ``dst`` and moved into place only when complete.
    """
    from ..interop.qdrant import build_from_points, read_collection
    from ..rag.docstore import DocStore
    from ..rag.folder import (
        CONFIG_FILE,
        DOCSTORE_FILE,
        ENGINE_DIR,
        FORMAT,
        FORMAT_VERSION,
        staged_folder,
        write_json_atomic,
    )

    dst = Path(dst)
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{str(dst)!r} exists and is not empty; pass overwrite=True (CLI: --overwrite)")
    with staged_folder(dst) as staging:
        ids, vectors, payloads, meta = read_collection(client, collection, vector_name=vector_name,
                                                       progress=progress)
        rag_like = all("document_id" in p and "content" in p for p in payloads)
        cfg = (meta.get("plaidx") or {}).get("rag_config")
        if rag_like and not isinstance(cfg, dict) and model:
            cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"name_or_path": model}}
        kind = "rag" if rag_like and isinstance(cfg, dict) else "engine"
        build_from_points(staging / ENGINE_DIR if kind == "rag" else staging, ids, vectors, meta,
                          collection=collection, nbits=nbits, overwrite=True, progress=progress)
        del vectors
        if kind == "rag":
            docs: dict[Any, Optional[str]] = {}
            passages = []
            for pid, p in zip(ids.tolist(), payloads):
                if p["document_id"] not in docs:
                    docs[p["document_id"]] = None if p.get("metadata") is None else json.dumps(p["metadata"])
                passages.append((int(pid), p["document_id"], p["content"]))
            with DocStore(staging / DOCSTORE_FILE, create=True) as store:
                store.add(list(docs.items()), passages)
            write_json_atomic(staging / CONFIG_FILE, {**cfg, "imported_from": {"qdrant": collection}})
    return kind, int(ids.size)


def cmd_import_qdrant(args: argparse.Namespace) -> int:
    client = _client(args)
    dst = Path(args.dst)
    _check_dst(dst, args.overwrite)
    t0 = time.perf_counter()
    try:
        kind, n = import_qdrant_folder(client, args.collection, dst, vector_name=args.vector_name, nbits=args.nbits,
                                       model=args.model, overwrite=args.overwrite, progress=not args.quiet)
    except KeyError as exc:
        raise CliError(str(exc.args[0] if exc.args else exc), EXIT_USAGE) from None
    what = ("a RAG folder (engine, document store with ids, text and metadata)" if kind == "rag"
            else "an engine folder (the points carry no document text, or no model is known: pass --model)")
    print(f"imported {n} points of collection {args.collection!r} into {str(dst)!r} as {what} in "
          f"{time.perf_counter() - t0:.1f}s")
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _qdrant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", required=True, help="Qdrant collection name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--path", help="Qdrant local mode folder (or :memory:)")
    where.add_argument("--url", help="a Qdrant server, e.g. http://localhost:6333")
    p.add_argument("--api-key", help="API key of the Qdrant server")
    p.add_argument("--grpc", action="store_true", help="talk to the server over gRPC (smaller requests than JSON)")
    p.add_argument("--vector-name", default=None, help="name of the multivector (export default: colbert)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing collection / folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def register(sub: Any, fmt: Any, epilog: str) -> None:
    """Add ``import`` and ``export`` to the ``plaidx`` command's subparsers."""
    imp = sub.add_parser("import", help="convert another engine's index (colbert-ai, fast-plaid, PyLate) or a "
                                        "Qdrant collection into a plaidx index", formatter_class=fmt, epilog=epilog)
    isub = imp.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, desc in (("colbert", "a colbert-ai / Stanford PLAID index folder (RAGatouille's engine files too)"),
                       ("fastplaid", "a fast-plaid or next-plaid index folder (.npy layout)"),
                       ("pylate", "a PyLate PLAID index folder (holding fast_plaid_index/ and its id maps)")):
        p = isub.add_parser(kind, help=desc, formatter_class=fmt, epilog=epilog,
                            description=f"Convert {desc} into a new plaidx engine folder, losslessly: codes and "
                                        "residual bits are copied (re-ordered), nothing is re-encoded, no pickle is "
                                        "executed and the source is never written to.")
        p.add_argument("src", help="the source index folder")
        p.add_argument("dst", help="the new plaidx index folder")
        p.add_argument("--overwrite", action="store_true", help="replace a plaidx index at DST")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        p.set_defaults(func=cmd_import_index, kind=kind)
    p = isub.add_parser("qdrant", help="build a plaidx index from a Qdrant multivector collection",
                        formatter_class=fmt, epilog=epilog,
                        description="Read every point's multivector and payload and build a plaidx index (point "
                                    "ids become passage ids). Points exported from a RAG folder come back as a RAG "
                                    "folder with their document ids, text and metadata.")
    p.add_argument("dst", help="the new plaidx index folder")
    _qdrant_args(p)
    p.add_argument("--nbits", type=int, choices=(1, 2, 4, 8), help="bits per dimension (default: the exported "
                                                                   "index's, else 2)")
    p.add_argument("--model", help="model name recorded for a RAG folder when the collection does not name one")
    p.set_defaults(func=cmd_import_qdrant)

    exp = sub.add_parser("export", help="export an index to a vector database (Qdrant)", formatter_class=fmt,
                         epilog=epilog)
    esub = exp.add_subparsers(dest="kind", metavar="TARGET", required=True)
    p = esub.add_parser("qdrant", help="every document's decompressed multivector into a Qdrant collection",
                        formatter_class=fmt, epilog=epilog,
                        description="Create a collection (MAX_SIM multivectors, dot product, HNSW off) and write "
                                    "every live passage's decompressed token vectors with its payload (passage id; "
                                    "document id, text and metadata for a RAG folder). Decompressed vectors are "
                                    "about 7x (float16) or 14x (float32) a 2-bit index.")
    p.add_argument("index", help="the plaidx index folder")
    _qdrant_args(p)
    p.add_argument("--datatype", choices=("float16", "float32"), default="float16")
    p.add_argument("--batch-tokens", type=_positive, default=None, help="tokens per request (default 2M floats)")
    p.set_defaults(func=cmd_export_qdrant)


__all__ = ["cmd_export_qdrant", "cmd_import_index", "cmd_import_qdrant", "import_qdrant_folder", "register"]
