"""BaseHandler: JSON bodies, schema validation, Bearer authentication, one error table, request ids and logs."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import marshmallow
import orjson
from tornado import httputil, web

from settings import Network
from wallet import errors
from wallet.identity import keys
from wallet.identity.auth import Device, authenticate
from wallet.platform import metrics
from wallet.platform.logs import request_id_var
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

log = logging.getLogger("wallet.http")

# The HTTP status of every domain error, by class (the most specific class listed wins).
STATUS: dict[type[errors.WalletError], int] = {
    errors.InvalidRequest: 400,
    errors.AuthError: 401,
    errors.InvalidSignature: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.LimitReached: 409,
    errors.HoldNotActive: 409,
    errors.RequestNotOpen: 409,
    errors.NotReversible: 409,
    errors.ScheduleNotActive: 409,
    errors.ApiKeyRevoked: 409,
    errors.IdempotencyInProgress: 409,
    errors.Interrupted: 409,
    errors.IdempotencyMismatch: 422,
    errors.RateLimited: 429,
    errors.ProviderError: 502,
    errors.ServiceUnavailable: 503,
}

# Codes for errors Tornado itself raises before or around our handlers.
HTTP_CODES = {400: "VALIDATION_ERROR", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}

# Requests being served by this process, so a graceful shutdown can wait for them.
_inflight = 0

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")

# What a browser on an allowed origin may send and read (CORS_ORIGINS).
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-API-Key, X-Request-ID"
CORS_EXPOSE_HEADERS = "X-Request-ID, Idempotent-Replayed, Retry-After, ETag"
CORS_MAX_AGE = "600"

Verb = Callable[..., Awaitable[None]]
VERBS = ("get", "post", "put", "patch", "delete")


def implemented_verbs(handler: type[web.RequestHandler]) -> dict[str, Verb]:
    """The verbs a handler class implements (Tornado's own answer 405)."""
    return {v: getattr(handler, v) for v in VERBS if getattr(handler, v) is not getattr(web.RequestHandler, v)}


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer unless it is a trusted proxy; then, walking X-Forwarded-For from the right,
    the first address that is not a trusted proxy (a client can prepend anything, but not forge what our proxies
    appended). A malformed entry ends the walk at the last trusted hop."""
    address = peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    while hops and _is_trusted(address, trusted):
        hop = hops.pop()
        if _ip(hop) is None:
            break
        address = hop
    return address


class SecurityHeaders(web.OutputTransform):
    """On every answer, whichever handler wrote it (static files, redirects and Tornado's own errors too): no
    `Server` header naming Tornado's version (no help to clients, some to attackers), and `nosniff`."""

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        headers.pop("Server", None)
        headers["X-Content-Type-Options"] = "nosniff"
        return status_code, headers, chunk


class Compress(web.GZipContentEncoding):
    """gzip for an answer worth it, when the client accepts it: a static file (the web wallet's, Swagger UI's) or a
    JSON answer of MIN_LENGTH bytes or more (a page of history); every answer of a compressible type says `Vary:
    Accept-Encoding`. A smaller answer (the money paths' JSON: a transfer, a deposit, a balance) goes as it is and
    pays no compressor: under a few packets gzip saves no round trip. Tornado's own (compress_response) compresses
    anything written in parts whatever its size (a static file is: a few hundred bytes of icon too) and a 206 range
    as if it were the whole file: this one goes by the Content-Length where there is one, and compresses only 200s.
    The ETag stays the one of the content (the same after decoding), so a 304 works for either coding."""

    MIN_LENGTH = 1024

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        if not self._compressible_type(headers.get("Content-Type", "").split(";")[0]):
            self._gzipping = False
            return status_code, headers, chunk
        # The whole answer's size: a file says it; an answer sent in parts without one (a statement) is large.
        size = int(headers.get("Content-Length", len(chunk) if finishing else self.MIN_LENGTH))
        self._gzipping = self._gzipping and status_code == 200 and size >= self.MIN_LENGTH
        return super().transform_first_chunk(status_code, headers, chunk, finishing)


class CloseWhileDraining(web.OutputTransform):
    """While the server drains, every answer says `Connection: close`: a keep-alive client (or proxy) sends its next
    request on a new connection, to another server or to this one's listener while it is still open."""

    def __init__(self, application: Application, request: httputil.HTTPServerRequest) -> None:
        super().__init__(request)
        self.application = application

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        if self.application.draining and status_code != 101:
            headers["Connection"] = "close"
        return status_code, headers, chunk


class Application(web.Application):
    """Believes X-Forwarded-For / X-Forwarded-Proto only from a peer in TRUSTED_PROXIES (Tornado's xheaders trusts
    anyone), before any handler or the request log sees the request; gzips what is worth it (Compress), adds
    SecurityHeaders to every answer, and CloseWhileDraining once `draining` is set (a SIGTERM: /ready answers 503 and
    no new event stream opens)."""

    draining = False

    def __init__(self, *args: Any, **settings: Any) -> None:
        transforms = [Compress, SecurityHeaders, functools.partial(CloseWhileDraining, self)]
        super().__init__(*args, transforms=transforms, **settings)

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        trusted = self.settings["runtime"].settings.trusted_proxies
        if trusted and _is_trusted(request.remote_ip, trusted):
            request.remote_ip = client_address(request.remote_ip, request.headers.get("X-Forwarded-For", ""), trusted)
            proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
            if proto in ("http", "https"):
                request.protocol = proto
        return super().find_handler(request, **kwargs)


@dataclasses.dataclass(frozen=True)
class Api:
    """What one verb accepts and answers: the handler loads and renders with it, the OpenAPI spec documents it."""

    operation_id: str
    responses: dict[int, marshmallow.Schema | dict[str, Any] | None]
    body: marshmallow.Schema | None = None
    query: marshmallow.Schema | None = None
    errors: tuple[int, ...] = ()
    idempotent: bool = False
    path: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    media: str = "application/json"
    alternatives: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def api(
    operation_id: str,
    responses: dict[int, type[marshmallow.Schema] | dict[str, Any] | None],
    *,
    body: type[marshmallow.Schema] | None = None,
    query: type[marshmallow.Schema] | None = None,
    errors: tuple[int, ...] = (),
    idempotent: bool = False,
    path: dict[str, dict[str, Any]] | None = None,
    media: str = "application/json",
    alternatives: dict[str, dict[str, Any]] | None = None,
) -> Callable[[Verb], Verb]:
    """Declare a verb: its operationId (camelCase, unique in the API: what generated clients name its function),
    success responses (schema class, or a JSON Schema for what no schema renders) by status, body, query, extra
    error statuses, Idempotency-Key, path parameters that are not UUIDs, response media type, and other media types
    the success response may come in (each with its JSON Schema).

    Error statuses that follow from the declaration (400 for input, 401/403 for access, 404 for a path id,
    409/422 for idempotency, 413 for a body) are documented without being listed in `errors`.
    """

    def declare(method: Verb) -> Verb:
        method.api = Api(  # type: ignore[attr-defined]
            operation_id,
            {status: schema() if isinstance(schema, type) else schema for status, schema in responses.items()},
            body() if body else None,
            query() if query else None,
            errors,
            idempotent,
            path or {},
            media,
            alternatives or {},
        )
        return method

    return declare


def assign_request_id(handler: web.RequestHandler) -> str:
    """The request's id (the client's X-Request-ID when it is sane), echoed and put on every log line."""
    sent = handler.request.headers.get("X-Request-ID", "")
    request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
    request_id_var.set(request_id)
    handler.set_header("X-Request-ID", request_id)
    return request_id


def _validate(schema: marshmallow.Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except marshmallow.ValidationError as error:
        raise errors.ValidationError(error.normalized_messages()) from None


def status_of(error: errors.WalletError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def render_error(handler: web.RequestHandler, error: errors.WalletError) -> tuple[int, dict[str, Any]]:
    """The status and body of a domain error in the contract's shape; sets the headers that go with it."""
    body: dict[str, Any] = {"error": error.message, "code": error.code}
    if error.details:
        body["details"] = error.details
    if error.transaction_id:
        body["transaction_id"] = error.transaction_id
    if isinstance(error, errors.MfaRequired):
        body["mfa_token"] = error.mfa_token
    if isinstance(error, errors.AuthError):
        handler.set_header("WWW-Authenticate", f'Bearer error="{error.code.lower()}"')
    if error.retry_after is not None:
        handler.set_header("Retry-After", str(error.retry_after))
    return status_of(error), body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _guard(access: str, scopes: tuple[str, ...] = (), recent: bool = False) -> Callable[[Verb], Verb]:
    """Who may call a verb: `user` and `admin` need a login session; `key` also takes an API key with one of
    `scopes` (a session has them all). `recent`: the login must have authenticated within STEP_UP_WINDOW (an API key
    never has). With ADMIN_REQUIRE_2FA an admin's login must have used a second factor. The OpenAPI spec documents
    `access`, `scopes` and `recent`."""

    def decorate(method: Verb) -> Verb:
        @functools.wraps(method)
        async def wrapper(self: BaseHandler, *args: Any, **kwargs: Any) -> None:
            principal = self.require_principal()
            if principal.api_key_id is not None and not set(scopes) & principal.scopes:
                raise errors.Forbidden(
                    f"This API key may not call this route (it needs one of: {', '.join(scopes)})."
                    if scopes
                    else "API keys cannot be used here; use a Bearer token."
                )
            if access == "admin":
                if not principal.is_admin:
                    raise errors.Forbidden("Admins only.")
                if self.rt.settings.admin_require_2fa and "mfa" not in principal.amr:
                    raise errors.TwoFactorRequired()
            if recent:
                principal.require_recent_authentication(self.rt.settings.step_up_window)
            await method(self, *args, **kwargs)

        wrapper.access = access  # type: ignore[attr-defined]
        wrapper.scopes = scopes  # type: ignore[attr-defined]
        wrapper.recent = recent  # type: ignore[attr-defined]
        return wrapper

    return decorate


authenticated = _guard("user")  # a login session (Bearer token); API keys are refused with 403
recently_authenticated = _guard("user", recent=True)  # a login session that authenticated within STEP_UP_WINDOW
admin_only = _guard("admin")  # an admin's login session


def requires(*scopes: str) -> Callable[[Verb], Verb]:
    """A login session, or an API key with one of these scopes."""
    return _guard("user", scopes)


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    content_security_policy = "default-src 'none'; frame-ancestors 'none'"
    principal: Principal | None = None
    _auth_error: Exception | None = None

    @property
    def rt(self) -> Runtime:
        return self.application.settings["runtime"]

    def initialize(self) -> None:
        global _inflight
        _inflight += 1
        self._counted = True
        self._chunks: list[bytes] = []
        self._body_size = 0
        self.request_id = ""

    # Reads that carry an ETag and answer 304 to a matching If-None-Match. The ETag is Tornado's hash of the body
    # about to be sent, so it changes with anything the answer shows and can never vouch for a stale one.
    cacheable = False

    def compute_etag(self) -> str | None:
        return super().compute_etag() if self.cacheable else None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        # no-cache: a client may keep the answer but must revalidate it (If-None-Match) before using it again.
        self.set_header("Cache-Control", "private, no-cache" if self.cacheable else "no-store")
        # A JSON answer is never a page: browsers must not load anything for it or frame it.
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", self.content_security_policy)
        origins = self.rt.settings.cors_origins
        if origins:
            self.set_header("Vary", "Origin")  # caches must not hand one origin's answer to another
            origin = self.request.headers.get("Origin")
            if origin in origins:  # echoed, never "*"; tokens travel in headers, so no credentials mode is needed
                self.set_header("Access-Control-Allow-Origin", origin)
                self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)

    async def options(self, *args: str) -> None:
        """A CORS preflight (or a plain OPTIONS): the methods this path serves and, to an allowed origin, what a
        browser may send. Not an API operation, so it has no @api declaration and is not in the OpenAPI spec."""
        allowed = ", ".join([*(verb.upper() for verb in implemented_verbs(type(self))), "OPTIONS"])
        self.set_header("Allow", allowed)
        if self._headers.get("Access-Control-Allow-Origin") and "Access-Control-Request-Method" in self.request.headers:
            self.set_header("Access-Control-Allow-Methods", allowed)
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.set_header("Access-Control-Max-Age", CORS_MAX_AGE)
        self.set_status(204)
        self.finish()

    async def prepare(self) -> None:
        self.request_id = assign_request_id(self)

        limit = self.body_limit()
        declared = self.request.headers.get("Content-Length", "0")
        if not declared.isdigit() or int(declared) > limit:
            if declared.isdigit():
                raise web.HTTPError(413, f"The request body must not exceed {limit} bytes.")
            raise web.HTTPError(400, "Invalid Content-Length.")
        # data_received enforces the limit with a 413; Tornado's own check drops a chunked body without an answer.
        self.request.connection.set_max_body_size(sys.maxsize)

        header = self.request.headers.get("Authorization")
        key = self.request.headers.get("X-API-Key")
        try:
            if header is not None and key is not None:
                raise errors.InvalidRequest("Send either 'Authorization' or 'X-API-Key', not both.")
            if header is not None:
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise errors.InvalidToken("Use 'Authorization: Bearer <access token>'.")
                self.principal = await authenticate(self.rt, token.strip())
            elif key is not None:
                self.principal = await keys.authenticate(self.rt, key)
        except Exception as error:  # raised by a verb that needs it, once the body is in (e.g. Redis is down)
            self._auth_error = error

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        limit = self.body_limit()
        if self._body_size <= limit:
            self._chunks.append(chunk)
        elif not self._finished:
            # Answer now; Tornado then reads no further, closes the connection and never runs the verb.
            too_large = web.HTTPError(413, f"The request body must not exceed {limit} bytes.")
            self.send_error(413, exc_info=(web.HTTPError, too_large, None))

    def body_limit(self) -> int:
        """The largest body this route takes (MAX_BODY_SIZE; a route that needs more says so)."""
        return self.rt.settings.max_body_size

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise self._auth_error or errors.AuthError()
        return self.principal

    def device(self) -> Device:
        """Where this request comes from, as a sign-in records it."""
        return Device(self.request.remote_ip or "", self.request.headers.get("User-Agent", ""))

    def step_up_above(self, amount: Decimal) -> None:
        """Moving more than STEP_UP_AMOUNT needs a recent authentication: decided from the amount asked and the
        token's claims, with no query (an API key never passes)."""
        s = self.rt.settings
        self.require_principal().require_recent_authentication_above(amount, s.step_up_amount, s.step_up_window)

    def raw_body(self) -> bytes:
        """The body exactly as received (what a webhook signature covers)."""
        if self._body_size > self.body_limit():
            raise web.HTTPError(413, "The request body is too large.")
        return b"".join(self._chunks)

    def json_body(self) -> dict[str, Any]:
        raw = self.raw_body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
            if b"\\u" in raw:  # an escaped lone surrogate parses, but can be neither stored nor echoed as UTF-8
                json.dumps(data, ensure_ascii=False, default=str).encode()
        except (ValueError, ArithmeticError, RecursionError):  # decimal.InvalidOperation is an ArithmeticError
            raise errors.InvalidJson() from None
        if not isinstance(data, dict):
            raise errors.InvalidJson("The request body must be a JSON object.")
        return data

    @property
    def declared(self) -> Api:
        """The Api declared by @api on the verb being served."""
        return getattr(self, self.request.method.lower()).api

    def load(self) -> dict[str, Any]:
        """The JSON body, validated with the declared body schema (unknown fields are refused)."""
        return _validate(self.declared.body, self.json_body())

    def query(self) -> dict[str, Any]:
        """The query string, validated with the declared query schema (unknown parameters are refused)."""
        # As sent (the last of repeats): get_query_argument would quietly turn control characters into spaces.
        args = {k: self.decode_argument(v[-1], name=k) for k, v in self.request.query_arguments.items()}
        return _validate(self.declared.query, args)

    def idempotency_key(self) -> str | None:
        key = self.request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise errors.ValidationError({"Idempotency-Key": ["Must be 1 to 255 printable ASCII characters."]})
        return key

    def respond(self, body: Any, status: int = 200) -> None:
        """Answer with a status, rendering the body with the schema declared for that status."""
        schema = self.declared.responses[status]
        self.set_status(status)
        if schema is None:
            self.finish()
            return
        self.finish(schema.render(body) + b"\n")  # a newline, so curl's output ends its line

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, errors.WalletError):
            status_code, body = render_error(self, error)
        elif isinstance(error, web.HTTPError) and status_code in HTTP_CODES:
            if status_code == 405:  # RFC 9110: say which methods would work
                self.set_header("Allow", ", ".join(v.upper() for v in implemented_verbs(type(self))))
            body = {"error": error.log_message or HTTPStatus(status_code).phrase, "code": HTTP_CODES[status_code]}
        elif status_code in HTTP_CODES:
            body = {"error": HTTPStatus(status_code).phrase, "code": HTTP_CODES[status_code]}
        else:
            status_code = 503 if status_code == 503 else 500
            code = "SERVICE_UNAVAILABLE" if status_code == 503 else "INTERNAL_ERROR"
            body = {
                "error": "An unexpected error occurred." if status_code == 500 else "Service unavailable.",
                "code": code,
            }
        self.clear_header("Content-Type")
        self.set_default_headers()
        self.set_header("X-Request-ID", self.request_id or uuid.uuid4().hex)
        if not self.request._body_future.done():
            # Answered before the body was read: Tornado closes the connection, so keep clients from reusing it.
            self.set_header("Connection", "close")
        self.set_status(status_code)
        # Non-string keys: marshmallow names a list item's errors by its index.
        self.finish(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) + b"\n")

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, (errors.WalletError, web.HTTPError)):
            return  # an answer, not a fault; the request line says what happened
        log.error("unhandled error", exc_info=(typ, value, tb))

    def on_finish(self) -> None:
        self._leave()

    def on_connection_close(self) -> None:
        if not self.request._body_future.done():
            self._leave()  # the client left before its body was read: neither the verb nor on_finish will run
        super().on_connection_close()

    def _leave(self) -> None:
        global _inflight
        if self._counted:
            self._counted = False
            _inflight -= 1


