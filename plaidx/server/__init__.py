"""The HTTP server (FastAPI): Jina-shaped embeddings and rerank, and search of index folders.

``app`` builds the application, ``models`` its request and response schemas, ``inputs`` the checks of
request values against the limits, ``http`` the auth, error answers and body handling, ``docs`` the
offline /docs page, ``encoding`` the model worker that batches concurrent requests, ``errors`` the error
answer, ``net`` the loopback rule. FastAPI and uvicorn come with the ``server`` extra; importing this
package without them says so.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {"ApiError": "errors", "BackgroundServer": "app", "Encoder": "encoding", "Limits": "inputs",
           "create_app": "app", "serve": "app", "is_loopback": "net"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'plaidx.server' has no attribute {name!r}")
    if module != "net":
        from ..errors import require

        require("fastapi", "server", "the plaidx server")
        require("uvicorn", "server", "the plaidx server")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
