"""The HTTP server: Jina-shaped multi-vector embeddings and rerank, and search of opened indexes (FastAPI)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..engine import SearchParams, maxsim
from ..rag import FolderCache, IndexFolder
from .encoding import Encoder
from .errors import ApiError
from .models import (
    ErrorResponse,
    HealthResponse,
    IndexDescription,
    IndexList,
    MultiVectorRequest,
    MultiVectorResponse,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
    TextInput,
)
from .net import is_loopback


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond is answered 413 (sizes) or 400 (values).

    Attributes
    ----------
    max_body_bytes : bytes of one request body.
    max_inputs : texts of one /v1/multi-vector request, documents of one /v1/rerank request.
    max_input_chars : characters of one text (bounds tokenization before the token count is known).
    max_tokens : tokens the model reads for one request, after truncation at query/document length.
    max_k : results of one search.
    max_query_tokens : rows of ``query_embeddings`` in one search.
    max_doc_ids : ids in one search's ``doc_ids`` filter.
    """

    max_body_bytes: int = 4 << 20
    max_inputs: int = 256
    max_input_chars: int = 50_000
    max_tokens: int = 131_072
    max_k: int = 1000
    max_query_tokens: int = 1024
    max_doc_ids: int = 100_000


# ============================================================================ the application
class _Served:
    """Everything the request handlers share: models (by name), opened indexes, limits, the thread pool."""

    def __init__(self, indexes: Mapping[str, Any], model: Any, model_name: Optional[str], limits: Limits,
                 search_threads: int, threads_per_search: int, max_batch_texts: int):
        self.limits = limits
        self.threads_per_search = threads_per_search
        self.pool = ThreadPoolExecutor(max_workers=search_threads, thread_name_prefix="plaidx-search")
        self.indexes: dict[str, Path] = {}
        self.folders = FolderCache()
        self.encoders: dict[str, Encoder] = {}  # by model name_or_path
        self.aliases: dict[str, str] = {}  # any accepted request name -> name_or_path
        self.public: dict[str, str] = {}  # name_or_path -> the name responses show (never a server path)
        try:
            for name, where in indexes.items():
                _check_index_name(name)
                if isinstance(where, IndexFolder):
                    self.indexes[name] = self.folders.put(where).path
                else:
                    self.indexes[name] = Path(where).absolute()
                    self.folders.get(where)  # opened now: a bad folder fails at start, not at the first request
            opened = [self.folders.get(p) for p in self.indexes.values()]
            if model is None or isinstance(model, (str, os.PathLike)):
                model = _load_model(model, opened)
            self.default = self._add_model(model, model_name, max_batch_texts)
            for folder in opened:  # indexes made with another model get theirs loaded
                cfg = folder.model_config
                if cfg and self._resolve(cfg.get("name_or_path")) is None:
                    from ..encoder import ColBERT

                    self._add_model(ColBERT.from_config_dict(cfg), None, max_batch_texts)
        except BaseException:
            self.close()
            raise

    def _add_model(self, model: Any, alias: Optional[str], max_batch_texts: int) -> str:
        key = str(model.name_or_path)
        self.encoders[key] = Encoder(model, max_batch_texts)
        public = alias or public_model_name(key)
        taken = set(self.public.values())
        n = 2
        while public in taken:  # two checkpoints in folders of the same name
            public, n = f"{alias or public_model_name(key)}-{n}", n + 1
        self.public[key] = public
        for name in (key, Path(key).name, getattr(model, "path", None), alias):
            if name:
                self.aliases.setdefault(str(name), key)
        self.aliases[public] = key
        return key

    def _resolve(self, name: Optional[str]) -> Optional[str]:
        if name is None:
            return None
        return self.aliases.get(str(name)) or self.aliases.get(Path(str(name)).name)

    def display_name(self, key: str) -> str:
        """The name responses show for a served model: one a client can send as ``model``."""
        return self.public.get(key) or public_model_name(key)

    def model_label(self, recorded: Optional[str]) -> Optional[str]:
        """The name shown for the model an index records (its served name, else its folder's name)."""
        if recorded is None:
            return None
        key = self._resolve(recorded)
        return self.display_name(key) if key is not None else public_model_name(recorded)

    def encoder(self, requested: Optional[str]) -> tuple[str, Encoder]:
        if requested is None:
            return self.default, self.encoders[self.default]
        key = self._resolve(requested)
        if key is None:
            served = sorted({self.display_name(k) for k in self.encoders})
            raise ApiError(404, "model_not_found", f"model {requested!r} is not served here; this server serves "
                                                   f"{served} (or omit 'model' for the default)", "model")
        return key, self.encoders[key]

    def index(self, name: Optional[str]) -> tuple[str, IndexFolder]:
        """``(name, open folder)`` of a served index, reopened when another process replaced it; no name
        picks the only served index."""
        if name is None:
            if len(self.indexes) != 1:
                raise ApiError(400, "invalid_request", f"'index' is required: this server serves "
                                                       f"{len(self.indexes)} indexes {sorted(self.indexes)}", "index")
            name = next(iter(self.indexes))
        try:
            path = self.indexes[name]
        except KeyError:
            raise ApiError(404, "index_not_found", f"no index named {name!r}; this server serves "
                                                   f"{sorted(self.indexes)} (GET /v1/indexes)", "index") from None
        return name, self.folders.get(path)

    def close(self) -> None:
        for enc in self.encoders.values():
            enc.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.folders.close()

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))


