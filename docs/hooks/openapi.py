"""The HTTP API page from the server's OpenAPI schema: cached in docs/openapi.json, rendered into http.md.

As an mkdocs hook it regenerates the cache when the server's source changed (the cache records a hash of
plaidx/server/*.py), then replaces the ``<!-- openapi-reference -->`` marker of http.md with one section
per endpoint. Run it as a script (``python docs/hooks/openapi.py``) to regenerate the cache by hand, or
with ``--check`` to exit 1 when the cache is stale. Generating creates the app with the bundled model
(offline, a few seconds); building the site from a fresh cache imports nothing from plaidx.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# PLAIDX_OPENAPI_CACHE points elsewhere (the tests use a copy, so building the site never writes to the tree).
CACHE = Path(os.environ.get("PLAIDX_OPENAPI_CACHE") or ROOT / "docs" / "openapi.json")
MARKER = "<!-- openapi-reference -->"
SOURCE_KEY = "x-plaidx-source-sha1"


def source_hash() -> str:
    """sha1 over the server package's sources and the package version (what the schema depends on)."""
    h = hashlib.sha1()
    for p in sorted((ROOT / "plaidx" / "server").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update((ROOT / "plaidx" / "__init__.py").read_bytes())
    return h.hexdigest()


def generate() -> dict[str, Any]:
    """The schema of ``plaidx.server.create_app()`` (the bundled model, no index), with its source hash."""
    from plaidx.server import create_app

    schema = create_app().openapi()
    schema[SOURCE_KEY] = source_hash()
    return schema


def write_cache() -> dict[str, Any]:
    schema = generate()
    CACHE.write_text(json.dumps(schema, indent=1) + "\n")  # field order as declared
    return schema


def load_schema() -> dict[str, Any]:
    """The cached schema, regenerated in a subprocess (HF_HUB_OFFLINE) when the server's sources changed."""
    if CACHE.is_file():
        schema = json.loads(CACHE.read_text())
        if schema.get(SOURCE_KEY) == source_hash():
            return schema
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"regenerating docs/openapi.json failed:\n{res.stderr[-3000:]}")
    return json.loads(CACHE.read_text())


# ---------------------------------------------------------------- rendering
def _resolve(schema: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def _type_of(schema: dict[str, Any], node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " or ".join(_type_of(schema, n) for n in node[key])
    t = node.get("type", "")
    if t == "array":
        return f"array of {_type_of(schema, node.get('items', {})) or 'any'}"
    if "enum" in node:
        return " or ".join(json.dumps(v) for v in node["enum"])
    return t or "any"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _fields_table(schema: dict[str, Any], name: str) -> list[str]:
    node = _resolve(schema, {"$ref": f"#/components/schemas/{name}"})
    props = node.get("properties", {})
    if not props:
        return []
    required = set(node.get("required", []))
    out = [f"**{name}**" + (f": {_cell(node['description'])}" if node.get("description") else ""), "",
           "| field | type | required | default | description |", "|---|---|---|---|---|"]
    for field, spec in props.items():
        default = json.dumps(spec["default"]) if "default" in spec else ""
        out.append(f"| `{field}` | {_cell(_type_of(schema, spec))} | {'yes' if field in required else ''} | "
                   f"{_cell(default)} | {_cell(spec.get('description', ''))} |")
    return [*out, ""]


def _refs_in(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if "$ref" in node:
            found.append(node["$ref"].rsplit("/", 1)[-1])
        for v in node.values():
            found += _refs_in(v)
    elif isinstance(node, list):
        for v in node:
            found += _refs_in(v)
    return found


def render(schema: dict[str, Any]) -> str:
    """Markdown: one section per endpoint (summary, description, body, responses) and the schemas used."""
    lines: list[str] = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            lines += [f"### `{method.upper()} {path}`", ""]
            if op.get("summary"):
                lines += [f"**{op['summary']}**", ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            seen: set[str] = set()
            for name in _refs_in(body):
                if name not in seen:
                    seen.add(name)
                    lines += _fields_table(schema, name)
            responses = op.get("responses", {})
            if responses:
                lines += ["| status | meaning | body |", "|---|---|---|"]
                for status, resp in responses.items():
                    content = resp.get("content", {}).get("application/json", {}).get("schema")
                    lines.append(f"| {status} | {_cell(resp.get('description', ''))} | "
                                 f"{_cell(_type_of(schema, content)) if content else ''} |")
                lines.append("")
    lines += ["### Response schemas", ""]
    request_names = {n for methods in schema.get("paths", {}).values() for op in methods.values()
                     for n in _refs_in(op.get("requestBody", {}))}
    for name in sorted(schema.get("components", {}).get("schemas", {})):
        if name not in request_names:
            lines += _fields_table(schema, name)
    return "\n".join(lines)


# ---------------------------------------------------------------- mkdocs hook entry points
_SCHEMA: dict[str, Any] = {}


def on_pre_build(config: Any, **kwargs: Any) -> None:
    _SCHEMA.clear()
    _SCHEMA.update(load_schema())


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render(_SCHEMA or load_schema()))
    return markdown


if __name__ == "__main__":
    if "--check" in sys.argv:
        fresh = CACHE.is_file() and json.loads(CACHE.read_text()).get(SOURCE_KEY) == source_hash()
        print("docs/openapi.json is current" if fresh else "docs/openapi.json is stale: run python docs/hooks/openapi.py")
        raise SystemExit(0 if fresh else 1)
    s = write_cache()
    print(f"wrote {CACHE} ({len(s.get('paths', {}))} paths)")
