"""Hostile input on every auth and account field, body limits, request ids, 405s, /health and /ready."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import PASSWORD, Server, User, assert_error, make_user, unique_name

from scripts.local_services import redis_server

WRONG_TYPES = [123, 1.5, -1, True, False, [], ["a"], {}, {"a": 1}]
HOSTILE_TEXT = [
    "",
    " ",
    "\n",
    "'; DROP TABLE users; --",
    "admin'--",
    '" OR 1=1 --',
    "a\x00b",
    "\x00",
    "ünïcødé ✓ 😀 中文",
    "\u202eevil",
    "\ud800",  # a lone surrogate: valid JSON escape, not valid UTF-8
    "x" * 5000,
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "%00%27",
]

# endpoint -> (method, path, a valid body given the test user)
ENDPOINTS = {
    "register": ("POST", "/auth/register", lambda u: {"username": unique_name(), "password": PASSWORD}),
    "login": ("POST", "/auth/login", lambda u: {"username": u.username, "password": PASSWORD}),
    "refresh": ("POST", "/auth/refresh", lambda u: {"refresh_token": u.refresh_token}),
    "me": ("PATCH", "/users/me", lambda u: {"email": f"{unique_name()}@example.com"}),
}
FIELDS = [
    ("register", "username"),
    ("register", "password"),
    ("register", "email"),
    ("register", "phone"),
    ("register", "currency"),
    ("login", "username"),
    ("login", "email"),
    ("login", "phone"),
    ("login", "password"),
    ("refresh", "refresh_token"),
    ("me", "email"),
    ("me", "phone"),
    ("me", "password"),
    ("me", "current_password"),
]
NULLABLE = {("register", "email"), ("register", "phone"), ("register", "currency"), ("me", "email"), ("me", "phone")}


@pytest.fixture(scope="module")
def member(server: Server) -> User:
    """One account for the tests whose requests are refused before they could change it."""
    return make_user(server)


def send(api: httpx.Client, endpoint: str, user, body: object, raw: bytes | None = None) -> httpx.Response:
    method, path, _ = ENDPOINTS[endpoint]
    content = raw if raw is not None else json.dumps(body).encode()  # ASCII escapes carry lone surrogates too
    return api.request(method, path, content=content, headers={**user.headers, "Content-Type": "application/json"})


def body_for(endpoint: str, user, field: str, value: object) -> dict:
    """A valid body with FIELD set to VALUE (a login keeps only its password, so FIELD is its one identifier)."""
    body = {k: v for k, v in ENDPOINTS[endpoint][2](user).items() if endpoint != "login" or k == "password"}
    if endpoint == "me" and field == "password":
        body = {"current_password": PASSWORD}
    if endpoint == "me" and field == "current_password":
        body = {"password": "another-pass-1"}
    return {**body, field: value}


def assert_clean_error(r: httpx.Response) -> dict:
    """The contract's error shape, with no internals in it."""
    body = r.json()
    assert set(body) <= {"error", "code", "details"} and body["code"] and body["error"], body
    assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower() and "asyncpg" not in r.text
    return body


@pytest.mark.parametrize(("endpoint", "field"), FIELDS)
def test_wrong_types_are_400_naming_the_field(api, member, endpoint, field):
    values = WRONG_TYPES + ([] if (endpoint, field) in NULLABLE else [None])
    for value in values:
        r = send(api, endpoint, member, body_for(endpoint, member, field, value))
        body = assert_error(r, 400, "VALIDATION_ERROR")
        assert field in body["details"], (value, body)


@pytest.mark.parametrize(("endpoint", "field"), FIELDS)
def test_hostile_strings_never_break_the_server(api, db, user, endpoint, field):
    for value in HOSTILE_TEXT:
        r = send(api, endpoint, user, body_for(endpoint, user, field, value))
        if r.status_code < 400:
            # Only a password may be any text that meets the policy.
            assert field == "password" and endpoint in ("register", "me"), (value, r.text)
            continue
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        body = assert_clean_error(r)
        if "\x00" in value or "\ud800" in value:
            assert body["code"] in ("VALIDATION_ERROR", "INVALID_JSON") and r.status_code == 400, body
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM users WHERE id = %s", (user.id,))
    assert cur.fetchone() == (1,)


