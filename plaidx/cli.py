"""The ``plaidx`` command line (index, search, info, eval, serve) and the index-folder handle it shares."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed: a damaged index, problems found by --verify, a failed search
EXIT_USAGE = 2  # the command line or an input is wrong: a missing file, bad JSONL, an unknown option
EXIT_INTERRUPTED = 130

ENGINE_DIR = "engine"
DOCSTORE_FILE = "docstore.sqlite"
RAG_CONFIG = "plaidx_rag.json"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")

_EPILOG = """exit codes:
  0    success
  1    the command failed (damaged index, problems found by info --verify, search or build error)
  2    wrong usage or input (missing path, malformed corpus, bad option)
  130  interrupted"""


class CliError(Exception):
    """An error to report on stderr as ``plaidx <command>: error: ...`` with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ============================================================================ index folders
def locate_index(path: str | os.PathLike) -> tuple[str, Path, Path]:
    """``(kind, folder, engine_folder)`` of an index: "rag" (``engine/`` + document store) or "engine"."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{str(p)!r}: no such index folder")
    if (p / ENGINE_DIR / "manifest.json").is_file():
        return "rag", p, p / ENGINE_DIR
    if (p / "manifest.json").is_file():
        return "engine", p, p
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if (c / ENGINE_DIR / "manifest.json").is_file())
        if inside:
            raise CliError(f"{str(p)!r} is a folder of indexes ({', '.join(inside[:5])}); "
                           f"name one of them, e.g. {str(p / inside[0])!r}")
    raise CliError(f"{str(p)!r} is not a plaidx index: expected manifest.json (an engine folder) or "
                   f"{ENGINE_DIR}/manifest.json (an index made by `plaidx index` or RAGPretrainedModel)")


def _model_config(*sources: Any) -> Optional[dict[str, Any]]:
    for src in sources:
        if isinstance(src, dict):
            for key in ("model", "encoder", "model_config"):
                cfg = src.get(key)
                if isinstance(cfg, dict) and cfg.get("name_or_path"):
                    return cfg
                if isinstance(cfg, str) and cfg:
                    return {"name_or_path": cfg}
    return None


class IndexFolder:
    """An index folder opened for search: a RAG index (``engine/`` + ``docstore.sqlite`` +
    ``plaidx_rag.json``) or a bare engine folder.

    ``search`` maps engine ids to passages through the document store (RAG) and is thread-safe.
    """

    def __init__(self, path: str | os.PathLike, verify: str = "structure"):
        from .index import Index

        self.kind, self.path, self.engine_path = locate_index(path)
        self.engine = Index.open(self.engine_path, verify=verify)
        self.store = None
        self.rag_config: dict[str, Any] = {}
        if self.kind == "rag":
            from .docstore import DocStore

            cfg_path = self.path / RAG_CONFIG
            if cfg_path.is_file():
                try:
                    self.rag_config = json.loads(cfg_path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise CliError(f"{cfg_path}: unreadable ({exc})", EXIT_FAILURE) from None
            self.store = DocStore(self.path / DOCSTORE_FILE)
        self.model_config = _model_config(self.rag_config, self.engine.metadata)

    @property
    def model_name(self) -> Optional[str]:
        return None if self.model_config is None else str(self.model_config["name_or_path"])

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def allowed_ids(self, doc_ids: Optional[Sequence[Any]]) -> Optional[np.ndarray]:
        """Engine ids of the passages of ``doc_ids`` (user ids for RAG, engine ids for bare indexes)."""
        if doc_ids is None:
            return None
        if self.store is not None:
            return self.store.passage_ids(list(doc_ids), missing="raise")
        if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in doc_ids):
            raise TypeError("doc_ids: this index has no document store, so its ids are the engine's integers")
        return np.asarray(list(doc_ids), dtype=np.int64)

    def search(self, query: np.ndarray, k: int = 10, *, doc_ids: Optional[Sequence[Any]] = None,
               with_content: bool = True, with_metadata: bool = True, **params: Any) -> list[dict[str, Any]]:
        """Results for one query ``(q_tokens, dim)`` float32: dicts with rank (1-based), score, id,
        document_id, passage_id, content and document_metadata."""
        return self.search_batch(query[None], k, doc_ids=doc_ids, with_content=with_content,
                                 with_metadata=with_metadata, **params)[0]

    def search_batch(self, queries: np.ndarray, k: int = 10, *, doc_ids: Optional[Sequence[Any]] = None,
                     exact: Optional[bool] = None, with_content: bool = True, with_metadata: bool = True,
                     num_threads: int = 0, **params: Any) -> list[list[dict]]:
        """As :meth:`search` for ``(nq, q_tokens, dim)`` queries. ``exact=None`` decides as the library does:
        RAG indexes of at most ``plaidx.rag.EXACT_MAX_TOKENS`` tokens are scored exhaustively unless PLAID
        parameters are given (as ``RAGPretrainedModel.search``); engine folders use PLAID (as ``Index.search``)."""
        allowed = self.allowed_ids(doc_ids)
        if allowed is not None and allowed.size == 0:
            return [[] for _ in range(len(queries))]
        params = {k_: v for k_, v in params.items() if v is not None}
        if exact is None:
            exact = self.kind == "rag" and not params and self.engine.n_tokens <= _exact_max_tokens()
        if exact:
            params = {}
        scores, ids = self.engine.search(queries, k=k, doc_ids=allowed, exact=bool(exact), num_threads=num_threads,
                                         **params)
        found = {int(i) for i in ids.ravel() if i >= 0}
        rows = self.store.lookup(found) if (self.store is not None and found) else {}
        out = []
        for qs, qi in zip(scores, ids):
            hits = []
            for s, i in zip(qs, qi):
                if i < 0:
                    break
                i = int(i)
                hit: dict[str, Any] = {"rank": len(hits) + 1, "score": float(s), "id": i, "document_id": i,
                                       "passage_id": None, "content": None, "document_metadata": None}
                if self.store is not None:
                    if i not in rows:  # an engine passage the store does not know: a write in flight
                        continue
                    doc, content, meta = rows[i]
                    hit.update(document_id=doc, passage_id=i, content=content if with_content else None,
                               document_metadata=meta if with_metadata else None)
                hits.append(hit)
            out.append(hits)
        return out


def _exact_max_tokens() -> int:
    from .rag import EXACT_MAX_TOKENS

    return int(EXACT_MAX_TOKENS)


def load_model(name: Optional[str], folder: Optional[IndexFolder] = None, device: Optional[str] = None) -> Any:
    """The model to encode queries for ``folder``: ``name`` if given, else the one the index records."""
    from .encoder import ColBERT

    if name is not None:
        return ColBERT.from_pretrained(name, device=device)
    if folder is not None and folder.model_config is not None:
        cfg = folder.model_config
        if "dim" in cfg or "query_length" in cfg:
            return ColBERT.from_config_dict(cfg, device=device)
        return ColBERT.from_pretrained(cfg["name_or_path"], device=device)
    if folder is not None:
        raise CliError(f"{str(folder.path)!r} records no model; pass --model NAME_OR_PATH (the model that made "
                       "its embeddings)")
    return ColBERT.from_pretrained(None, device=device)


# ============================================================================ corpora
def read_corpus(source: str, *, id_field: Optional[str] = None, text_field: str = "text",
                title_field: Optional[str] = "title", limit: Optional[int] = None) -> tuple[list, list, list]:
    """``(document_ids, texts, metadatas)`` from a JSONL file, a BEIR folder, a folder of text files or "-"
    (JSONL on stdin). JSONL fields other than the id and text become the document's metadata."""
    if source == "-":
        records = _jsonl_records(sys.stdin, "<stdin>")
    else:
        p = Path(source)
        if not p.exists():
            raise CliError(f"corpus {source!r} not found: give a .jsonl file, a BEIR folder (with corpus.jsonl) "
                           "or a folder of text files")
        if p.is_dir() and (p / "corpus.jsonl").is_file():
            p = p / "corpus.jsonl"
        if p.is_dir():
            return _text_folder(p, limit)
        records = _jsonl_file(p)
    ids: list = []
    texts: list[str] = []
    metas: list = []
    seen: set = set()
    for where, rec in records:
        if limit is not None and len(ids) >= limit:
            break
        if not isinstance(rec, dict):
            raise CliError(f"{where}: expected a JSON object per line, got {type(rec).__name__}")
        key = id_field or next((f for f in ("_id", "id", "doc_id", "docid") if f in rec), None)
        if key is None or key not in rec:
            raise CliError(f"{where}: no document id field ({id_field or '_id, id, doc_id or docid'}); "
                           "use --id-field")
        doc_id = rec[key]
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            raise CliError(f"{where}: document id {doc_id!r} must be a string or an integer")
        doc_id = str(doc_id)
        if doc_id in seen:
            raise CliError(f"{where}: duplicate document id {doc_id!r}")
        text = rec.get(text_field)
        if not isinstance(text, str):
            raise CliError(f"{where}: no text field {text_field!r} (a string); use --text-field")
        title = rec.get(title_field) if title_field else None
        body = f"{title.strip()}. {text.strip()}" if isinstance(title, str) and title.strip() else text.strip()
        if not body:
            print(f"plaidx index: warning: {where}: document {doc_id!r} is empty; skipped", file=sys.stderr)
            continue
        meta = {f: v for f, v in rec.items() if f not in (key, text_field)}
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(body)
        metas.append(meta or None)
    if not ids:
        raise CliError(f"corpus {source!r} holds no documents")
    return ids, texts, metas