def _load_model(name: Optional[Union[str, os.PathLike]], folders: Sequence[IndexFolder]) -> Any:
    from ..encoder import ColBERT

    if name is not None:
        return ColBERT.from_pretrained(name)
    for folder in folders:
        if folder.model_config:
            return ColBERT.from_config_dict(folder.model_config)
    return ColBERT.from_pretrained(None)


def public_model_name(name_or_path: str) -> str:
    """A model's name without the server's file system: a checkpoint folder's own name, a hub name as is."""
    p = Path(name_or_path)
    if p.is_absolute() or name_or_path.startswith(".") or p.exists():
        return p.name or name_or_path
    return name_or_path


def _check_index_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 200 or any(c in name for c in "/\\\x00"):
        raise ValueError(f"index name {name!r} is not usable: give a non-empty name without slashes")


def _texts(items: Any, what: str, limits: Limits) -> list[str]:
    items = [items] if isinstance(items, (str, TextInput)) else list(items)
    if not items:
        raise ApiError(400, "invalid_request", f"'{what}' is empty: send at least one text", what)
    if len(items) > limits.max_inputs:
        raise ApiError(413, "too_many_inputs", f"'{what}' holds {len(items)} texts; this server accepts at most "
                                               f"{limits.max_inputs} per request: split the request", what)
    texts = [x.text if isinstance(x, TextInput) else x for x in items]
    for i, t in enumerate(texts):
        if not t.strip():
            raise ApiError(400, "invalid_request", f"{what}[{i}] is empty: every text needs some content",
                           f"{what}.{i}")
        if len(t) > limits.max_input_chars:
            raise ApiError(413, "input_too_long", f"{what}[{i}] has {len(t)} characters; this server accepts at "
                                                  f"most {limits.max_input_chars} per text", f"{what}.{i}")
    return texts


def _check_dimensions(dimensions: Optional[int], model: Any) -> None:
    if dimensions is not None and not 0 < dimensions <= model.dim:
        raise ApiError(400, "invalid_request", f"dimensions={dimensions} is not available: use 1 to {model.dim} "
                                               f"(dedicated heads: {getattr(model, 'head_dimensions', [model.dim])})",
                       "dimensions")


_ERRORS: dict[Union[int, str], dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "malformed JSON or an invalid value (named in detail and param)"),
        (401, "missing or wrong API key (only when the server has one)"),
        (404, "unknown index or model"),
        (413, "request body, number of inputs, text length or token count over the server's limits"),
        (422, "a field of the wrong type or a missing field"),
    )}


