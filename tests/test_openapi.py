"""The OpenAPI document at /openapi.json: valid 3.1, every served route and verb in it and nothing else, and what
it says about access, bodies and errors is what the running server does."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from conftest import ROOT
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

import serving
from handlers.base import BaseHandler, api, implemented_verbs
from handlers.openapi import TAGS, api_routes, build_spec, openapi_path

ERROR_REF = {"$ref": "#/components/schemas/Error"}
TAG = "Wallets"  # the tag build_spec gives the handlers this module declares (a module's TAG)


@pytest.fixture(scope="module")
def spec(server):
    r = httpx.get(f"{server.url}/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_is_a_valid_openapi_31_document(spec):
    assert spec["openapi"] == "3.1.0"
    errors = [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(spec)]
    assert errors == []
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_every_served_route_and_verb_is_documented_and_nothing_else(spec):
    served = set()
    for pattern, handler in api_routes(route[:2] for route in serving.ROUTES):
        for name, verb in implemented_verbs(handler).items():
            served.add((openapi_path(pattern, verb)[0], name))
    documented = {(path, method) for path, method, _ in operations(spec)}
    assert served == documented
    contract = {
        ("/health", "get"),
        ("/ready", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/users/me", "get"),
        ("/api/v1/users/me", "patch"),
        ("/api/v1/users/me", "delete"),
        ("/api/v1/wallets", "get"),
        ("/api/v1/wallets", "post"),
        ("/api/v1/wallets/{wallet_id}", "get"),
        ("/api/v1/wallets/{wallet_id}/balance", "get"),
        ("/api/v1/wallets/{wallet_id}/transactions", "get"),
        ("/api/v1/wallets/{wallet_id}/deposit", "post"),
        ("/api/v1/wallets/{wallet_id}/withdraw", "post"),
        ("/api/v1/wallets/{wallet_id}/operation", "post"),
        ("/api/v1/transfers", "post"),
        ("/api/v1/transactions", "get"),
        ("/api/v1/transactions/{transaction_id}", "get"),
        ("/api/v1/admin/users", "get"),
        ("/api/v1/admin/users/{user_id}", "get"),
        ("/api/v1/admin/users/{user_id}/{action}", "post"),
        ("/api/v1/admin/wallets/{wallet_id}/deposit", "post"),
        ("/api/v1/admin/users/{user_id}/transactions", "get"),
        ("/api/v1/admin/audit", "get"),
        ("/api/v1/wallets/{wallet_id}/deposits/paystack", "post"),
        ("/api/v1/deposits/{reference}", "get"),
        ("/api/v1/webhooks/paystack", "post"),
    }
    assert contract <= documented, contract - documented
    actions = spec["paths"]["/api/v1/admin/users/{user_id}/{action}"]["post"]["parameters"][1]["schema"]["enum"]
    assert sorted(actions) == ["activate", "deactivate", "freeze", "unfreeze"]


def test_every_operation_documents_success_errors_and_the_request_id(spec):
    for path, method, operation in operations(spec):
        statuses = {int(s) for s in operation["responses"]}
        assert any(200 <= s < 400 or s == 101 for s in statuses), (method, path)  # a redirect, or 101 (WebSocket)
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], (method, path, status)
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == ERROR_REF, (method, path, status)
        if "requestBody" in operation:
            assert {400, 413} <= statuses, (method, path)
        assert operation["summary"], (method, path)


def test_money_moving_posts_take_an_idempotency_key(spec):
    idempotent = {
        (path, method)
        for path, method, operation in operations(spec)
        if {"$ref": "#/components/parameters/Idempotency-Key"} in operation["parameters"]
    }
    assert idempotent == {
        ("/api/v1/wallets/{wallet_id}/deposit", "post"),
        ("/api/v1/wallets/{wallet_id}/withdraw", "post"),
        ("/api/v1/wallets/{wallet_id}/operation", "post"),
        ("/api/v1/transfers", "post"),
        ("/api/v1/transfers/batch", "post"),
        ("/api/v1/holds", "post"),
        ("/api/v1/holds/{hold_id}/capture", "post"),
        ("/api/v1/payment-requests/{request_id}/pay", "post"),
        ("/api/v1/admin/wallets/{wallet_id}/deposit", "post"),
        ("/api/v1/admin/transactions/{transaction_id}/reverse", "post"),
        ("/api/v1/wallets/{wallet_id}/deposits/paystack", "post"),
        ("/api/v1/wallets/{wallet_id}/payouts", "post"),
    }
    for path, method in idempotent:
        responses = spec["paths"][path][method]["responses"]
        assert {"409", "422"} <= set(responses)
        assert "Idempotent-Replayed" in responses["201" if "operation" not in path else "200"]["headers"]
    assert spec["components"]["parameters"]["Idempotency-Key"]["in"] == "header"


def fill(path: str, spec_item: dict) -> str:
    """The path with every parameter filled: a fresh UUID, or the first allowed value."""
    for parameter in spec_item["parameters"]:
        if parameter.get("in") == "path":
            schema = parameter["schema"]
            value = schema["enum"][0] if "enum" in schema else str(uuid.uuid4())
            path = path.replace("{" + parameter["name"] + "}", value)
    return path


def test_security_is_what_the_server_enforces(server, spec):
    """An operation documented with bearerAuth answers 401 without a token; one documented without does not."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, method, operation in operations(spec):
            r = client.request(method.upper(), fill(path, operation), json={} if "requestBody" in operation else None)
            if operation["security"]:
                assert operation["security"][0] == {"bearerAuth": []}
                assert all(set(alternative) == {"apiKey"} for alternative in operation["security"][1:])
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            else:
                assert r.status_code != 401, (method, path, r.text)
            assert str(r.status_code) in operation["responses"], (method, path, r.status_code)


