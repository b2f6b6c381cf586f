"""HTTP plumbing of the server: bearer-key check, error answers, body size limit and JSON body reading."""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ApiError


def bearer_check(api_key: str) -> Callable[..., Any]:
    scheme = HTTPBearer(auto_error=False, description="the server's API key (plaidx serve --api-key)")
    expected = api_key.encode("utf-8")

    async def check(credentials: Optional[HTTPAuthorizationCredentials] = Depends(scheme)) -> None:
        if credentials is None:
            raise ApiError(401, "unauthorized", "this server needs an API key: send the header "
                                                "'Authorization: Bearer <key>'")
        # header values arrive decoded as latin-1: encoding back gives the bytes sent, UTF-8 from curl and browsers
        if not hmac.compare_digest(credentials.credentials.encode("latin-1", "replace"), expected):
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


def install_error_handlers(app: FastAPI) -> None:
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
        elif exc.status_code == 400 and detail == "There was an error parsing the body":  # not UTF-8, compressed
            kind = "malformed_json"
            detail = ("the request body could not be read as JSON text: send it as UTF-8, uncompressed "
                      f"(content-encoding {request.headers.get('content-encoding', 'none')!r} is not accepted)")
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


class BodyLimit:
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
