"""Checks of what RAG callers pass: texts, document ids, metadata, index names; each error says what to fix."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from .docstore import metadata_json
from .where import check_stored

_NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$")


def check_texts(texts: Any, what: str = "collection", empty: str = "give at least one document",
                blank: str = "is empty or blank") -> list[str]:
    """The texts as a list of non-blank strings (the encoder's rules, with the wording of an index call)."""
    from ..encoder import check_texts as encoder_check

    return encoder_check(texts, what, empty=empty, blank=blank)


def check_name(name: Any, strict: bool = True) -> str:
    """A new index's name: letters, digits, '.', '_', '-'; an existing one (strict=False): any folder name."""
    if not strict and isinstance(name, str) and name not in ("", ".", "..") and os.sep not in name and \
            (os.altsep is None or os.altsep not in name):
        return name
    if not isinstance(name, str) or not _NAME_OK.match(name) or name in (".", ".."):
        raise ValueError(f"index_name must be a folder name of letters, digits, '.', '_' or '-' (not starting "
                         f"with '.' or '-'), got {name!r}")
    return name


def as_id_list(ids: Any, what: str) -> list[Any]:
    if isinstance(ids, (str, int, np.integer)) and not isinstance(ids, bool):
        return [ids]
    if ids is None or not hasattr(ids, "__iter__"):
        raise TypeError(f"{what} must be a document id or a list of them, got {type(ids).__name__}")
    return [int(x) if isinstance(x, np.integer) else x for x in ids]


def check_ids(ids: Optional[Sequence[Any]], n: int) -> list[Any]:
    """RAGatouille's rules: generated uuid4 strings when None; same length, unique, one type, no blanks."""
    if ids is None:
        return [str(uuid.uuid4()) for _ in range(n)]
    ids = as_id_list(ids, "document_ids")
    if len(ids) != n:
        raise ValueError(f"document_ids must be the same length as collection ({len(ids)} ids for {n} documents)")
    for x in ids:
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            raise ValueError(f"document_ids must be strings or integers, got {type(x).__name__} {x!r}")
    if not all(isinstance(x, type(ids[0])) for x in ids):
        raise ValueError("All document_ids must be of the same type")
    if any(isinstance(x, str) and not x.strip() for x in ids):
        raise ValueError("document_ids must not contain empty strings")
    for x in ids:  # ids are looked up through SQLite's JSON functions
        check_stored(x, "document_ids")
    if len(set(ids)) != len(ids):
        seen: set[Any] = set()
        dups = [x for x in ids if x in seen or seen.add(x)]
        raise ValueError(f"document_ids must be unique (repeated: {dups[:10]})")
    return ids


def check_metadatas(metadatas: Optional[Sequence[Any]], n: int) -> list[Optional[str]]:
    if metadatas is None:
        return [None] * n
    if isinstance(metadatas, dict) or not hasattr(metadatas, "__len__"):
        raise TypeError("document_metadatas must be a list of dicts, one per document")
    if len(metadatas) != n:
        raise ValueError(f"document_metadatas must be the same length as collection ({len(metadatas)} "
                         f"metadatas for {n} documents)")
    return [metadata_json(m, f"document_metadatas[{i}]") for i, m in enumerate(metadatas)]