def create_app(indexes: Optional[Mapping[str, Union[str, os.PathLike, IndexFolder]]] = None, model: Any = None, *,
               api_key: Optional[str] = None, limits: Optional[Limits] = None, model_name: Optional[str] = None,
               search_threads: Optional[int] = None, threads_per_search: int = 1,
               max_batch_texts: int = 64) -> FastAPI:
    """Build the ASGI application.

    Parameters
    ----------
    indexes : {name: folder} of indexes to serve (RAG index folders or bare engine folders).
    model : a :class:`plaidx.ColBERT`, a checkpoint name or path, or None for the model recorded in the
        first index that records one (else the bundled default). Indexes recorded with another model
        get that model loaded too, so text search always uses the model that built the index.
    api_key : when set, every /v1 endpoint requires ``Authorization: Bearer <api_key>``.
    limits : request limits (:class:`Limits`).
    model_name : another name clients may send as ``model`` (e.g. "jina-colbert-v2").
    search_threads : searches run at once (threads; the kernels release the GIL). Default: CPU count.
    threads_per_search : OpenMP threads of one search (1: parallelism comes from concurrent requests).
    max_batch_texts : texts gathered into one model call from concurrent requests.
    """
    limits = limits or Limits()
    served = _Served(dict(indexes or {}), model, model_name, limits,
                     search_threads or max(2, os.cpu_count() or 2), threads_per_search, max_batch_texts)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            served.close()

    app = FastAPI(title="plaidx", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Late-interaction (ColBERT) embeddings, reranking and compressed-index search. "
                              "/v1/multi-vector and /v1/rerank take the request and response shapes of the Jina "
                              "API. Errors are JSON objects with 'detail', 'type' and 'param'.")
    app.state.plaidx = served
    deps = [Depends(_bearer_check(api_key))] if api_key else []
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)
    _install_error_handlers(app)
    _install_docs(app)

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """Liveness: always answers without authentication."""
        return HealthResponse(version=__version__, model=served.display_name(served.default),
                              indexes=len(served.indexes))

    @app.get("/v1/indexes", response_model=IndexList, dependencies=deps, responses=_ERRORS, tags=["search"])
    async def list_indexes() -> IndexList:
        """The served indexes and what each holds."""
        data = []
        for name in sorted(served.indexes):
            _, folder = served.index(name)
            d = await served.run(folder.describe)
            data.append(IndexDescription(name=name, kind=d["kind"], documents=d["documents"], passages=d["passages"],
                                         tokens=d["tokens"], dim=d["dim"], nbits=d["nbits"], nlist=d["nlist"],
                                         generation=d["generation"], model=served.model_label(d["model"])))
        return IndexList(data=data)

    @app.post("/v1/multi-vector", response_model=MultiVectorResponse, dependencies=deps, responses=_ERRORS,
              tags=["embeddings"])
    async def multi_vector(req: MultiVectorRequest) -> Response:
        """Per-token embeddings of texts (Jina multi-vector API). Queries always give query_length vectors."""
        texts = _texts(req.input, "input", limits)
        key, enc = served.encoder(req.model)
        _check_dimensions(req.dimensions, enc.model)
        rows, tokens = await enc.encode(texts, req.input_type, req.dimensions, limits.max_tokens)
        name = served.display_name(key)
        body = await served.run(_render_multi_vector, name, rows, tokens, req.embedding_type)
        return Response(body, media_type="application/json")

    @app.post("/v1/rerank", response_model=RerankResponse, dependencies=deps, responses=_ERRORS,
              tags=["embeddings"])
    async def rerank(req: RerankRequest) -> RerankResponse:
        """Documents ordered by MaxSim with the query (Jina rerank API)."""
        query = _texts([req.query], "query", limits)
        docs = _texts(req.documents, "documents", limits)
        if req.top_n is not None and req.top_n < 1:
            raise ApiError(400, "invalid_request", f"top_n must be a positive integer, got {req.top_n}", "top_n")
        key, enc = served.encoder(req.model)
        (q, q_tok), (d, d_tok) = await asyncio.gather(enc.encode(query, "query", None, limits.max_tokens),
                                                      enc.encode(docs, "document", None, limits.max_tokens,
                                                                 fit_length=True))
        scores = await served.run(_maxsim, q[0], d)
        order = sorted(range(len(docs)), key=lambda i: (-float(scores[i]), i))[: req.top_n or len(docs)]
        results = [{"index": i, "relevance_score": float(scores[i]),
                    "document": {"text": docs[i]} if req.return_documents else None} for i in order]
        return RerankResponse(model=served.display_name(key), results=results,
                              usage={"total_tokens": q_tok + d_tok})

    @app.post("/v1/search", response_model=SearchResponse, dependencies=deps, responses=_ERRORS, tags=["search"])
    async def search(req: SearchRequest) -> SearchResponse:
        """Search a served index by query text(s) or by query token embeddings; one result list per query."""
        given = [f for f in ("query", "queries", "query_embeddings") if getattr(req, f) is not None]
        if len(given) != 1:
            raise ApiError(400, "invalid_request", "give exactly one of 'query' (a text), 'queries' (texts) and "
                                                   f"'query_embeddings'{f' (got {given})' if given else ''}", "query")
        name, folder = served.index(req.index)
        if not 1 <= req.k <= limits.max_k:
            raise ApiError(400, "invalid_request", f"k must be between 1 and {limits.max_k}, got {req.k}", "k")
        if req.doc_ids is not None and len(req.doc_ids) > limits.max_doc_ids:
            raise ApiError(413, "too_many_doc_ids", f"doc_ids holds {len(req.doc_ids)} ids; at most "
                                                    f"{limits.max_doc_ids} per request", "doc_ids")
        tokens, model_label = 0, served.model_label(folder.model_name)
        if req.query_embeddings is None:
            key, enc = _index_encoder(served, folder, name)
            texts = _texts([req.query] if req.query is not None else req.queries, given[0], limits)
            rows, tokens = await enc.encode(texts, "query", None, limits.max_tokens)
            matrices = [np.stack(rows)]
            model_label = served.display_name(key)
        else:
            matrices = _query_matrices(req.query_embeddings, limits)
        single = req.query is not None or (req.query_embeddings is not None and _is_matrix(req.query_embeddings))
        params = SearchParams(req.nprobe, req.centroid_score_threshold, req.ndocs, req.n_exact)
        try:
            found = await served.run(_search_groups, folder, matrices, req.k, params=params, doc_ids=req.doc_ids,
                                     exact=req.exact, num_threads=served.threads_per_search)
        except KeyError as exc:
            raise ApiError(400, "unknown_doc_ids", str(exc.args[0] if exc.args else exc), "doc_ids") from None
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        data = [{"query_index": i, "results": [_hit_dict(h, r, folder, req.return_content, req.return_metadata)
                                               for r, h in enumerate(row)]} for i, row in enumerate(found)]
        return SearchResponse(index=name, model=model_label, data=data, results=data[0]["results"] if single else None,
                              usage={"total_tokens": tokens})

    return app


