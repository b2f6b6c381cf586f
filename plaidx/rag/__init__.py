"""The RAG layer: RAGatouille's API over index folders (engine + document store + configuration).

``folder`` is the one index-folder handle (used by this layer, the CLI and the server); ``model`` the
RAGatouille-compatible class; ``docstore`` the SQLite store of passages, ids and metadata; ``splitter``
the token-aware passage splitter; ``rerank`` Jina-shaped reranking; ``langchain`` the LangChain adapters.
"""

from __future__ import annotations

from .folder import EXACT_MAX_TOKENS, FolderCache, Hit, IndexFolder
from .model import RAGPretrainedModel
from .rerank import rerank

__all__ = ["EXACT_MAX_TOKENS", "FolderCache", "Hit", "IndexFolder", "RAGPretrainedModel", "rerank"]
