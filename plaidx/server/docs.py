"""The /docs page, offline: Swagger UI from the swagger-ui-bundle package served here, or a plain page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def install_docs(app: FastAPI) -> None:
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
