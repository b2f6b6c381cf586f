"""Metadata filters (``where=``) as parameterised SQLite conditions over the document store's JSON metadata.

A filter is a dict. Each key is a metadata field (``"lang"``; ``"source.year"`` for a nested one) and its value
either the value to match or a dict of operators; several keys must all hold. ``$and``, ``$or`` (lists of
filters) and ``$not`` (one filter) combine them::

    {"lang": "en", "year": {"$gte": 2020}, "tags": {"$contains": "colbert"}}
    {"$or": [{"lang": "en"}, {"lang": {"$in": ["de", "fr"]}}]}

Operators: ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``, ``$nin`` (a list), ``$exists``
(true or false) and ``$contains`` (a list field holds the value). Values are strings, numbers, booleans or None
(JSON null), and a value only matches its own kind: ``1`` matches neither ``true`` nor ``"1"``. A document
without the field matches ``$ne``, ``$nin`` and ``$exists: false`` only. Values travel as bound parameters,
never as SQL text. A field's JSON path is written into the statement as an SQL string literal (its quotes
doubled; control characters refused), the one form in which SQLite matches it to an index over that field
(:meth:`plaidx.rag.docstore.DocStore.index_metadata`), which then serves ``$eq``, ``$in`` and the comparisons.
"""

from __future__ import annotations

import json
import numbers
from typing import Any

from ..errors import check_unicode

MIN_INT, MAX_INT = -(1 << 63), (1 << 63) - 1  # the integers SQLite stores as INTEGER (others become rounded floats)
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", "$contains", *_COMPARE)


def check_stored(value: Any, what: str) -> None:
    """A ValueError for a string or integer that the document store would not give back as given, or that a filter
    could not compare as given: a string with a lone surrogate (UTF-8 cannot hold it) or a NUL (SQLite's JSON
    functions end the string there), an integer beyond 64 bits (compared as a rounded float)."""
    if isinstance(value, str):
        check_unicode(value, what)
        if "\x00" in value:
            raise ValueError(f"{what} must not contain NUL characters, got {value[:40]!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        raise ValueError(f"{what}: {value} is beyond the 64-bit integers SQLite holds; it must fit in 64 bits "
                         f"({MIN_INT} to {MAX_INT})")


def field_path(field: Any) -> str:
    """The SQLite JSON path of a metadata field name (``"source.year"`` -> ``$."source"."year"``); a ValueError
    naming the rule for a name that is not one."""
    if not isinstance(field, str) or not field or field.startswith("$"):
        raise ValueError(f"where: {field!r} is not a metadata field name (the operators are $and, $or, $not at the "
                         f"top and {', '.join(OPERATORS)} inside a field)")
    check_unicode(field, f"where: field {field!r}")
    parts = field.split(".")
    if any(not p or '"' in p or "\\" in p or any(ord(c) < 32 or ord(c) == 127 for c in p) for p in parts):
        raise ValueError(f"where: field {field!r}: a name is dot-separated parts, none empty, without double "
                         "quotes, backslashes or control characters")
    return "$" + "".join(f'."{p}"' for p in parts)


def check_fields(fields: Any, what: str) -> list[str]:
    """A non-empty list of metadata field names (each as :func:`field_path` checks one), as a list."""
    if isinstance(fields, str) or not isinstance(fields, (list, tuple)) or not fields:
        raise TypeError(f"{what} takes a non-empty list of metadata field names (e.g. ['lang', 'source.year']), "
                        f"got {fields!r}")
    for f in fields:
        field_path(f)
    return list(fields)


def path_sql(path: str) -> str:
    """A JSON path from :func:`field_path` as an SQL string literal."""
    return "'" + path.replace("'", "''") + "'"


def _path(field: Any) -> str:
    return path_sql(field_path(field))


def _kind(value: Any, where: str) -> tuple[str, Any]:
    """(the JSON types a filter value matches, as an SQL condition on ``{t}``; the value as SQLite compares it)."""
    if value is None:
        return "{t} = 'null'", None
    if isinstance(value, bool):
        return "{t} = 'true'" if value else "{t} = 'false'", None
    if isinstance(value, numbers.Real):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"where: {where}: {value!r} is not a JSON number")
        value = int(value) if isinstance(value, numbers.Integral) else float(value)  # numpy scalars as Python's
        check_stored(value, f"where: {where}")
        return "{t} IN ('integer', 'real')", value
    if isinstance(value, str):
        check_stored(value, f"where: {where}")
        return "{t} = 'text'", value
    raise TypeError(f"where: {where}: a value must be a string, number, boolean or None, got "
                    f"{type(value).__name__} {value!r}")


