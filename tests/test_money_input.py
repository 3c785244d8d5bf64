"""Bad input on every money field is a 400 in the contract's shape (never a 500), and nothing is recorded."""

import json

import pytest
from conftest import assert_error, balance, fund, make_user, scalar

BAD_AMOUNTS = [
    "10.001",  # more decimal places than USD has
    "0.1000000000000000000000000000001",  # beyond the default decimal context's 28 digits
    "0.001",
    "1e-400",
    "1e309",
    "NaN",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "-5",
    "0",
    "0.00",
    "-0",
    " 10",
    "10 ",
    "1,000",
    "1_000",
    "\u0661\u0660",  # Arabic-Indic digits, which Decimal() would read as 10
    "\uff11\uff10",  # full-width digits
    "1e-9999999999",
    "10 USD",
    "$10",
    "0x10",
    "",
    str(10**30),
    "1e13",
    True,
    False,
    None,
    [],
    ["10"],
    {},
    {"amount": "10"},
]

# Raw JSON texts, so numbers reach the server exactly as written (a float would never be sent this way).
BAD_RAW_AMOUNTS = [
    "10.001",
    "1e309",
    "-1e309",
    "1E-400",
    "-10",
    "0",
    "0.0",
    "1e13",
    str(10**30),
    "9" * 5000,
    "0." + "0" * 5000 + "1",
    "1e-99999999999999999999999999",  # an exponent Decimal itself refuses
    "1e99999999999999999999999999",
    "NaN",
    "Infinity",
    "-Infinity",
]


# Shared by the module's tests: none of them may record anything, which each one checks.
@pytest.fixture(scope="module")
def funded(server):
    user = make_user(server)
    fund(server, user, "100.00")
    return user


@pytest.fixture(scope="module")
def recipient(server):
    return make_user(server)


def transactions_of(db, user):
    return scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s", (user.id,))


def money_requests(user, other_wallet_id):
    """(path, body without amount) for every money-moving endpoint."""
    return [
        (f"/wallets/{user.wallet_id}/deposit", {}),
        (f"/wallets/{user.wallet_id}/withdraw", {}),
        (f"/wallets/{user.wallet_id}/operation", {"operation_type": "WITHDRAW"}),
        ("/transfers", {"from_wallet_id": user.wallet_id, "to_wallet_id": other_wallet_id}),
    ]


def assert_amount_refused(response):
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert "amount" in body["details"], body


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
def test_bad_amounts(server, funded, recipient, db, amount):
    with server.client(funded.token) as client:
        for path, body in money_requests(funded, recipient.wallet_id):
            assert_amount_refused(client.post(path, json={**body, "amount": amount}))
    assert transactions_of(db, funded) == 1  # only the funding deposit
    assert balance(server, funded) == "100.00"


@pytest.mark.parametrize("raw", BAD_RAW_AMOUNTS, ids=lambda raw: raw[:20])
def test_bad_raw_json_numbers(server, funded, recipient, db, raw):
    with server.client(funded.token) as client:
        for path, body in money_requests(funded, recipient.wallet_id):
            text = json.dumps(body)[:-1] + (", " if body else "") + f'"amount": {raw}}}'
            r = client.post(path, content=text, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, raw[:40], r.text)
            assert r.json()["code"] in ("VALIDATION_ERROR", "INVALID_JSON")
    assert transactions_of(db, funded) == 1
    assert balance(server, funded) == "100.00"


