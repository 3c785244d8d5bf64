"""API documentation: the OpenAPI document and Swagger UI, served from the vendored swagger-ui-dist files."""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path

import orjson
from tornado import web

from handlers.base import BaseHandler, api
from handlers.openapi import app_routes, build_spec
from wallet import errors

# Put here by `make setup` (npm ci); never committed.
SWAGGER_UI = Path(__file__).resolve().parent.parent / "node_modules" / "swagger-ui-dist"
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")

# Relative URLs, so the page also works behind a path prefix; validatorUrl null keeps it from calling out.
PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Wallet API - Swagger UI</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      validatorUrl: null,
    });
  </script>
</body>
</html>
"""


@functools.cache
def _spec_json(app: web.Application) -> bytes:
    return orjson.dumps(build_spec(app_routes(app)))


@functools.cache
def _asset(name: str) -> bytes | None:
    path = SWAGGER_UI / name
    return path.read_bytes() if path.is_file() else None


class OpenApiHandler(BaseHandler):
    @api({200: {"type": "object", "description": "An OpenAPI 3.1 document."}})
    async def get(self) -> None:
        """This API's OpenAPI 3.1 document."""
        self.finish(_spec_json(self.application))


class DocsHandler(BaseHandler):
    @api({200: {"type": "string"}}, media="text/html")
    async def get(self) -> None:
        """Swagger UI for this API (served from local files; works offline)."""
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(PAGE)


class DocsAssetHandler(BaseHandler):
    @api(
        {200: {"type": "string"}}, path={"asset": {"type": "string", "enum": list(ASSETS)}}, media="*/*", errors=(503,)
    )
    async def get(self, asset: str) -> None:
        """A static file of Swagger UI."""
        content = _asset(asset)
        if content is None:
            raise errors.ServiceUnavailable("Swagger UI is not installed here; run `make setup`.")
        self.set_header("Content-Type", mimetypes.guess_type(asset)[0] or "application/octet-stream")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.finish(content)


routes = [
    (r"/openapi\.json", OpenApiHandler),
    (r"/docs", DocsHandler),
    (r"/docs/(" + "|".join(a.replace(".", r"\.") for a in ASSETS) + ")", DocsAssetHandler),
]