def _equal(path: str, value: Any, where: str) -> tuple[str, list[Any]]:
    kind, v = _kind(value, where)
    kind = kind.format(t=f"json_type(metadata, {path})")
    if v is None:  # null, true and false are matched by their JSON type alone
        return kind, []
    return f"({kind} AND json_extract(metadata, {path}) = ?)", [v]


def _member(path: str, values: Any, where: str) -> tuple[str, list[Any]]:
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"where: {where} takes a list of values, got {type(values).__name__}")
    if not values:
        return "0", []
    by_kind: dict[str, list[Any]] = {}
    parts = []
    for v in values:
        kind, sql_value = _kind(v, where)
        kind = kind.format(t=f"json_type(metadata, {path})")
        if sql_value is None:  # null, true, false: one condition each
            parts.append((kind, []))
        else:  # strings and numbers: one list per kind, as a JSON array parameter (no bound-variable limit)
            by_kind.setdefault(kind, []).append(sql_value)
    for kind, vs in by_kind.items():
        parts.append((f"({kind} AND json_extract(metadata, {path}) IN (SELECT value FROM json_each(?)))",
                      [json.dumps(vs)]))
    return "(" + " OR ".join(c for c, _ in parts) + ")", [p for _, ps in parts for p in ps]


def _field(field: str, spec: Any) -> tuple[str, list[Any]]:
    path = _path(field)
    if not isinstance(spec, dict):
        return _equal(path, spec, repr(field))
    if not spec:
        raise ValueError(f"where: field {field!r} has an empty operator dict; give a value or operators")
    conds: list[str] = []
    params: list[Any] = []
    for op, value in spec.items():
        at = f"{field!r} {op}"
        if op == "$eq":
            c, p = _equal(path, value, at)
        elif op == "$ne":
            c, p = _equal(path, value, at)
            c = f"NOT COALESCE({c}, 0)"
        elif op in _COMPARE:
            kind, v = _kind(value, at)
            if not isinstance(v, (str, numbers.Real)) or isinstance(value, bool):
                raise TypeError(f"where: {at} compares strings or numbers, got {value!r}")
            kind = kind.format(t=f"json_type(metadata, {path})")
            c, p = f"({kind} AND json_extract(metadata, {path}) {_COMPARE[op]} ?)", [v]
        elif op == "$in":
            c, p = _member(path, value, at)
        elif op == "$nin":
            c, p = _member(path, value, at)
            c = f"NOT COALESCE({c}, 0)"
        elif op == "$exists":
            if not isinstance(value, bool):
                raise TypeError(f"where: {at} takes true or false, got {value!r}")
            c, p = f"json_type(metadata, {path}) IS {'NOT ' if value else ''}NULL", []
        elif op == "$contains":
            kind, v = _kind(value, at)
            # a list field only (json_each also walks a lone value and an object's values)
            c = (f"json_type(metadata, {path}) = 'array' AND EXISTS (SELECT 1 FROM json_each(metadata, {path}) e "
                 f"WHERE {kind.format(t='e.type')}")
            c, p = (c + ")", []) if v is None else (c + " AND e.value = ?)", [v])
        else:
            raise ValueError(f"where: field {field!r}: unknown operator {op!r}; the operators are "
                             f"{', '.join(OPERATORS)}")
        conds.append(c)
        params.extend(p)
    return "(" + " AND ".join(conds) + ")", params


def where_sql(where: Any) -> tuple[str, list[Any]]:
    """A filter as an SQL condition on ``documents.metadata`` and its bound parameters."""
    if not isinstance(where, dict):
        raise TypeError(f"where must be a dict of metadata fields (e.g. {{'lang': 'en'}}), got {type(where).__name__}")
    if not where:
        raise ValueError("where is empty: give at least one field, or leave it None")
    conds: list[str] = []
    params: list[Any] = []
    for key, value in where.items():
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise TypeError(f"where: {key} takes a non-empty list of filters")
            parts = [where_sql(v) for v in value]
            conds.append("(" + f" {key[1:].upper()} ".join(c for c, _ in parts) + ")")
            params.extend(p for _, ps in parts for p in ps)
        elif key == "$not":
            c, p = where_sql(value)
            conds.append(f"NOT COALESCE({c}, 0)")
            params.extend(p)
        else:
            c, p = _field(key, value)
            conds.append(c)
            params.extend(p)
    return "(" + " AND ".join(conds) + ")", params

