"""Corpora the CLI reads: JSONL files or stdin, BEIR folders, folders of text files."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from .errors import CliError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def read_corpus(source: str, *, id_field: Optional[str] = None, text_field: str = "text",
                title_field: Optional[str] = "title", limit: Optional[int] = None) -> tuple[list, list, list]:
    """``(document_ids, texts, metadatas)`` from a JSONL file, a BEIR folder, a folder of text files or "-"
    (JSONL on stdin). JSONL fields other than the id and text become the document's metadata."""
    if source == "-":
        records = _jsonl_records(text_lines(_stdin_bytes(), "<stdin>"), "<stdin>")
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


def _stdin_bytes() -> Any:
    return getattr(sys.stdin, "buffer", None) or (line.encode("utf-8") for line in sys.stdin)


def text_lines(raw: Any, name: str) -> Iterator[str]:
    """The lines of a binary stream as text: UTF-8, a leading byte order mark skipped; a line that is not
    UTF-8 raises CliError naming it (``name:line``)."""
    for n, line in enumerate(raw, start=1):
        try:
            yield line.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise CliError(f"{name}:{n}: not UTF-8 text (byte {line[exc.start:exc.start + 1]!r} at column "
                           f"{exc.start + 1}); convert the file to UTF-8 (e.g. iconv -t UTF-8)") from None


def read_lines(path: str | Path, what: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; a missing or unreadable file is a CliError."""
    try:
        with open(path, "rb") as f:
            return [ln.strip() for ln in text_lines(f, str(path)) if ln.strip()]
    except FileNotFoundError:
        raise CliError(f"{what} {str(path)!r} not found") from None
    except IsADirectoryError:
        raise CliError(f"{what} {str(path)!r} is a folder; give a text file") from None
    except OSError as exc:
        raise CliError(f"{what} {str(path)!r} cannot be read ({exc.strerror})") from None


def _jsonl_file(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        yield from _jsonl_records(text_lines(f, str(path)), str(path))


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (write null, or the number as a string)")


def _jsonl_records(lines: Any, name: str) -> Iterator[tuple[str, Any]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_not_json)  # NaN and Infinity are Python's, not JSON
        except json.JSONDecodeError as exc:
            raise CliError(f"{name}:{n}: invalid JSON ({exc.msg} at column {exc.colno}); expected one JSON "
                           "object per line") from None
        except ValueError as exc:
            raise CliError(f"{name}:{n}: invalid JSON ({exc})") from None
        yield f"{name}:{n}", record


def _text_folder(folder: Path, limit: Optional[int]) -> tuple[list, list, list]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    ids, texts, metas = [], [], []
    for f in files:
        if limit is not None and len(ids) >= limit:
            break
        rel = f.relative_to(folder).as_posix()
        try:
            text = f.read_text(encoding="utf-8-sig").strip()
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
