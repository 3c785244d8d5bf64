"""The web wallet: the static files under web/, with a strict CSP. The page (index.html) at /, and its service worker
at /sw.js (where it may control the whole app), both naming the app's files under /v/<version>/, which may be kept
for good; every file under /web/... too, revalidated on each use. Links to its pages with their QR codes."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import segno
from tornado import httputil, web

from handlers.base import BesideTheApi
from wallet import errors

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
    ".webmanifest": "application/manifest+json",
}
# The app's modules, styles and images where index.html and sw.js name them ('web/js/...' in quotes): they are served
# under v/<version>/ instead. The manifest stays at web/: its start_url and scope are relative to where it is.
_ASSET = re.compile(rb"""(?<=["'])web/(?=(?:js|css|img)/)""")
IMMUTABLE = "public, max-age=31536000, immutable"


def csp(protocol: str, host: str) -> str:
    """The policy for a page served over `protocol` under `host`. Its live updates are a WebSocket to this same host:
    CSP 3 browsers count that as 'self', older Safari only when the ws:/wss: origin is named, so it is named: this
    host only, with the page's own scheme (wss for https; a proxy's X-Forwarded-Proto counts when it is trusted)."""
    if not _HOST.fullmatch(host):
        return CSP.format(socket="")
    return CSP.format(socket=f" {'wss' if protocol == 'https' else 'ws'}://{host}")


def page_link(request: httputil.HTTPServerRequest, route: str) -> dict[str, str]:
    """The link to the web wallet's page `route` (`/pay/{id}`) and its QR code: an SVG `data:` URI drawn here with
    segno (no QR service sees it), dark on white with its quiet zone so that it scans on a dark page too. The wallet
    is this server's root (`/`), as the caller reached it: its scheme (a trusted proxy's X-Forwarded-Proto) and its
    Host, which must be a plain host[:port]. Only the routes the handlers name are ever encoded: this is no QR
    generator for any text."""
    if not _HOST.fullmatch(request.host):
        raise errors.ValidationError({"Host": ["Not a plain host name: no link to this server can be made."]})
    link = f"{request.protocol}://{request.host}/#{route}"
    return {"link": link, "qr_code": segno.make_qr(link, error="m").svg_data_uri(scale=5, light="#fff")}


@functools.cache
def web_version() -> str:
    """The web files' version: a hash of their names and contents, read once (Tornado keeps a file's ETag once too:
    a change under web/ is served after a restart)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in WEB_DIR.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(WEB_DIR)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def shell(name: str) -> bytes:
    """index.html or sw.js as served: naming the app's files under v/<version>/ (relative, so the app works under a
    path prefix too, and the modules' relative imports stay inside that version)."""
    return _ASSET.sub(f"v/{web_version()}/".encode(), (WEB_DIR / name).read_bytes())


class WebHeaders(BesideTheApi):
    """The web wallet's headers: its CSP, no referrer, no framing. Not an API operation (no @api, not in the OpenAPI
    document)."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", csp(self.request.protocol, self.request.host))
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")


class ShellHandler(WebHeaders):
    """The page or its service worker. Cache-Control no-cache: the browser keeps it but revalidates it with its ETag
    (Tornado's, of the body: a 304 costs no body), so a new release, which names a new version, is picked up at once."""

    def initialize(self, name: str) -> None:
        self.name = name

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPES[Path(self.name).suffix])
        self.set_header("Cache-Control", "no-cache")
        self.write(shell(self.name))

    head = get  # Tornado sends the headers (Content-Length, ETag) and drops the body, as for a static file


class WebFileHandler(WebHeaders, web.StaticFileHandler):
    """A file of the web wallet under /web/, revalidated on each use (no-cache, with its ETag): the manifest, and any
    file asked for by its plain name (a page or worker of an earlier release)."""

    def get_content_type(self) -> str:
        return CONTENT_TYPES.get(Path(self.absolute_path).suffix, "application/octet-stream")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


class VersionedFileHandler(WebFileHandler):
    """A file of the web wallet under /v/<version>/: of this version, it never changes under that name, so the
    browser keeps it for a year without asking again (immutable). Another version (a page of the release before, or
    of another server in a rolling upgrade) gets today's file, revalidated on each use: never kept as that version."""

    current = False

    async def get(self, version: str, path: str, include_body: bool = True) -> None:
        self.current = version == web_version()
        await super().get(path, include_body)

    async def head(self, version: str, path: str) -> None:
        await self.get(version, path, include_body=False)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", IMMUTABLE if self.current else "no-cache")


routes = [
    (r"/", ShellHandler, {"name": "index.html"}),
    (r"/sw\.js", ShellHandler, {"name": "sw.js"}),
    (r"/web/(.+)", WebFileHandler, {"path": str(WEB_DIR)}),
    (r"/v/([^/]+)/(.+)", VersionedFileHandler, {"path": str(WEB_DIR)}),
]
