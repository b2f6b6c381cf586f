"""Request and response schemas of the HTTP server (pydantic), the source of its OpenAPI document."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

# Jina-shaped requests ignore unknown fields (clients of that API send extras such as ``truncate``);
# plaidx's own /v1/search forbids them so that a misspelt parameter is an error, not a silent default.
_JINA = ConfigDict(extra="ignore")
_OWN = ConfigDict(extra="forbid")


class TextInput(BaseModel):
    """One text input in the object form the Jina API also accepts."""

    model_config = _JINA
    text: StrictStr


Text = Union[StrictStr, TextInput]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a human-readable ``detail`` naming the problem and a stable ``type``."""

    detail: str = Field(description="what is wrong and, where possible, what to send instead")
    type: str = Field(description="machine-readable error kind, e.g. invalid_request, too_many_inputs")
    param: Optional[str] = Field(None, description="the request field at fault, when there is one")


class Usage(BaseModel):
    total_tokens: int = Field(description="tokens the model read for this request (after truncation)")


# ---------------------------------------------------------------------------------- /v1/multi-vector
class MultiVectorRequest(BaseModel):
    """Jina embeddings API, multi-vector output (``POST /v1/multi-vector``)."""

    model_config = _JINA
    model: Optional[StrictStr] = Field(None, description="served model name; omitted means the default model")
    input: Union[StrictStr, list[Text]] = Field(description="texts to embed (a string or a list)")
    input_type: Literal["query", "document"] = Field(
        "document", description="queries are always encoded to query_length vectors (padded with [MASK])")
    embedding_type: Literal["float", "base64"] = Field(
        "float", description="float: nested lists; base64: little-endian float32 bytes of the (n, dim) matrix")
    dimensions: Optional[StrictInt] = Field(None, description="truncate vectors to this many dimensions "
                                                              "(Matryoshka), re-normalised")


class MultiVectorEmbedding(BaseModel):
    object: Literal["embeddings"] = "embeddings"
    index: int
    embeddings: Union[list[list[float]], str] = Field(description="(n_vectors, dim) floats, or base64")


class MultiVectorResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    data: list[MultiVectorEmbedding]
    usage: Usage


# ---------------------------------------------------------------------------------- /v1/rerank
class RerankRequest(BaseModel):
    """Jina rerank API (``POST /v1/rerank``): documents ordered by MaxSim with the query."""

    model_config = _JINA
    model: Optional[StrictStr] = None
    query: Union[StrictStr, TextInput]
    documents: list[Text] = Field(description="candidate documents (strings or {\"text\": ...})")
    top_n: Optional[StrictInt] = Field(None, description="how many results to return; default all")
    return_documents: StrictBool = True


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float
    document: Optional[RerankDocument] = None


class RerankResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    results: list[RerankResult]
    usage: Usage


# ---------------------------------------------------------------------------------- /v1/search
class SearchRequest(BaseModel):
    """Search one served index, by query text (encoded with the index's model) or by query embeddings."""

    model_config = _OWN
    index: StrictStr = Field(description="name of a served index (GET /v1/indexes)")
    query: Optional[StrictStr] = Field(None, description="query text; give exactly one of query and "
                                                         "query_embeddings")
    query_embeddings: Optional[list[list[Union[StrictFloat, StrictInt]]]] = Field(
        None, description="(q_tokens, dim) query token embeddings, e.g. from /v1/multi-vector")
    k: StrictInt = Field(10, description="number of results")
    doc_ids: Optional[list[Union[StrictStr, StrictInt]]] = Field(
        None, description="restrict results to these document ids (RAG indexes: your document_id values; "
                          "engine indexes: integer ids)")
    nprobe: Optional[StrictInt] = Field(None, description="cells probed per query token (default by k)")
    centroid_score_threshold: Optional[Union[StrictFloat, StrictInt]] = None
    ndocs: Optional[StrictInt] = Field(None, description="candidates rescored by centroid interaction")
    n_exact: Optional[StrictInt] = Field(None, description="candidates decompressed for exact MaxSim")
    exact: Optional[StrictBool] = Field(
        None, description="true: exhaustive MaxSim; false: the PLAID pipeline; null (default): as the library "
                          "decides: RAG indexes of at most plaidx.rag.EXACT_MAX_TOKENS tokens are scored "
                          "exhaustively unless a PLAID parameter is given, engine folders use PLAID")
    return_content: StrictBool = True
    return_metadata: StrictBool = True


class SearchHit(BaseModel):
    rank: int = Field(description="1-based rank")
    score: float
    id: int = Field(description="the engine's int64 id of the stored passage")
    document_id: Optional[Union[str, int]] = Field(None, description="the caller's document id (RAG indexes)")
    passage_id: Optional[int] = None
    content: Optional[str] = None
    document_metadata: Optional[dict] = None


class SearchResponse(BaseModel):
    index: str
    model: Optional[str] = None
    object: Literal["list"] = "list"
    results: list[SearchHit]
    usage: Usage


# ---------------------------------------------------------------------------------- GET endpoints
class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    model: Optional[str] = None
    indexes: int


class IndexDescription(BaseModel):
    name: str
    kind: Literal["rag", "engine"]
    documents: int = Field(description="live passages stored in the engine")
    tokens: int
    dim: int
    nbits: int
    nlist: int
    generation: int
    model: Optional[str] = None


class IndexList(BaseModel):
    object: Literal["list"] = "list"
    data: list[IndexDescription]