def _jsonl_file(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            yield from _jsonl_records(f, str(path))
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason}); give a UTF-8 JSONL file") from None


def _jsonl_records(lines: Any, name: str) -> Iterator[tuple[str, Any]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{n}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{name}:{n}: invalid JSON ({exc.msg} at column {exc.colno}); expected one JSON "
                           "object per line") from None


def _text_folder(folder: Path, limit: Optional[int]) -> tuple[list, list, list]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    ids, texts, metas = [], [], []
    for f in files:
        if limit is not None and len(ids) >= limit:
            break
        rel = f.relative_to(folder).as_posix()
        try:
            text = f.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            print(f"plaidx index: warning: {rel} is not UTF-8 text; skipped", file=sys.stderr)
            continue
        if not text:
            print(f"plaidx index: warning: {rel} is empty; skipped", file=sys.stderr)
            continue
        ids.append(rel)
        texts.append(text)
        metas.append({"path": rel})
    if not ids:
        raise CliError(f"{str(folder)!r} holds no text files ({', '.join(TEXT_SUFFIXES)}) and no corpus.jsonl")
    return ids, texts, metas


# ============================================================================ commands
def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def cmd_index(args: argparse.Namespace) -> int:
    import re

    from .rag import RAGPretrainedModel

    out = Path(args.index)
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$", out.name):
        raise CliError(f"index folder name {out.name!r}: use letters, digits, '.', '_' or '-' (not starting with "
                       "'.' or '-')")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / RAG_CONFIG).is_file():
            raise CliError(f"{str(out)!r} exists and is not a plaidx index; choose a new folder")
        if not args.overwrite:
            raise CliError(f"an index already exists at {str(out)!r}; pass --overwrite to replace it")
    ids, texts, metas = read_corpus(args.source, id_field=args.id_field, text_field=args.text_field,
                                    title_field=args.title_field or None, limit=args.limit)
    _say(args, f"corpus: {len(ids)} documents from {args.source}")
    t0 = time.perf_counter()
    rag = RAGPretrainedModel.from_pretrained(args.model, verbose=0 if args.quiet else 2,
                                             index_root=str(out.parent))
    model = rag.model
    _say(args, f"model: {model.name_or_path} (dim {model.dim}, query length {model.query_length}, document "
               f"length {model.document_length}) loaded in {time.perf_counter() - t0:.1f}s")
    _say(args, f"indexing: nbits {args.nbits or 'auto (by collection size)'}, passages of at most "
               f"{args.max_document_length} tokens"
               f"{'' if args.split else ' (documents not split; longer ones are truncated)'}")
    t0 = time.perf_counter()
    rag.index(texts, document_ids=ids, document_metadatas=metas, index_name=out.name, overwrite_index=True,
              max_document_length=args.max_document_length, split_documents=args.split, nbits=args.nbits)
    folder = IndexFolder(out)
    try:
        info = describe(folder)
    finally:
        folder.close()
    print(f"indexed {info['documents']} documents as {info['passages']} passages ({info['tokens']} tokens) in "
          f"{time.perf_counter() - t0:.1f}s -> {out} ({_size(info['bytes_on_disk'])}, nbits {info['nbits']}, "
          f"nlist {info['nlist']}, model {info['model']}, document length {info['document_length']})")
    return EXIT_OK


