"""The OpenAPI 3.1 document, built from the routes the application serves and the schemas their verbs declare."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from apispec.ext.marshmallow.common import resolve_schema_instance
from tornado import web

from handlers.base import IDEMPOTENCY_KEY, Api, BaseHandler, implemented_verbs
from handlers.schemas import ErrorSchema, Output

DESCRIPTION = """\
A multi-currency wallet: register, log in with JWTs, open wallets, deposit, withdraw, transfer, read history.

Amounts are decimal strings with exactly the currency's minor digits (`"10.50"` USD); requests also accept a
JSON number. Every error has the shape `{"error", "code", "details"?, "transaction_id"?}`. Money-moving POSTs
accept an `Idempotency-Key`: a repeat with the same key and parameters returns the first answer with
`Idempotent-Replayed: true`. Use "Authorize" with the `access_token` from `POST /api/v1/auth/login`, or with
an API key (`X-API-Key`) on the operations that list it.

An account with two-factor sign-in answers the login with 401 `MFA_REQUIRED` and an `mfa_token`, which
`POST /api/v1/auth/login/mfa` exchanges with a code for the tokens. Operations marked `x-step-up: true` (and money
movements above the server's STEP_UP_AMOUNT) need a login that authenticated within STEP_UP_WINDOW seconds; otherwise
they answer 403 `STEP_UP_REQUIRED`, and `POST /api/v1/auth/step-up` gives a fresh access token.
"""

# The tags in the order a reader meets them (Swagger UI's sections, a generated client's api/<tag>/ packages). An
# operation's tag is its handler module's TAG, or Admin for an operation only an admin may call.
TAGS = {
    "Auth": "Register, log in, refresh a token pair, log out.",
    "Google": "Sign in with Google, and link Google to an account.",
    "Users": "The caller's own account.",
    "Wallets": "The caller's wallets: open, list, read one, its balance and its history.",
    "Transactions": "Move money (deposit, withdraw, transfer) and read the caller's transactions.",
    "Statements": "A wallet's statement over a period, as JSON, CSV or PDF.",
    "Holds": "Reserve an amount for a payee, then capture or void it.",
    "Payment requests": "Ask someone for money; the payer pays (a transfer) or declines, the payee may cancel.",
    "Schedules": "Transfers made once at a set time, or every day, week or month.",
    "FX": "Exchange rates, and quotes for transfers between currencies.",
    "Paystack": "Deposits paid through Paystack, and Paystack's webhook.",
    "Payouts": "Bank accounts to pay out to, and the banks Paystack pays out to.",
    "Keys": "API keys: programs that act for the caller within scopes.",
    "Events": "The caller's events in commit order, page by page.",
    "Webhooks": "URLs the caller's events are sent to, and their deliveries.",
    "Admin": "What only an admin may do: users, credits, reversals, exchange rates, the audit, the action log.",
    "Service": "Liveness, readiness, metrics, this document and its Swagger UI.",
}
# camelCase, a verb first: what a generated client turns into its function names (list_wallets, create_hold).
OPERATION_ID = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")

_GROUP = re.compile(r"\((?:[^()\\]|\\.)*\)")
_HEADERS = {
    "X-Request-ID": {
        "description": "The request's id (echoed when the client sent a valid one).",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "WWW-Authenticate": {"description": "The Bearer challenge.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
    "Location": {"description": "Where the redirect leads.", "schema": {"type": "string", "format": "uri"}},
}


class _Converter(OpenAPIConverter):
    """Marks every field of an Output required, and merges a schema's `json_schema` (rules across fields)."""

    def schema2jsonschema(self, schema: Any) -> dict[str, Any]:
        jsonschema = super().schema2jsonschema(schema)
        instance = resolve_schema_instance(schema)
        if isinstance(instance, Output):
            jsonschema["required"] = list(jsonschema["properties"])
        return {**jsonschema, **getattr(instance, "json_schema", {})}


def _field_json_schema(self: Any, field: Any, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A custom field class's `json_schema` (what its _deserialize accepts), with null when the field allows None."""
    extra = dict(getattr(field, "json_schema", {}))
    if "pattern" in ret:  # the field's own Regexp validator is the stricter rule (Text's no-NUL holds within it)
        extra.pop("pattern", None)
    if "type" in extra and field.allow_none:
        extra["type"] = [*(extra["type"] if isinstance(extra["type"], list) else [extra["type"]]), "null"]
    return extra


def _ecma_pattern(self: Any, field: Any, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """JSON Schema patterns are ECMA-262: Python's end anchor \\Z is written $ there."""
    return {"pattern": ret["pattern"].replace(r"\Z", "$")} if "pattern" in ret else {}


class _Plugin(MarshmallowPlugin):
    Converter = _Converter


def openapi_path(pattern: str, verb: Any) -> tuple[str, list[str]]:
    """'/api/v1/wallets/([^/]+)/balance$' and get(self, wallet_id) -> '/api/v1/wallets/{wallet_id}/balance'."""
    names = list(inspect.signature(verb).parameters)[1:]
    literals = _GROUP.split(pattern.removesuffix("$"))
    if len(literals) - 1 != len(names):
        raise ValueError(f"{pattern}: {len(literals) - 1} path groups but verb parameters {names}")
    parts = [re.sub(r"\\(.)", r"\1", literals[0])]
    for name, literal in zip(names, literals[1:], strict=True):
        parts += ["{" + name + "}", re.sub(r"\\(.)", r"\1", literal)]
    return "".join(parts), names


def _error_statuses(declared: Api, access: str | None, path_params: list[str]) -> set[int]:
    statuses = set(declared.errors)
    uuids = [name for name in path_params if name not in declared.path]  # parsed with parse_uuid: 400 when not one
    if declared.body or declared.query or uuids or declared.idempotent:
        statuses.add(400)
    if declared.body:
        statuses.add(413)
    if access:
        # 400: both a Bearer token and an API key; 403: an admin route, or a key where it (or its scope) may not go
        statuses |= {400, 401, 403}
    if path_params:
        statuses.add(404)
    if declared.idempotent:
        statuses |= {409, 422}
    return statuses


def _security(access: str | None, scopes: tuple[str, ...]) -> list[dict[str, list[str]]]:
    """Bearer wherever a login is needed; an API key too where a scope allows (the key needs one of them)."""
    if not access:
        return []
    return [{"bearerAuth": []}, {"apiKey": list(scopes)}] if scopes else [{"bearerAuth": []}]


def _response(status: int, content: dict[str, Any] | None, idempotent: bool) -> dict[str, Any]:
    headers = ["X-Request-ID"]  # names of components.headers, which apispec turns into $refs
    if idempotent and status not in (409, 422):
        headers.append("Idempotent-Replayed")
    if status == 401:
        headers.append("WWW-Authenticate")
    if status == 429:
        headers.append("Retry-After")
    if 300 <= status < 400:
        headers.append("Location")
    response: dict[str, Any] = {"description": HTTPStatus(status).phrase, "headers": {h: h for h in headers}}
    if content is not None:
        response["content"] = content
    return response


def _tag(handler: type[web.RequestHandler], access: str | None) -> str:
    tag = "Admin" if access == "admin" else getattr(sys.modules[handler.__module__], "TAG", None)
    if tag not in TAGS:
        raise ValueError(f"{handler.__name__}: its module's TAG {tag!r} is not one of handlers/openapi.py's TAGS")
    return tag


def _operation(handler: type[web.RequestHandler], verb: Any, path_params: list[str]) -> dict[str, Any]:
    declared: Api = verb.api
    access = getattr(verb, "access", None)
    doc = inspect.getdoc(verb) or ""
    if not OPERATION_ID.match(declared.operation_id):
        raise ValueError(f"{handler.__name__}.{verb.__name__}: operationId {declared.operation_id!r} is not camelCase")
    operation: dict[str, Any] = {
        "operationId": declared.operation_id,
        "summary": doc.split("\n", 1)[0],
        "tags": [_tag(handler, access)],
        "security": _security(access, getattr(verb, "scopes", ())),
        "parameters": [
            {
                "in": "path",
                "name": name,
                "required": True,
                "schema": declared.path.get(name, {"type": "string", "format": "uuid"}),
            }
            for name in path_params
        ],
        "responses": {},
    }
    if "\n" in doc:
        operation["description"] = doc.split("\n", 1)[1].strip()
    if getattr(verb, "recent", False):
        operation["x-step-up"] = True
    if declared.query:
        operation["parameters"].append({"in": "query", "schema": declared.query})
    if declared.idempotent:
        operation["parameters"].append("Idempotency-Key")  # the components.parameters entry
    if declared.body:
        # A body whose fields are all optional may be left out (the handler reads an empty body as {}).
        required = any(field.required for field in declared.body.fields.values())
        operation["requestBody"] = {"required": required, "content": {"application/json": {"schema": declared.body}}}
    for status, schema in declared.responses.items():
        content = None if schema is None else {declared.media: {"schema": schema}}
        if content is not None:
            content.update({media: {"schema": other} for media, other in declared.alternatives.items()})
        operation["responses"][str(status)] = _response(status, content, declared.idempotent)
    for status in sorted(_error_statuses(declared, access, path_params)):
        content = {"application/json": {"schema": ErrorSchema}}
        operation["responses"][str(status)] = _response(status, content, declared.idempotent)
    return operation


def build_spec(routes: Iterable[tuple[str, type[web.RequestHandler]]]) -> dict[str, Any]:
    """The OpenAPI document of these (pattern, handler) routes; every verb they implement must be declared with @api,
    under an operationId no other verb has."""
    plugin = _Plugin()
    spec = APISpec(
        title="Wallet API",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": DESCRIPTION},
        tags=[{"name": name, "description": description} for name, description in TAGS.items()],
    )
    plugin.converter.add_attribute_function(_field_json_schema)
    plugin.converter.add_attribute_function(_ecma_pattern)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.security_scheme(
        "apiKey",
        {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key (`wk_...`) from POST /api/v1/keys; the operation lists the scopes it accepts.",
        },
    )
    spec.components.schema("Error", schema=ErrorSchema)
    for name, header in _HEADERS.items():
        spec.components.header(name, header)
    spec.components.parameter(
        "Idempotency-Key",
        "header",
        {
            "required": False,
            "description": "Makes a money-moving request safe to retry; scoped to the caller, kept at least 24 h.",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
        },
    )
    declared_by: dict[str, str] = {}  # operationId -> the verb that declared it
    for pattern, handler in routes:
        operations: dict[str, Any] = {}
        path = ""
        for name, verb in implemented_verbs(handler).items():
            if not hasattr(verb, "api"):
                raise TypeError(f"{handler.__name__}.{name} has no @api declaration")
            operation_id, where = verb.api.operation_id, f"{handler.__name__}.{name}"
            if operation_id in declared_by:
                raise ValueError(f"{where}: operationId {operation_id!r} is {declared_by[operation_id]}'s already")
            declared_by[operation_id] = where
            path, params = openapi_path(pattern, verb)
            operations[name] = _operation(handler, verb, params)
        if operations:
            spec.path(path=path, operations=operations)
    return spec.to_dict()


def api_routes(routes: Iterable[tuple[str, Any]]) -> list[tuple[str, type[BaseHandler]]]:
    """The API's (pattern, handler) pairs: BaseHandler's. Static files and redirects (Tornado's own handlers) are not
    operations of the API."""
    return [(pattern, handler) for pattern, handler in routes if issubclass(handler, BaseHandler)]


def app_routes(app: web.Application) -> list[tuple[str, type[BaseHandler]]]:
    """The API's (pattern, handler) pairs an application serves."""
    return api_routes((rule.matcher.regex.pattern, rule.target) for rule in app.wildcard_router.rules)
