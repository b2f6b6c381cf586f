"""LangChain retriever and document compressor over a RAGPretrainedModel (needs the langchain extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun, Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ..errors import MissingExtraError

    raise MissingExtraError("plaidx's LangChain integration needs langchain-core: install it with "
                            f"`pip install 'plaidx[langchain]'` ({exc})") from exc


def _metadata(result: dict[str, Any]) -> dict[str, Any]:
    """The document's own metadata at the top level, as RAGatouille's retriever gives it, with the hit's
    document_id, passage_id, score and rank beside it (a metadata field of the same name wins)."""
    return {**{key: result[key] for key in ("document_id", "passage_id", "score", "rank") if key in result},
            **(result.get("document_metadata") or {})}


class PlaidxLangChainRetriever(BaseRetriever):
    """Documents for a query from ``model.search(query, **kwargs)``, best first.

    ``page_content`` is the passage; ``metadata`` is the document's metadata (as RAGatouille's retriever gives
    it) with the hit's document_id, passage_id, score and rank beside it.
    """

    model: Any
    kwargs: dict = {}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=r["content"], metadata=_metadata(r)) for r in self.model.search(query,
                                                                                                      **self.kwargs)]


class PlaidxLangChainCompressor(BaseDocumentCompressor):
    """Keeps the ``k`` documents that ``model.rerank`` scores best, with ``relevance_score`` in metadata."""

    model: Any
    kwargs: dict = {}
    k: int = 5

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Optional[Callbacks] = None, **kwargs: Any) -> Sequence[Document]:
        """The best ``k`` (this call's ``k=`` or the compressor's) of ``documents``, best first, each a copy with
        ``relevance_score`` added to its metadata (its id kept)."""
        docs = list(documents)
        if not docs:
            return []
        results = self.model.rerank(query, [d.page_content for d in docs], k=kwargs.get("k", self.k), **self.kwargs)
        out = []
        for r in results:
            doc = docs[r["result_index"]]
            out.append(doc.model_copy(update={"metadata": {**doc.metadata, "relevance_score": r["score"]}}))
        return out


__all__ = ["PlaidxLangChainRetriever", "PlaidxLangChainCompressor"]