def _search_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"nprobe": args.nprobe, "centroid_score_threshold": args.centroid_score_threshold,
            "ndocs": args.ndocs, "n_exact": args.n_exact, "exact": args.exact}


def _parse_doc_ids(values: Optional[list[str]], folder: IndexFolder) -> Optional[list[Any]]:
    if not values:
        return None
    ids = [x for v in values for x in v.replace(",", " ").split() if x]
    int_ids = folder.store is None or folder.store.id_type == "int"
    if int_ids:
        try:
            return [int(x) for x in ids]
        except ValueError:
            raise CliError(f"--doc-ids: this index uses integer ids, got {ids[:5]}") from None
    return ids


def _queries(args: argparse.Namespace) -> list[str]:
    queries = list(args.query)
    if queries == ["-"]:
        queries = [line.strip() for line in sys.stdin if line.strip()]
    if args.queries_file:
        with open(args.queries_file, encoding="utf-8") as f:
            queries += [line.strip() for line in f if line.strip()]
    if not queries or any(not q.strip() for q in queries):
        raise CliError("give at least one non-empty query (arguments, '-' for stdin, or --queries-file)")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    queries = _queries(args)
    if args.k < 1:
        raise CliError(f"-k must be a positive integer, got {args.k}")
    folder = IndexFolder(args.index)
    try:
        doc_ids = _parse_doc_ids(args.doc_ids, folder)
        model = load_model(args.model, folder, args.device)
        if model.dim != folder.engine.dim:
            raise CliError(f"the model {model.name_or_path!r} makes {model.dim}-d vectors but the index holds "
                           f"{folder.engine.dim}-d ones; pass the model that built it with --model")
        q = model.encode_queries(queries)
        t0 = time.perf_counter()
        results = folder.search_batch(q, args.k, doc_ids=doc_ids, **_search_params(args))
        dt = time.perf_counter() - t0
    finally:
        folder.close()
    if args.json:
        print(json.dumps([{"query": qt, "results": r} for qt, r in zip(queries, results)], ensure_ascii=False,
                         indent=2))
        return EXIT_OK
    for qt, hits in zip(queries, results):
        print(f"query: {qt}")
        if not hits:
            print("  (no results)")
        for h in hits:
            doc = "" if h["document_id"] is None else str(h["document_id"])
            content = " ".join((h["content"] or "").split())
            if len(content) > args.width:
                content = content[: max(0, args.width - 3)] + "..."
            print(f"  {h['rank']:>3}  {h['score']:8.3f}  {doc[:24]:<24}  {content}")
        print()
    print(f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} searched in {dt * 1000:.1f} ms", file=sys.stderr)
    return EXIT_OK


