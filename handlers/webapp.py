"""The web wallet: the static files under web/, served at / (index.html) and /web/..., with a strict CSP."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from tornado import web

from handlers.base import HTTP_CODES

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# No inline script or style anywhere: an injected <script> or style attribute does not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Python's mimetypes differs across versions (.js was application/javascript before 3.12); say it once here.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class WebFileHandler(web.StaticFileHandler):
    """A file of the web wallet. Not an API operation (no @api, not in the OpenAPI document).

    Cache-Control no-cache: the browser keeps the file but revalidates it with its ETag (a 304 costs no body), so a
    new release is picked up at once without versioned file names (there is no build step to make them).
    """

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")

    def get_content_type(self) -> str:
        return CONTENT_TYPES.get(Path(self.absolute_path).suffix, "application/octet-stream")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The API's error shape, also for a missing file."""
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        code = {403: "FORBIDDEN", **HTTP_CODES}.get(status_code, "INTERNAL_ERROR")  # 403: a path outside web/
        self.finish(orjson.dumps({"error": HTTPStatus(status_code).phrase, "code": code}) + b"\n")


routes = [
    (r"/()", WebFileHandler, {"path": str(WEB_DIR), "default_filename": "index.html"}),
    (r"/web/(.+)", WebFileHandler, {"path": str(WEB_DIR)}),
]