def test_sql_looking_password_is_just_a_password(api, db):
    name = unique_name()
    password = "'; DROP TABLE users; --"
    r = api.post("/auth/register", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    assert api.post("/auth/login", json={"username": name, "password": password}).status_code == 200
    assert_error(
        api.post("/auth/login", json={"username": "' OR '1'='1", "password": password}), 401, "INVALID_CREDENTIALS"
    )
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM users WHERE username = %s", (name,))
    assert cur.fetchone() == (1,)


@pytest.mark.parametrize("username", ["ab", "x" * 33, "bad name", "naïve", "alice\n", "a/b", "a@b", "😀😀😀"])
def test_usernames_outside_the_alphabet_are_400(api, db, username):
    body = assert_error(
        api.post("/auth/register", json={"username": username, "password": PASSWORD}), 400, "VALIDATION_ERROR"
    )
    assert "username" in body["details"]
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM users WHERE username = %s", (username,))
    assert cur.fetchone() == (0,)


@pytest.mark.parametrize(
    "password",
    ["short1", "1234567", "12345678901234", "<USERNAME>", "<USERNAME_UPPER>", "p" * 73, "é" * 37, "😀" * 19],
)
def test_weak_and_too_long_passwords_are_400(api, db, password):
    name = unique_name()
    password = password.replace("<USERNAME_UPPER>", name.upper()).replace("<USERNAME>", name)
    body = assert_error(
        api.post("/auth/register", json={"username": name, "password": password}), 400, "VALIDATION_ERROR"
    )
    assert list(body["details"]) == ["password"]
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM users WHERE username = %s", (name,))
    assert cur.fetchone() == (0,)


def test_72_byte_passwords_are_fine(api):
    for password in ("p" * 72, "é" * 36, "😀" * 18):
        name = unique_name()
        assert api.post("/auth/register", json={"username": name, "password": password}).status_code == 201
        assert api.post("/auth/login", json={"username": name, "password": password}).status_code == 200


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "INVALID_JSON"),
        (b'{"username": }', "INVALID_JSON"),
        (b"\xff\xfe{}", "INVALID_JSON"),
        (b'{"a": NaN}', "INVALID_JSON"),
        (b'{"a": Infinity}', "INVALID_JSON"),
        (b"[" * 20000 + b"]" * 20000, "INVALID_JSON"),
        (b"[]", "INVALID_JSON"),
        (b'["username", "password"]', "INVALID_JSON"),
        (b'"a string"', "INVALID_JSON"),
        (b"42", "INVALID_JSON"),
        (b"null", "INVALID_JSON"),
        (b"true", "INVALID_JSON"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_400(api, member, endpoint, raw, code):
    assert_error(send(api, endpoint, member, None, raw=raw), 400, code)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_unknown_fields_are_400_with_details(api, member, endpoint):
    for extra in ("is_admin", "role", "status", "id", "\ud800", "a" * 300):
        body = {**ENDPOINTS[endpoint][2](member), extra: True}
        if extra == "\ud800":
            assert_error(send(api, endpoint, member, body), 400, "INVALID_JSON")
        else:
            assert extra in assert_error(send(api, endpoint, member, body), 400, "VALIDATION_ERROR")["details"]


@pytest.mark.parametrize("endpoint", ["register", "login", "refresh"])
def test_empty_body_names_the_required_fields(api, member, endpoint):
    details = assert_error(send(api, endpoint, member, None, raw=b""), 400, "VALIDATION_ERROR")["details"]
    required = {"register": {"username", "password"}, "login": {"password"}, "refresh": {"refresh_token"}}
    assert required[endpoint] <= set(details), details


def test_body_over_the_limit_with_content_length_is_413(api, user):
    big = json.dumps({"username": "x" * 70_000, "password": PASSWORD}).encode()
    r = api.post("/auth/register", content=big, headers={"X-Request-ID": "big-body-1"})
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert r.headers["X-Request-ID"] == "big-body-1"
    r = api.patch("/users/me", content=big, headers=user.headers)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


def test_chunked_body_over_the_limit_is_413(api):
    def chunks() -> Iterator[bytes]:
        yield b'{"username": "'
        for _ in range(40):
            yield b"x" * 4096
        yield b'", "password": "correct-horse-9"}'

    r = api.post("/auth/register", content=chunks())
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


def test_chunked_body_within_the_limit_works(api):
    name = unique_name()

    def chunks() -> Iterator[bytes]:
        yield b'{"username": "'
        yield name.encode()
        yield b'", "password": "correct-horse-9"}'

    r = api.post("/auth/register", content=chunks())
    assert r.status_code == 201, r.text
    assert r.json()["user"]["username"] == name


# ---- request ids, methods, health --------------------------------------------------------------------------


def test_request_id_is_echoed_or_generated(api, user):
    for method, path, kwargs in (
        ("GET", "/users/me", {"headers": user.headers}),
        ("GET", "/users/me", {}),
        ("POST", "/auth/login", {"content": b"{"}),
        ("GET", "/no/such/path", {}),
        ("PUT", "/auth/login", {}),
    ):
        sent = {"X-Request-ID": "client-req.42:a_b-c"}
        r = api.request(method, path, **{**kwargs, "headers": {**kwargs.get("headers", {}), **sent}})
        assert r.headers["X-Request-ID"] == "client-req.42:a_b-c", (method, path)
        generated = api.request(method, path, **kwargs).headers["X-Request-ID"]
        again = api.request(method, path, **kwargs).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated) and generated != again
    for bad in ("has spaces", "x" * 500, "semi;colon", "new\\nline"):
        r = api.get("/users/me", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"]), bad


def test_answers_given_before_the_body_is_read_close_the_connection_cleanly(api):
    """Such answers end the connection; saying so keeps a client from sending its next request into a closed one."""
    for _ in range(30):
        r = api.get("/no/such/path")
        assert_error(r, 404, "NOT_FOUND")
        assert r.headers["Connection"] == "close"
        assert_error(api.get("/users/me"), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/auth/login"),
        ("GET", "/auth/register"),
        ("DELETE", "/auth/refresh"),
        ("GET", "/auth/logout"),
        ("POST", "/users/me"),
        ("PUT", "/users/me"),
        ("BREW", "/auth/login"),
    ],
)
def test_unsupported_verbs_are_405(api, method, path):
    r = api.request(method, path)
    body = assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert set(body) == {"error", "code"}
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Request-ID"]