def describe(folder: IndexFolder) -> dict[str, Any]:
    """What ``plaidx info`` prints: the engine's info() plus the document store's counts and the model."""
    info = folder.engine.info()
    size = int(info["bytes_on_disk"])
    passages = int(info["documents"])
    documents = passages
    if folder.store is not None:
        documents = folder.store.count_documents()
        for suffix in ("", "-wal", "-shm"):
            f = folder.path / (DOCSTORE_FILE + suffix)
            if f.is_file():
                size += f.stat().st_size
    cfg = folder.model_config or {}
    return {"path": str(folder.path), "kind": folder.kind, "documents": documents, "passages": passages,
            "tokens": info["tokens"], "nlist": info["nlist"], "nbits": info["nbits"], "dim": info["dim"],
            "model": cfg.get("name_or_path"), "query_length": cfg.get("query_length"),
            "document_length": cfg.get("document_length"), "bytes_on_disk": size,
            "engine_bytes_on_disk": int(info["bytes_on_disk"]), "format_version": info["format_version"],
            "generation": info["generation"], "deleted_pending_compaction": info["deleted_pending_compaction"],
            "drift": info["drift"]}


def verify_folder(path: str) -> tuple[Optional[IndexFolder], list[str]]:
    """Open with no checks, then verify every checksum and the document store; ``(folder or None, problems)``."""
    from .errors import PlaidxError

    try:
        folder = IndexFolder(path, verify="none")
    except (PlaidxError, OSError, ValueError) as exc:
        return None, [f"cannot open the index: {exc}"]
    problems = list(folder.engine.verify())
    if folder.store is not None:
        import sqlite3

        try:
            stored = folder.store.all_passage_ids()
            live = np.asarray(folder.engine.ids)
            if not np.array_equal(np.sort(stored), live):
                missing = np.setdiff1d(live, stored)[:5].tolist()
                extra = np.setdiff1d(stored, live)[:5].tolist()
                problems.append(f"the document store and the engine disagree: {stored.size} passages stored, "
                                f"{live.size} live in the engine (engine ids without a passage: {missing}, "
                                f"passages without an engine id: {extra})")
            row = folder.store._con().execute("PRAGMA quick_check").fetchone()
            if row and row[0] != "ok":
                problems.append(f"{folder.path / DOCSTORE_FILE}: SQLite quick_check: {row[0]}")
        except sqlite3.DatabaseError as exc:
            problems.append(f"{folder.path / DOCSTORE_FILE}: {exc}")
    return folder, problems