def test_request_bodies_are_the_schemas_the_server_validates_with(server, spec, user, admin):
    """An empty body names every documented required field; an undocumented field is refused by name."""
    schemas = spec["components"]["schemas"]
    checked = 0
    for path, method, operation in operations(spec):
        if "requestBody" not in operation:
            continue
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body_schema = schemas[ref.rsplit("/", 1)[1]]
        assert body_schema["additionalProperties"] is False
        token = admin.token if path.startswith("/api/v1/admin/") else user.token
        url = fill(path, operation)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            empty = client.request(method.upper(), url, json={})
            unknown = client.request(method.upper(), url, json={"not_a_field": 1})
        required = set(body_schema.get("required", []))
        if required or body_schema.get("minProperties") or body_schema.get("oneOf"):
            assert empty.status_code == 400, (method, path, empty.text)
            assert required <= set(empty.json()["details"]), (method, path, empty.text)
        assert unknown.status_code == 400, (method, path, unknown.text)
        assert "not_a_field" in unknown.json()["details"], (method, path, unknown.text)
        checked += 1
    assert checked >= 11


def test_request_bodies_are_one_object_with_properties_not_a_choice_of_shapes(spec):
    """Rules across fields (exactly one of username, email, phone) stand under allOf: a top-level oneOf reads to a
    client generator as a choice between shapes without properties, and the body comes out untyped."""
    schemas = spec["components"]["schemas"]
    for path, method, operation in operations(spec):
        if "requestBody" in operation:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            body = schemas[ref.rsplit("/", 1)[1]]
            assert body["type"] == "object" and body["properties"], (method, path)
            assert not {"oneOf", "anyOf"} & set(body), (method, path)
    login = schemas["Login"]
    assert set(login["properties"]) == {"username", "email", "phone", "password"}
    assert login["required"] == ["password"]
    assert login["allOf"] == [{"oneOf": [{"required": [name]} for name in ("username", "email", "phone")]}]


def test_responses_carry_every_documented_field(server, spec, user):
    """Response schemas mark all fields required; a real answer has exactly those fields."""
    wallet_schema = spec["components"]["schemas"]["Wallet"]
    assert set(wallet_schema["required"]) == set(wallet_schema["properties"])
    with server.client(user.token) as client:
        wallet = client.get(f"/wallets/{user.wallet_id}").json()
        me = client.get("/users/me").json()
    assert set(wallet) == set(wallet_schema["properties"])
    assert set(me) == set(spec["components"]["schemas"]["User"]["properties"])


def test_405_says_which_methods_are_allowed(server):
    r = httpx.request("TRACE", f"{server.url}/api/v1/wallets")
    assert r.status_code == 405
    assert r.json()["code"] == "METHOD_NOT_ALLOWED"
    assert r.headers["Allow"] == "GET, POST"


def test_static_files_redirects_and_options_are_not_operations(spec):
    assert not [path for path in spec["paths"] if path.startswith("/docs/") or path == "/"]
    assert not [(path, method) for path, method, _ in operations(spec) if method in ("options", "head")]


def test_operation_ids_and_tags_are_the_ones_the_api_guide_lists(spec):
    """They name a generated client's functions and packages: stable, and documented (docs/api.md)."""
    guide = (ROOT / "docs" / "api.md").read_text().split("## Operation names and tags", 1)[1]
    rows = re.findall(r"^\| (\w[\w ]*) \| (`.+`) \|$", guide, re.M)
    documented = {tag: re.findall(r"`(\w+)`", ids) for tag, ids in rows}
    served: dict[str, list[str]] = {}
    for _, _, operation in operations(spec):
        assert len(operation["tags"]) == 1, operation["operationId"]
        served.setdefault(operation["tags"][0], []).append(operation["operationId"])
    assert {tag: sorted(ids) for tag, ids in documented.items()} == {tag: sorted(ids) for tag, ids in served.items()}
    assert [tag["name"] for tag in spec["tags"]] == list(documented) == list(TAGS)
    assert all(tag["description"] for tag in spec["tags"])
    assert sum(map(len, documented.values())) == len(list(operations(spec)))  # so each operationId is unique


def declared(name: str, operation_id: str | None, module: str = __name__) -> type[BaseHandler]:
    async def get(self) -> None:
        """Something."""

    verb = get if operation_id is None else api(operation_id, {204: None})(get)
    return type(name, (BaseHandler,), {"get": verb, "__module__": module})


def test_a_verb_builds_with_its_operation_id_and_its_modules_tag():
    operation = build_spec([("/thing$", declared("ThingHandler", "getThing"))])["paths"]["/thing"]["get"]
    assert (operation["operationId"], operation["tags"]) == ("getThing", ["Wallets"])


@pytest.mark.parametrize(
    ("routes", "error", "message"),
    [
        ([("/a$", declared("A", None))], TypeError, "A.get has no @api declaration"),
        (
            [("/a$", declared("A", "getThing")), ("/b$", declared("B", "getThing"))],
            ValueError,
            "B.get: operationId 'getThing' is A.get's already",
        ),
        ([("/a$", declared("A", "get_thing"))], ValueError, "A.get: operationId 'get_thing' is not camelCase"),
        ([("/a$", declared("A", "GetThing"))], ValueError, "A.get: operationId 'GetThing' is not camelCase"),
        ([("/a$", declared("A", "getThing", "handlers.base"))], ValueError, "A: its module's TAG None is not one"),
    ],
)
def test_the_document_refuses_to_build_without_a_unique_camel_case_operation_id_and_a_tag(routes, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build_spec(routes)