def test_health_and_ready(server):
    for path, says in (("/health", {"status", "version", "revision"}), ("/ready", {"status"})):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code == 200 and r.json()["status"] == "ok" and set(r.json()) == says, path
        assert r.headers["X-Request-ID"]
    assert_error(httpx.post(f"{server.url}/health"), 405, "METHOD_NOT_ALLOWED")


def test_without_redis_the_server_is_not_ready_but_serves(server_env, tmp_path, user):
    """Redis gone after start-up: /health 200, /ready 503 naming it, and requests that use it served all the same
    (test_outages.py has the outage under load); and a client that leaves mid-body does not hold up the graceful
    shutdown (docs/operations.md, "Stopping and draining")."""
    server = Server({**server_env}, tmp_path / "server.log")  # a copy: the Redis URL set below is this one's alone
    try:
        with redis_server(own=True) as redis_url:
            server.env["REDIS_URL"] = redis_url
            server.start()
        assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
        ready = assert_error(httpx.get(f"{server.url}/ready"), 503, "SERVICE_UNAVAILABLE")
        assert ready["details"] == {"database": "ok", "redis": "down"}
        with server.client(user.token) as api:
            assert api.get("/users/me").status_code == 200
            login = api.post("/auth/login", json={"username": user.username, "password": PASSWORD})
            assert login.status_code == 200, login.text

        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b'POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":'
            )
            assert httpx.get(f"{server.url}/health").status_code == 200  # the half-sent request is in flight
        time.sleep(0.2)
        started = time.monotonic()
        server.stop()
        assert server.proc.returncode == 0
        assert time.monotonic() - started < 5
    finally:
        server.stop()