class BesideTheApi(web.RequestHandler):
    """A mixin for Tornado's own handlers the server runs beside the API (static files, a redirect): not operations
    (not BaseHandlers, so not in the OpenAPI document), but with a request id, and errors in the API's JSON shape
    (a 405 naming the methods that work), never an HTML page."""

    request_id = ""

    def prepare(self) -> None:
        self.request_id = assign_request_id(self)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Request-ID", self.request_id or assign_request_id(self))
        if status_code == 405:
            self.set_header("Allow", ", ".join(v.upper() for v in implemented_verbs(type(self))))
        code = {403: "FORBIDDEN", **HTTP_CODES}.get(status_code, "INTERNAL_ERROR")  # 403: a path outside the folder
        self.finish(orjson.dumps({"error": HTTPStatus(status_code).phrase, "code": code}) + b"\n")


class NotFoundHandler(BaseHandler):
    """Every path no route matches."""

    async def prepare(self) -> None:
        await super().prepare()
        raise errors.NotFound("No such endpoint.")


def log_request(handler: web.RequestHandler) -> None:
    """One structured line per request, and its count and latency by route template (a raw path would make a new
    series for every wallet id)."""
    request = handler.request
    principal = getattr(handler, "principal", None)
    seconds = request.request_time()
    log.info(
        "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": handler.get_status(),
            "ms": round(1000.0 * seconds, 2),
            "request_id": getattr(handler, "request_id", None),
            "user_id": str(principal.user_id) if principal else None,
            "remote_ip": request.remote_ip,
            "scheme": request.protocol,  # as the client used it: https behind a TLS proxy in TRUSTED_PROXIES
        },
    )
    route = handler.application.settings["route_templates"].get(type(handler), "unmatched")
    metrics.request(route, request.method, handler.get_status(), seconds)


def inflight() -> int:
    """Requests this process is serving: a stop waits for them, even for one whose client has gone."""
    return _inflight


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.ValidationError({field: ["Not a valid UUID."]}) from None
