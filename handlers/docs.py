"""API documentation: the OpenAPI document and Swagger UI, whose files come from the swagger-ui-bundle-v2 wheel."""

from __future__ import annotations

import base64
import functools
import hashlib

import orjson
from swagger_ui_bundle import swagger_ui_path
from tornado import web

from handlers.base import BaseHandler, BesideTheApi, api
from handlers.openapi import app_routes, build_spec

TAG = "Service"  # the OpenAPI tag of this module's operations

# The only files of the bundle the page uses; any other path under /docs/ is a JSON 404 like every unknown path.
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")

# The page's one inline script; the Content-Security-Policy allows exactly it, by its hash.
SCRIPT = """
    window.ui = SwaggerUIBundle({
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      validatorUrl: null,
    });
  """

# Relative URLs, so the page also works behind a path prefix; validatorUrl null keeps it from calling out.
PAGE = f"""<!doctype html>
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
  <script>{SCRIPT}</script>
</body>
</html>
""".encode()

# Everything from this server only: scripts by file or by hash, and the data: URIs Swagger UI draws icons from.
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
DOCS_POLICY = (
    f"default-src 'none'; script-src 'self' 'sha256-{_SCRIPT_HASH}'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _spec_json(app: web.Application) -> bytes:
    return orjson.dumps(build_spec(app_routes(app))) + b"\n"


class OpenApiHandler(BaseHandler):
    @api("getOpenApiDocument", {200: {"type": "object", "description": "An OpenAPI 3.1 document."}})
    async def get(self) -> None:
        """This API's OpenAPI 3.1 document."""
        self.finish(_spec_json(self.application))


class DocsHandler(BaseHandler):
    content_security_policy = DOCS_POLICY

    @api("getApiDocs", {200: {"type": "string"}}, media="text/html")
    async def get(self) -> None:
        """Swagger UI for this API (served from local files; works offline)."""
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(PAGE)


class DocsAssetHandler(BesideTheApi, web.StaticFileHandler):
    """Swagger UI's static files (with ETag and Last-Modified); not an API operation, so not in the OpenAPI spec."""

    CACHE_MAX_AGE = 86400

    def get_cache_time(self, path: str, modified: object, mime_type: str) -> int:
        return self.CACHE_MAX_AGE


class DocsSlashHandler(BesideTheApi, web.RedirectHandler):
    """/docs/ leads to /docs."""


routes = [
    (r"/openapi\.json", OpenApiHandler),
    (r"/docs", DocsHandler),
    (r"/docs/", DocsSlashHandler, {"url": "../docs"}),
    (
        r"/docs/(" + "|".join(a.replace(".", r"\.") for a in ASSETS) + ")",
        DocsAssetHandler,
        {"path": str(swagger_ui_path)},
    ),
]
