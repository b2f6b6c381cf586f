"""Request and response schemas of the HTTP server (pydantic), the source of its OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

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
Number = Union[StrictFloat, StrictInt]


class SearchRequest(BaseModel):
    """Search one served index, by query text (encoded with the index's model) or by query embeddings.

    One query (``query``, or one ``(q_tokens, dim)`` matrix) or several (``queries``, or a list of
    matrices); the response's ``data`` holds one entry per query, in request order.
    """

    model_config = _OWN
    index: Optional[StrictStr] = Field(None, description="name of a served index (GET /v1/indexes); may be "
                                                         "omitted when the server serves exactly one index")
    query: Optional[StrictStr] = Field(None, description="one query text; give exactly one of query, queries "
                                                         "and query_embeddings")
    queries: Optional[list[StrictStr]] = Field(None, description="several query texts, searched in one call")
    query_embeddings: Optional[Union[list[list[Number]], list[list[list[Number]]]]] = Field(
        None, description="one query as a (q_tokens, dim) matrix of token embeddings (e.g. from "
                          "/v1/multi-vector), or a list of such matrices for several queries")
    k: StrictInt = Field(10, description="number of results per query")
    doc_ids: Optional[Union[list[Union[StrictStr, StrictInt]], list[list[Union[StrictStr, StrictInt]]]]] = Field(
        None, description="restrict results to these document ids (RAG indexes: your document_id values; "
                          "engine indexes: integer ids); an empty list allows no document. A list of lists, one "
                          "per query, restricts each query to its own")
    where: Optional[dict[str, Any]] = Field(
        None, description="RAG indexes: keep the documents whose metadata matches, e.g. {\"lang\": \"en\", "
                          "\"year\": {\"$gte\": 2020}}; operators $eq $ne $gt $gte $lt $lte $in $nin $exists "
                          "$contains, combined with $and $or $not (see plaidx.rag.where); with doc_ids both hold")
    nprobe: Optional[StrictInt] = Field(None, description="cells probed per query token (default by k, the index "
                                                          "size and its nbits)")
    centroid_score_threshold: Optional[Number] = None
    ndocs: Optional[StrictInt] = Field(None, description="candidates rescored by centroid interaction")
    n_exact: Optional[StrictInt] = Field(None, description="candidates decompressed for exact MaxSim")
    rerank: Optional[StrictInt] = Field(
        None, description="on an index with kept vectors (the rerank tier): candidates scored by them (0: off, "
                          "PLAID over the codes; null: the tier's default)")
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


class QueryResults(BaseModel):
    query_index: int = Field(description="position of the query in the request (0 for a single query)")
    results: list[SearchHit] = Field(description="up to k hits, best first; fewer only when fewer passages "
                                                 "exist or pass the doc_ids filter")


class SearchResponse(BaseModel):
    index: str
    model: Optional[str] = Field(None, description="the served model name that encoded the query text (or the "
                                                   "model the index records, for query_embeddings)")
    object: Literal["list"] = "list"
    data: list[QueryResults] = Field(description="one entry per query, in request order (as the engine's "
                                                 "(nq, k) results)")
    results: Optional[list[SearchHit]] = Field(
        None, description="the hits of a single-query request (query, or one matrix): data[0].results; null "
                          "when several queries were sent")
    usage: Usage


# ---------------------------------------------------------------------------------- GET endpoints
class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    model: Optional[str] = Field(None, description="the default model's name, as clients send it as 'model'")
    indexes: int


class IndexDescription(BaseModel):
    name: str
    kind: Literal["rag", "engine"]
    documents: int = Field(description="live documents (RAG indexes: your documents, each split into one or more "
                                       "passages; engine folders: the engine's entries)")
    passages: int = Field(description="live passages stored in the engine (what a search ranks)")
    tokens: int
    dim: int
    nbits: int
    nlist: int
    generation: int
    model: Optional[str] = Field(None, description="the model name the index records, as clients send it "
                                                   "(never a path on the server)")
    metadata_indexes: list[str] = Field(default_factory=list, description="metadata fields with an index: a 'where' "
                                        "filter on them ($eq, $in, comparisons) reads only the matching documents")


class IndexList(BaseModel):
    object: Literal["list"] = "list"
    data: list[IndexDescription]