def cmd_info(args: argparse.Namespace) -> int:
    problems: list[str] = []
    if args.verify:
        folder, problems = verify_folder(args.index)
        if folder is None:
            _print_problems(args, problems, None)
            return EXIT_FAILURE
    else:
        folder = IndexFolder(args.index)
    try:
        info = describe(folder)
    finally:
        folder.close()
    if args.verify:
        info["problems"] = problems
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        rows = [("path", info["path"]), ("kind", "RAG index (engine + document store)" if info["kind"] == "rag"
                                         else "engine folder (no document store)"),
                ("documents", info["documents"]), ("passages", info["passages"]), ("tokens", info["tokens"]),
                ("nlist", info["nlist"]), ("nbits", info["nbits"]), ("dim", info["dim"]),
                ("model", info["model"] or "(not recorded)"),
                ("size on disk", f"{_size(info['bytes_on_disk'])} ({info['bytes_on_disk']} bytes)"),
                ("format version", info["format_version"]), ("generation", info["generation"])]
        if info["deleted_pending_compaction"]:
            rows.append(("deleted, not compacted", info["deleted_pending_compaction"]))
        d = info["drift"]
        if d.get("added_tokens"):
            rows.append(("drift", f"added residual norm {d['added_residual_norm']:.4f} vs build "
                                  f"{d['build_residual_norm']:.4f} (ratio {d['ratio']:.2f}, threshold "
                                  f"{d['threshold']})" if d.get("ratio") is not None else "n/a"))
        else:
            rows.append(("drift", "none (no documents added since the build)"))
        width = max(len(r[0]) for r in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        if d.get("recommend_recluster"):
            print("warning: added documents drift from the centroids; Index.recluster() (or a rebuild) "
                  "would restore recall", file=sys.stderr)
    if args.verify:
        _print_problems(args, problems, info)
        return EXIT_FAILURE if problems else EXIT_OK
    return EXIT_OK


def _print_problems(args: argparse.Namespace, problems: list[str], info: Optional[dict]) -> None:
    if info is None and args.json:
        print(json.dumps({"path": str(args.index), "problems": problems}, indent=2))
    if problems:
        print(f"verify: {len(problems)} problem{'s' if len(problems) > 1 else ''} found:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    elif not args.json:
        print("verify: OK (every checksum matches; document store consistent)")


def cmd_eval(args: argparse.Namespace) -> int:
    from .sample import load_beir

    data = Path(args.data)
    if not (data / "queries.jsonl").is_file():
        raise CliError(f"{str(data)!r} is not a BEIR folder: it needs queries.jsonl and qrels/{args.split}.tsv")
    if not (data / "qrels" / f"{args.split}.tsv").is_file():
        raise CliError(f"{data / 'qrels' / (args.split + '.tsv')} not found; pick the split with --split")
    _, queries, qrels = load_beir(data, split=args.split) if (data / "corpus.jsonl").is_file() else \
        _load_queries_qrels(data, args.split)
    qids = [q for q in queries if q in qrels and any(g > 0 for g in qrels[q].values())]
    if args.limit_queries:
        qids = qids[: args.limit_queries]
    if not qids:
        raise CliError(f"no query of {data / 'queries.jsonl'} has a positive judgment in the {args.split} qrels")
    folder = IndexFolder(args.index)
    try:
        model = load_model(args.model, folder, args.device)
        q = model.encode_queries([queries[i] for i in qids])
        t0 = time.perf_counter()
        results = folder.search_batch(q, args.k, **_search_params(args), with_content=False,
                                      with_metadata=False)
        dt = time.perf_counter() - t0
        names = _engine_doc_names(folder)
    finally:
        folder.close()
    run: dict[str, dict[str, float]] = {}
    for qid, hits in zip(qids, results):
        best: dict[str, float] = {}
        for h in hits:  # a document's score is its best passage's
            doc = str(h["document_id"]) if names is None else names.get(h["id"], str(h["id"]))
            best[doc] = max(best.get(doc, -np.inf), h["score"])
        run[qid] = best
    metrics = evaluate(qrels, run, qids)
    report = {"index": str(args.index), "data": str(data), "split": args.split, "queries": len(qids),
              "k": args.k, "metrics": metrics, "search_ms_per_query": 1000 * dt / len(qids)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(qids)} queries, k={args.k}, {report['search_ms_per_query']:.2f} ms/query")
        for name, value in metrics.items():
            print(f"  {name:<11} {value:.4f}")
    return EXIT_OK


def _load_queries_qrels(data: Path, split: str) -> tuple[dict, dict, dict]:
    import csv

    queries = {}
    for where, rec in _jsonl_file(data / "queries.jsonl"):
        if not isinstance(rec, dict) or "_id" not in rec or "text" not in rec:
            raise CliError(f"{where}: expected {{\"_id\": ..., \"text\": ...}}")
        queries[str(rec["_id"])] = rec["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(data / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader, None)
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return {}, queries, qrels


def _engine_doc_names(folder: IndexFolder) -> Optional[dict[int, str]]:
    """For bare engine folders whose metadata lists ``doc_ids`` (build order), engine id -> that name."""
    if folder.store is not None:
        return None
    names = folder.engine.metadata.get("doc_ids")
    return {i: str(n) for i, n in enumerate(names)} if isinstance(names, list) else None


METRICS = ("ndcg@10", "recall@100", "mrr@10")


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], qids: Sequence[str]) -> dict:
    """nDCG@10, recall@100 and MRR@10 with ranx, averaged over ``qids`` (a query without results scores 0)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate

        qr = Qrels({q: {d: int(g) for d, g in qrels[q].items()} for q in qids})
        # ranx needs every query in the run; an empty result list counts as a miss.
        rn = Run({q: (run.get(q) or {"__no_result__": 0.0}) for q in qids})
        scores = ranx_evaluate(qr, rn, list(METRICS), make_comparable=True)
    return {m: float(scores[m]) for m in METRICS}


def _parse_index_specs(specs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name, spec
        if not name or not path:
            raise CliError(f"--index {spec!r}: expected NAME=PATH or PATH")
        if name in out:
            raise CliError(f"--index: the name {name!r} is given twice; name them NAME=PATH")
        locate_index(path)
        out[name] = path
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("PLAIDX_API_KEY") or None
    if not api_key and not is_loopback(args.host):
        raise CliError(f"refusing to listen on {args.host!r} without an API key: pass --api-key KEY or set "
                       "PLAIDX_API_KEY (clients then send 'Authorization: Bearer KEY'), or listen on 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, got {args.port}")
    indexes = _parse_index_specs(args.index or [])
    try:
        from .server import Limits, serve
    except ImportError as exc:
        raise CliError(f"the server needs FastAPI and uvicorn ({exc}); install them with "
                       "`pip install 'plaidx[server]'`", EXIT_FAILURE) from None
    limits = Limits(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs, max_tokens=args.max_tokens)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    _say(args, f"serving {len(indexes)} index(es) {sorted(indexes)} on http://{args.host}:{args.port} "
               f"(auth {'on' if api_key else 'off'}); OpenAPI at /docs")
    serve(indexes, host=args.host, port=args.port, api_key=api_key, log_level=args.log_level, model=args.model,
          model_name=args.model_name, limits=limits, search_threads=args.search_threads)
    return EXIT_OK


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ============================================================================ parser
def _positive(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search parameters (defaults chosen by k; see the README)")
    g.add_argument("--nprobe", type=_positive, help="cells probed per query token")
    g.add_argument("--centroid-score-threshold", type=float, help="prune centroids scoring below this")
    g.add_argument("--ndocs", type=_positive, help="candidates rescored by centroid interaction")
    g.add_argument("--n-exact", type=_positive, help="candidates decompressed for exact MaxSim")
    g.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                   help="exhaustive MaxSim over every passage (--no-exact: always PLAID); default: exhaustive "
                        "for small indexes made by `plaidx index` when no parameter is given, else PLAID")
    p.add_argument("--model", help="model for the queries (default: the one the index records)")
    p.add_argument("--device", help="torch device for the model (default: cuda > mps > cpu)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="plaidx", formatter_class=fmt, epilog=_EPILOG,
                                     description="Compressed late-interaction (ColBERT/PLAID) indexes: build, "
                                                 "search, inspect, evaluate and serve them.")
    parser.add_argument("--version", action="version", version=f"plaidx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("index", help="build an index from a corpus", formatter_class=fmt, epilog=_EPILOG,
                       description="Encode a corpus with a ColBERT model and build a compressed index with its "
                                   "document store. SOURCE: a JSONL file (one {\"_id\", \"text\", [\"title\"], "
                                   "...} object per line; other fields become metadata), a BEIR folder "
                                   "(corpus.jsonl), a folder of .txt/.md/.rst files (ids are relative paths), "
                                   "or - for JSONL on stdin.")
    p.add_argument("source", help="corpus: JSONL file, BEIR folder, folder of text files, or -")
    p.add_argument("index", help="folder to create for the index")
    p.add_argument("--model", help="checkpoint name or path (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--nbits", type=int, choices=(1, 2, 4, 8),
                   help="bits per residual dimension (default: 8 below 5,000 passages, 4 below 10,000, else 2)")
    p.add_argument("--max-document-length", type=_positive, default=256,
                   help="tokens per passage; longer documents are split (default 256)")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="do not split long documents (they are truncated at the model's document length)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at INDEX")
    p.add_argument("--limit", type=_positive, help="index only the first N documents")
    p.add_argument("--id-field", help="JSONL field holding the id (default: _id, id, doc_id or docid)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--title-field", default="title",
                   help="JSONL field prepended to the text as a title (default: title; '' for none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index with query text", formatter_class=fmt, epilog=_EPILOG,
                       description="Encode queries with the index's model and print the ranked passages.")
    p.add_argument("index", help="index folder (made by `plaidx index`, or a bare engine folder)")
    p.add_argument("query", nargs="*", help="query text(s); '-' reads one query per line from stdin")
    p.add_argument("--queries-file", help="file with one query per line")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--doc-ids", action="append", metavar="IDS",
                   help="restrict results to these document ids (comma-separated; repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--width", type=int, default=80, help="characters of content shown per result (default 80)")
    _add_search_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="what an index holds; --verify checks it", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Print documents, passages, tokens, nlist, nbits, dim, model, size on disk and "
                                   "format version of an index (a folder made by `plaidx index` or a bare engine "
                                   "folder). --verify checks every checksum and the document store, shows "
                                   "drift, and exits 1 when it finds a problem.")
    p.add_argument("index", help="index folder")
    p.add_argument("--verify", action="store_true", help="check every CRC-32 and the document store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="nDCG@10, recall@100 and MRR@10 against qrels (ranx)", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Search every judged query of a BEIR folder (queries.jsonl + qrels/SPLIT.tsv) "
                                   "and score the run with ranx. A document's score is its best passage's.")
    p.add_argument("index", help="index folder built from the same corpus")
    p.add_argument("data", help="BEIR folder with queries.jsonl and qrels/")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("-k", type=_positive, default=100, help="passages retrieved per query (default 100)")
    p.add_argument("--limit-queries", type=_positive, help="evaluate only the first N judged queries")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_search_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve indexes over HTTP (FastAPI + uvicorn)", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Serve POST /v1/multi-vector and /v1/rerank (Jina API shapes), POST /v1/search, "
                                   "GET /v1/indexes and GET /health; OpenAPI at /docs. Listening beyond loopback "
                                   "requires an API key (--api-key or PLAIDX_API_KEY).")
    p.add_argument("--index", action="append", metavar="NAME=PATH",
                   help="an index to serve (repeatable; PATH alone names it after its folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $PLAIDX_API_KEY)")
    p.add_argument("--model", help="model for /v1/multi-vector and /v1/rerank (default: the first index's)")
    p.add_argument("--model-name", help="another name clients may send as 'model' (e.g. jina-colbert-v2)")
    p.add_argument("--max-body-bytes", type=_positive, default=4 << 20, help="request body limit (default 4 MiB)")
    p.add_argument("--max-inputs", type=_positive, default=256, help="texts per request (default 256)")
    p.add_argument("--max-tokens", type=_positive, default=131_072, help="model tokens per request")
    p.add_argument("--search-threads", type=_positive, help="searches at once (default: CPU count)")
    p.add_argument("--torch-threads", type=_positive, default=1,
                   help="threads of one model call (default 1: concurrent requests and shared model calls keep "
                        "the cores busy; more threads per call oversubscribe them under load)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("-q", "--quiet", action="store_true", help="no startup message")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .errors import IndexFormatError, PlaidxError

    try:
        return args.func(args)
    except CliError as exc:
        print(f"plaidx {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"plaidx {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except IndexFormatError as exc:
        print(f"plaidx {args.command}: error: {exc} (run `plaidx info --verify` on it)", file=sys.stderr)
        return EXIT_FAILURE
    except (PlaidxError, OSError, ValueError, TypeError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"plaidx {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