def _index_encoder(served: _Served, folder: IndexFolder, name: str) -> tuple[str, Encoder]:
    cfg = folder.model_config
    if cfg:
        key = served._resolve(cfg.get("name_or_path"))
        if key is not None:
            return key, served.encoders[key]
    enc = served.encoders[served.default]
    if enc.model.dim != folder.engine.dim:
        raise ApiError(400, "invalid_request", f"index {name!r} records no model and the served model's "
                                               f"{enc.model.dim}-d vectors do not match its {folder.engine.dim}-d "
                                               "embeddings; send query_embeddings instead", "query")
    return served.default, enc


def _is_matrix(value: list) -> bool:
    """Whether ``query_embeddings`` is one (q_tokens, dim) matrix (rows of numbers), not a list of them."""
    return not value or not value[0] or not isinstance(value[0][0], list)


def _query_matrices(value: list, limits: Limits) -> list[np.ndarray]:
    """``query_embeddings`` as float32 matrices: one for a (q_tokens, dim) matrix, one per matrix of a list."""
    if not value:
        raise ApiError(400, "invalid_request", "query_embeddings is empty: send a (q_tokens, dim) matrix or a "
                                               "list of them", "query_embeddings")
    if _is_matrix(value):
        return [_query_matrix(value, limits, "query_embeddings")]
    if len(value) > limits.max_inputs:
        raise ApiError(413, "too_many_inputs", f"query_embeddings holds {len(value)} queries; at most "
                                               f"{limits.max_inputs} per request: split the request",
                       "query_embeddings")
    out = [_query_matrix(m, limits, f"query_embeddings.{i}") for i, m in enumerate(value)]
    widths = {m.shape[1] for m in out}
    if len(widths) > 1:
        raise ApiError(400, "invalid_request", f"the query matrices have different widths {sorted(widths)}: every "
                                               "query's vectors must have the index's dimension", "query_embeddings")
    return out


