"""plaidx: a compressed late-interaction (ColBERT/PLAID) index engine with a native C++ core."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Heavy parts (torch, transformers) load on first use, so `import plaidx` stays cheap for engine users.
_LAZY = {
    "Index": ("plaidx.engine", "Index"),
    "SearchParams": ("plaidx.engine", "SearchParams"),
    "maxsim": ("plaidx.engine", "maxsim"),
    "build_info": ("plaidx.engine", "build_info"),
    "ColBERT": ("plaidx.encoder", "ColBERT"),
    "RAGPretrainedModel": ("plaidx.rag", "RAGPretrainedModel"),
    "rerank": ("plaidx.rag", "rerank"),
}

__all__ = ["__version__", *[n for n in _LAZY if not n.endswith("_")]]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'plaidx' has no attribute {name!r}") from None
    value = getattr(import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
