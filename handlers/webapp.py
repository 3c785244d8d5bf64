"""The web wallet: the static files under web/, served at / (index.html) and /web/..., with a strict CSP."""

from __future__ import annotations

import re
from pathlib import Path

from tornado import web

from handlers.base import BesideTheApi

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# No inline script or style anywhere: an injected <script> or style attribute does not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'{socket}; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# A plain host[:port] (a name, IPv4 or [IPv6]); any other Host header names no socket origin in the policy.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# Python's mimetypes differs across versions (.js was application/javascript before 3.12); say it once here.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def csp(protocol: str, host: str) -> str:
    """The policy for a page served over `protocol` under `host`. Its live updates are a WebSocket to this same host:
    CSP 3 browsers count that as 'self', older Safari only when the ws:/wss: origin is named, so it is named: this
    host only, with the page's own scheme (wss for https; a proxy's X-Forwarded-Proto counts when it is trusted)."""
    if not _HOST.fullmatch(host):
        return CSP.format(socket="")
    return CSP.format(socket=f" {'wss' if protocol == 'https' else 'ws'}://{host}")


class WebFileHandler(BesideTheApi, web.StaticFileHandler):
    """A file of the web wallet. Not an API operation (no @api, not in the OpenAPI document).

    Cache-Control no-cache: the browser keeps the file but revalidates it with its ETag (a 304 costs no body), so a
    new release is picked up at once without versioned file names (there is no build step to make them).
    """

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", csp(self.request.protocol, self.request.host))
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")

    def get_content_type(self) -> str:
        return CONTENT_TYPES.get(Path(self.absolute_path).suffix, "application/octet-stream")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


routes = [
    (r"/()", WebFileHandler, {"path": str(WEB_DIR), "default_filename": "index.html"}),
    (r"/web/(.+)", WebFileHandler, {"path": str(WEB_DIR)}),
]