def _query_matrix(rows: list[list[float]], limits: Limits, where: str) -> np.ndarray:
    if not rows:
        raise ApiError(400, "invalid_request", f"{where} is empty: send (q_tokens, dim) numbers", where)
    if len(rows) > limits.max_query_tokens:
        raise ApiError(413, "too_many_query_tokens", f"{where} holds {len(rows)} vectors; at most "
                                                     f"{limits.max_query_tokens}", where)
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise ApiError(400, "invalid_request", f"{where} must be a non-empty rectangular (q_tokens, dim) list: "
                                               "every row the same length", where)
    wide = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(wide).all():
        raise ApiError(400, "invalid_request", f"{where} contains NaN or infinite values: send finite numbers",
                       where)
    with np.errstate(over="ignore"):
        q = wide.astype(np.float32)
    if not np.isfinite(q).all():
        raise ApiError(400, "invalid_request", f"{where} contains values too large for float32 (above about "
                                               "3.4e38)", where)
    return q


def _search_groups(folder: IndexFolder, matrices: list[np.ndarray], k: int, **kwargs: Any) -> list[list[Any]]:
    """Hits per query of a list of (q_tokens, dim) matrices (or one (nq, q_tokens, dim) stack), in order;
    queries of the same length share one engine call."""
    if len(matrices) == 1 and matrices[0].ndim == 3:
        return folder.search(matrices[0], k, **kwargs)
    out: list[Any] = [None] * len(matrices)
    by_length: dict[int, list[int]] = {}
    for i, m in enumerate(matrices):
        by_length.setdefault(m.shape[0], []).append(i)
    for members in by_length.values():
        hits = folder.search(np.stack([matrices[i] for i in members]), k, **kwargs)
        for i, row in zip(members, hits):
            out[i] = row
    return out


