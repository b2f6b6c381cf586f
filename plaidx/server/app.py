"""The HTTP server: Jina-shaped multi-vector embeddings and rerank, and search of opened indexes (FastAPI)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.responses import Response

from .. import __version__
from ..engine import SearchParams, maxsim
from ..rag import FolderCache, IndexFolder
from .docs import install_docs
from .encoding import Encoder
from .errors import ApiError
from .http import BodyLimit, bearer_check, install_error_handlers
from .inputs import Limits, check_dimensions, is_matrix, query_matrices, request_texts
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
)
from .net import check_index_name, is_loopback


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
                check_index_name(name)
                if isinstance(where, IndexFolder):
                    self.indexes[name] = self.folders.put(where).path
                else:
                    self.indexes[name] = Path(where).absolute()
                    self.folders.get(where)  # opened now: a bad folder fails at start, not at the first request
            opened = [self.folders.get(p) for p in self.indexes.values()]
            for folder in opened:  # derive now what each index's first search would, not in the first request
                folder.engine.warm()
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
    deps = [Depends(bearer_check(api_key))] if api_key else []
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    install_error_handlers(app)
    install_docs(app)

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
                                         generation=d["generation"], model=served.model_label(d["model"]),
                                         metadata_indexes=d["metadata_indexes"]))
        return IndexList(data=data)

    @app.post("/v1/multi-vector", response_model=MultiVectorResponse, dependencies=deps, responses=_ERRORS,
              tags=["embeddings"])
    async def multi_vector(req: MultiVectorRequest) -> Response:
        """Per-token embeddings of texts (Jina multi-vector API). Queries always give query_length vectors."""
        texts = request_texts(req.input, "input", limits)
        key, enc = served.encoder(req.model)
        check_dimensions(req.dimensions, enc.model)
        rows, tokens = await enc.encode(texts, req.input_type, req.dimensions, limits.max_tokens)
        name = served.display_name(key)
        body = await served.run(_render_multi_vector, name, rows, tokens, req.embedding_type)
        return Response(body, media_type="application/json")

    @app.post("/v1/rerank", response_model=RerankResponse, dependencies=deps, responses=_ERRORS,
              tags=["embeddings"])
    async def rerank(req: RerankRequest) -> RerankResponse:
        """Documents ordered by MaxSim with the query (Jina rerank API)."""
        query = request_texts([req.query], "query", limits)
        docs = request_texts(req.documents, "documents", limits)
        if req.top_n is not None and req.top_n < 1:
            raise ApiError(400, "invalid_request", f"top_n must be a positive integer, got {req.top_n}", "top_n")
        key, enc = served.encoder(req.model)
        (q, q_tok), (d, d_tok) = await asyncio.gather(enc.encode(query, "query", None, limits.max_tokens,
                                                                 fit_length=True, param="query"),  # read whole
                                                      enc.encode(docs, "document", None, limits.max_tokens,
                                                                 fit_length=True, param="documents"))
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
        n_ids = 0 if req.doc_ids is None else sum(len(x) if isinstance(x, list) else 1 for x in req.doc_ids)
        if n_ids > limits.max_doc_ids:
            raise ApiError(413, "too_many_doc_ids", f"doc_ids holds {n_ids} ids; at most "
                                                    f"{limits.max_doc_ids} per request", "doc_ids")
        tokens, model_label = 0, served.model_label(folder.model_name)
        if req.query_embeddings is None:
            key, enc = _index_encoder(served, folder, name)
            texts = request_texts([req.query] if req.query is not None else req.queries, given[0], limits)
            # each query read at its own length, long ones whole (plaidx.rag.queries), as the RAG API reads them
            done = await asyncio.gather(*[enc.encode([t], "query", None, limits.max_tokens, fit_length=True,
                                                     param=given[0]) for t in texts])
            matrices, tokens = [r[0][0] for r in done], sum(r[1] for r in done)
            if tokens > limits.max_tokens:
                raise ApiError(413, "too_many_tokens", f"the queries hold {tokens} tokens; this server accepts at "
                                                       f"most {limits.max_tokens} per request: send fewer or shorter "
                                                       "queries", "query")
            model_label = served.display_name(key)
        else:
            matrices = query_matrices(req.query_embeddings, limits)
        single = req.query is not None or (req.query_embeddings is not None and is_matrix(req.query_embeddings))
        params = SearchParams(req.nprobe, req.centroid_score_threshold, req.ndocs, req.n_exact, req.rerank)
        try:
            found = await served.run(served.folders.read, served.indexes[name], lambda f: f.search(
                matrices, req.k, params=params, doc_ids=req.doc_ids, where=req.where, exact=req.exact,
                num_threads=served.threads_per_search))
        except KeyError as exc:
            raise ApiError(400, "unknown_doc_ids", str(exc.args[0] if exc.args else exc), "doc_ids") from None
        except (ValueError, TypeError) as exc:
            msg = str(exc)  # the engine's messages begin with the knob or argument they name
            raise ApiError(400, "invalid_request", msg, next((field for prefix, field in _SEARCH_FIELDS.items()
                                                               if msg.startswith(prefix)), None)) from None
        data = [{"query_index": i, "results": [_hit_dict(h, r, folder, req.return_content, req.return_metadata)
                                               for r, h in enumerate(row)]} for i, row in enumerate(found)]
        return SearchResponse(index=name, model=model_label, data=data, results=data[0]["results"] if single else None,
                              usage={"total_tokens": tokens})

    return app


# the start of a search error's message -> the request field it is about
_SEARCH_FIELDS = {**{f: f for f in ("nprobe", "ndocs", "n_exact", "rerank", "centroid_score_threshold", "doc_ids",
                                    "where", "exact")},
                  "document_ids": "doc_ids", "queries": "query_embeddings"}


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