def test_exact_numbers_are_accepted(server, user):
    """JSON numbers are read exactly: 0.1 + 0.2 is 0.30, with no float rounding on the way."""
    path = f"/wallets/{user.wallet_id}/deposit"
    with server.client(user.token) as client:
        for raw in ("0.1", "0.2", "1E+1", "1000000000000", "5.000"):
            r = client.post(path, content=f'{{"amount": {raw}}}', headers={"Content-Type": "application/json"})
            assert r.status_code == 201, (raw, r.text)
    assert balance(server, user) == "1000000000015.30"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_wallet_id", "not-a-uuid"),
        ("from_wallet_id", 12),
        ("from_wallet_id", None),
        ("to_wallet_id", "1234"),
        ("to_wallet_id", ["x"]),
        ("to_wallet_number", "12345"),
        ("to_wallet_number", 1234567890),
        ("to_wallet_number", "12345678901"),
        ("to_wallet_number", "12345 6789"),
        ("to_username", "a b"),
        ("to_username", "x" * 33),
        ("to_username", 7),
        ("to_phone", "5551234567"),
        ("to_phone", "+1"),
        ("to_phone", {"n": 1}),
        ("description", "x" * 256),
        ("description", "nul\x00byte"),
        ("description", 5),
        ("colour", "red"),
    ],
)
def test_bad_transfer_fields(server, funded, recipient, db, field, value):
    body = {"from_wallet_id": funded.wallet_id, "amount": "1", field: value}
    if not field.startswith("to_"):
        body["to_wallet_id"] = recipient.wallet_id
    with server.client(funded.token) as client:
        r = client.post("/transfers", json=body)
    assert field in assert_error(r, 400, "VALIDATION_ERROR")["details"]
    assert transactions_of(db, funded) == 1


@pytest.mark.parametrize("missing", ["from_wallet_id", "amount"])
def test_missing_transfer_fields(server, funded, recipient, missing):
    body = {"from_wallet_id": funded.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "1"}
    del body[missing]
    with server.client(funded.token) as client:
        r = client.post("/transfers", json=body)
    assert missing in assert_error(r, 400, "VALIDATION_ERROR")["details"]


@pytest.mark.parametrize("wallet_id", ["not-a-uuid", "123", "%20", "00000000-0000-0000-0000-00000000000g"])
def test_malformed_wallet_ids_in_the_path(server, funded, wallet_id):
    with server.client(funded.token) as client:
        for action in ("deposit", "withdraw", "operation", "balance", "transactions", ""):
            method = client.get if action in ("balance", "transactions", "") else client.post
            body = {"amount": "1", "operation_type": "DEPOSIT"} if action == "operation" else {"amount": "1"}
            kwargs = {} if method == client.get else {"json": body}
            r = method(f"/wallets/{wallet_id}/{action}".rstrip("/"), **kwargs)
            assert_error(r, 400, "VALIDATION_ERROR")


def test_malformed_transaction_id_in_the_path(server, funded):
    with server.client(funded.token) as client:
        assert_error(client.get("/transactions/nope"), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b'"10"', b"null", b'{"amount": 1, "amount": "x"', b"\xff", b'{"amount": 1}' * 2, b"{" * 5000],
)
def test_bodies_that_are_not_a_json_object(server, funded, content):
    with server.client(funded.token) as client:
        r = client.post(
            f"/wallets/{funded.wallet_id}/deposit", content=content, headers={"Content-Type": "application/json"}
        )
    assert_error(r, 400, "INVALID_JSON")


def test_empty_body_misses_the_amount(server, funded):
    with server.client(funded.token) as client:
        r = client.post(f"/wallets/{funded.wallet_id}/deposit")
    assert "amount" in assert_error(r, 400, "VALIDATION_ERROR")["details"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"limit": "1.5"},
        {"cursor": "garbage!"},
        {"cursor": "djE6"},
        {"cursor": "x" * 300},
        {"cursor": "djF8OTk5OTk5OTk5OTk5OTk5OTk5OTk"},  # v1|99999999999999999999: wider than BIGINT
        {"cursor": "djF8LTU"},  # v1|-5
        {"cursor": "djF8MXwy"},  # v1|1|2: a key of the wrong length
        {"wallet_id": "nope"},
        {"type": "REFUND"},
        {"status": "DONE"},
        {"from": "yesterday"},
        {"to": "2024-13-01"},
        {"colour": "red"},
    ],
)
def test_bad_history_queries(server, funded, params):
    with server.client(funded.token) as client:
        r = client.get("/transactions", params=params)
        assert_error(r, 400, "VALIDATION_ERROR")
        if set(params) <= {"limit", "cursor"}:
            assert_error(
                client.get(f"/wallets/{funded.wallet_id}/transactions", params=params), 400, "VALIDATION_ERROR"
            )