def _maxsim(query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray(maxsim(query, list(docs)), dtype=np.float32)


def _hit_dict(hit: Any, rank: int, folder: IndexFolder, with_content: bool, with_metadata: bool) -> dict[str, Any]:
    """One search result as the API shows it: ``id`` is the engine's passage id."""
    rag = folder.store is not None
    return {"rank": rank + 1, "score": hit.score, "id": hit.passage_id, "document_id": hit.document_id,
            "passage_id": hit.passage_id if rag else None,
            "content": hit.content if (rag and with_content) else None,
            "document_metadata": hit.metadata if (rag and with_metadata) else None}


def _render_multi_vector(name: str, rows: list[np.ndarray], tokens: int, embedding_type: str) -> bytes:
    data = []
    for i, emb in enumerate(rows):
        if embedding_type == "base64":
            value: Any = base64.b64encode(np.ascontiguousarray(emb, dtype="<f4").tobytes()).decode("ascii")
        else:
            value = emb.tolist()
        data.append({"object": "embeddings", "index": i, "embeddings": value})
    out = {"model": name, "object": "list", "data": data, "usage": {"total_tokens": tokens}}
    return json.dumps(out, separators=(",", ":")).encode("utf-8")


# ============================================================================ HTTP plumbing
def _bearer_check(api_key: str) -> Callable[..., Any]:
    scheme = HTTPBearer(auto_error=False, description="the server's API key (plaidx serve --api-key)")
    expected = api_key.encode("utf-8")

    async def check(credentials: Optional[HTTPAuthorizationCredentials] = Depends(scheme)) -> None:
        if credentials is None:
            raise ApiError(401, "unauthorized", "this server needs an API key: send the header "
                                                "'Authorization: Bearer <key>'")
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
            raise ApiError(401, "unauthorized", "the API key is not valid for this server")

    return check


def _shown(value: Any) -> str:
    """A rejected input as a short JSON text (bytes and other non-JSON values as their repr)."""
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return repr(value)[:60]


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        for e in errors:
            if e.get("type") == "json_invalid":
                ctx = e.get("ctx") or {}
                return ApiError(400, "malformed_json", f"the request body is not valid JSON "
                                                       f"({ctx.get('error', e.get('msg'))}); send a JSON object",
                                None).response()
        parts = []
        for e in errors[:5]:
            where = _loc(e.get("loc", ()))
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {_shown(got)})"
            parts.append(f"{where}: {e.get('msg')}{shown}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        first = _loc(errors[0].get("loc", ())) if errors else None
        return ApiError(422, "invalid_request", "; ".join(parts) + more, first).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no endpoint {request.method} {request.url.path}; see /docs or /openapi.json"
        return ApiError(exc.status_code, kind, detail).response()

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return ApiError(500, "internal_error", f"internal error ({type(exc).__name__}: {exc}); the server "
                                               "is still running").response()


_JSON_TYPE = (b"content-type", b"application/json")
_RETYPED = (b"", b"application/x-www-form-urlencoded", b"text/plain")


def _as_json_body(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers where a body sent without a JSON content type (``curl -d`` sends a form type) is read as JSON:
    every POST endpoint takes JSON, so the body is parsed as such or answered 400 malformed_json."""
    kind = next((v for k, v in headers if k == b"content-type"), b"")
    if kind.split(b";")[0].strip().lower() not in _RETYPED:
        return headers
    return [(k, v) for k, v in headers if k != b"content-type"] + [_JSON_TYPE]


class _BodyLimit:
    """ASGI middleware: reject bodies over ``max_bytes`` with 413 before any handler parses them; read bodies
    sent without a content type, or as a form or plain text, as JSON."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = ApiError(413, "request_too_large", f"the request body is over this server's limit of "
                                                     f"{self.max_bytes} bytes: send fewer or shorter inputs")
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                if not v.isdigit():
                    await ApiError(400, "invalid_request", "Content-Length is not a number").response()(
                        scope, receive, send)
                    return
                if int(v) > self.max_bytes:
                    await too_big.response()(scope, receive, send)
                    return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await too_big.response()(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        data, delivered = b"".join(chunks), False
        scope = {**scope, "headers": _as_json_body(list(scope.get("headers", [])))}

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ============================================================================ /docs, offline
_DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                "favicon-32x32.png": "image/png"}

_PLAIN_DOCS = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>plaidx API</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}code,pre{background:#f4f4f4}
pre{padding:.5em;overflow:auto}</style></head>
<body><h1>plaidx API</h1>
<p>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>. (Install the <code>server</code> extra,
which brings <code>swagger-ui-bundle</code>, for the interactive page.)</p><div id="ops">loading...</div>
<script>
fetch("openapi.json").then(r => r.json()).then(spec => {
  const ops = document.getElementById("ops"); ops.textContent = "";
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const h = document.createElement("h3"); h.textContent = method.toUpperCase() + " " + path; ops.appendChild(h);
      const p = document.createElement("p"); p.textContent = op.description || op.summary || ""; ops.appendChild(p);
      const body = op.requestBody && op.requestBody.content["application/json"];
      if (body) {
        const pre = document.createElement("pre");
        const ref = body.schema.$ref ? body.schema.$ref.split("/").pop() : null;
        pre.textContent = JSON.stringify(ref ? spec.components.schemas[ref] : body.schema, null, 1);
        ops.appendChild(pre);
      }
    }
  }
});
</script></body></html>"""


def _install_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the ``swagger-ui-bundle`` package, served by this server (no CDN), or a
    plain page listing the endpoints when that package is missing. Both work offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        if swagger_ui_path is None:
            return HTMLResponse(_PLAIN_DOCS)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="plaidx API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if swagger_ui_path is None or name not in _DOCS_ASSETS:  # only these files, never a path
            raise StarletteHTTPException(404)
        return FileResponse(Path(str(swagger_ui_path)) / name, media_type=_DOCS_ASSETS[name])


# ============================================================================ running
class BackgroundServer:
    """Run an app with uvicorn on a thread, on a loopback port chosen by the OS (tests, benchmarks).

    ``with BackgroundServer(app) as url: ...`` serves until the block ends.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 60.0):
        if not is_loopback(host):
            raise ValueError(f"BackgroundServer only listens on loopback addresses, not {host!r}")
        self.app, self.host, self.port, self.startup_timeout = app, host, port, startup_timeout
        self.url = ""

    def __enter__(self) -> str:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="plaidx-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.01)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(indexes: Mapping[str, Union[str, os.PathLike]], *, host: str = "127.0.0.1", port: int = 8000,
          api_key: Optional[str] = None, log_level: str = "info", **app_options: Any) -> None:
    """Serve until interrupted (``plaidx serve``). Refuses a non-loopback host without an API key."""
    import uvicorn

    if not api_key and not is_loopback(host):
        raise PermissionError(f"refusing to listen on {host!r} without an API key: pass --api-key or set "
                              "PLAIDX_API_KEY, or listen on 127.0.0.1")
    app = create_app(indexes, api_key=api_key, **app_options)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


__all__ = ["ApiError", "BackgroundServer", "Encoder", "Limits", "create_app", "serve"]
