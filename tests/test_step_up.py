"""Step-up: what needs an authentication within STEP_UP_WINDOW (keys, webhook endpoints, e-mail and password changes,
money above STEP_UP_AMOUNT), POST /auth/step-up, and the rest of issue 22's hole 5 (a password change revokes the API
keys, the owner is mailed when a key is made)."""

import email
import email.policy
import time
import uuid
from pathlib import Path

import jwt
import pytest
from conftest import (
    JWT_SECRET,
    PASSWORD,
    assert_error,
    balance,
    fund,
    make_user,
    scalar,
    unique_name,
    unique_phone,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("ledger_audited")

KEY = {"name": "integration", "scopes": ["read", "transfer"], "expires_in": "1Y"}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def aged(token, seconds):
    """The same login's access token, re-signed as if its authentication (auth_time) were `seconds` old: what a
    token refreshed for a while looks like, without waiting that long."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["auth_time"] = int(time.time()) - seconds
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def stepping(module_server):
    """A server whose webhook endpoints may be on this machine (so a registration can succeed here)."""
    return module_server(WEBHOOK_ALLOW_PRIVATE="true", REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:")


# ---- issue 22, hole 5: a stolen 15-minute token must not become a one-year key ---------------------------------


def test_creating_a_key_needs_a_recent_authentication(stepping):
    owner = make_user(stepping)
    stale = aged(owner.token, 600)
    with stepping.client() as api:
        body = assert_error(api.post("/keys", json=KEY, headers=bearer(stale)), 403, "STEP_UP_REQUIRED")
        assert body["details"] == {"max_age": 300}
        # Stepping up with the password gives a fresh access token of the same login, which may.
        r = api.post("/auth/step-up", json={"password": PASSWORD}, headers=bearer(stale))
        assert r.status_code == 200, r.text
        fresh = r.json()["access_token"]
        assert api.post("/keys", json=KEY, headers=bearer(fresh)).status_code == 201
        # A login is an authentication too.
        assert api.post("/keys", json=KEY, headers=bearer(owner.token)).status_code == 201


def test_registering_a_webhook_endpoint_needs_a_recent_authentication(stepping):
    owner = make_user(stepping)
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["*"]}
    with stepping.client() as api:
        assert_error(
            api.post("/webhook-endpoints", json=hook, headers=bearer(aged(owner.token, 301))), 403, "STEP_UP_REQUIRED"
        )
        assert api.post("/webhook-endpoints", json=hook, headers=bearer(aged(owner.token, 290))).status_code == 201


def test_a_password_change_revokes_the_api_keys(stepping):
    owner = make_user(stepping)
    with stepping.client(owner.token) as api:
        made = [api.post("/keys", json={**KEY, "name": name}).json() for name in ("one", "two")]
        r = api.patch("/users/me", json={"current_password": PASSWORD, "password": "second-horse-9"})
        assert r.status_code == 200, r.text
        assert {k["name"]: k["status"] for k in api.get("/keys").json()["items"]} == {
            "one": "revoked",
            "two": "revoked",
        }
        revoked = [e for e in api.get("/events").json()["items"] if e["type"] == "api_key.revoked"]
    assert sorted(e["data"]["id"] for e in revoked) == sorted(k["id"] for k in made)
    for key in made:
        with stepping.client() as api:
            assert_error(api.get("/wallets", headers={"X-API-Key": key["key"]}), 401, "INVALID_API_KEY")


def test_revoke_api_keys_false_keeps_them(stepping):
    owner = make_user(stepping)
    with stepping.client(owner.token) as api:
        key = api.post("/keys", json=KEY).json()
        r = api.patch(
            "/users/me",
            json={"current_password": PASSWORD, "password": "second-horse-9", "revoke_api_keys": False},
        )
        assert r.status_code == 200, r.text
    with stepping.client() as api:
        assert api.get("/wallets", headers={"X-API-Key": key["key"]}).status_code == 200


def test_the_owner_is_mailed_when_a_key_is_made(stepping, server_env):
    address = f"{unique_name('owner')}@example.com"
    owner = make_user(stepping, email=address)
    with stepping.client(owner.token) as api:
        key = api.post("/keys", json=KEY).json()
        event = next(e for e in api.get("/events").json()["items"] if e["type"] == "api_key.created")
    mail = Path(server_env["VAR_DIR"]) / "mail" / f"event-{event['id']}.eml"
    wait_for(mail.exists)
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert message["To"] == address
    assert "API key" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    assert KEY["name"] in text and key["prefix"] in text and key["key"] not in text


# ---- what else needs it --------------------------------------------------------------------------------------------


def test_a_new_email_or_password_needs_a_recent_authentication(stepping):
    owner = make_user(stepping)
    stale = bearer(aged(owner.token, 600))
    with stepping.client() as api:
        for change in (
            {"email": f"{unique_name('e')}@example.com"},
            {"current_password": PASSWORD, "password": "second-horse-9"},
        ):
            assert_error(api.patch("/users/me", json=change, headers=stale), 403, "STEP_UP_REQUIRED")
        # The phone is not a credential: no step-up.
        assert api.patch("/users/me", json={"phone": unique_phone()}, headers=stale).status_code == 200
        # revoke_api_keys goes with a new password only.
        r = api.patch("/users/me", json={"phone": None, "revoke_api_keys": False}, headers=bearer(owner.token))
        assert_error(r, 400, "VALIDATION_ERROR")
    with stepping.client() as api:
        assert api.post("/auth/login", json={"username": owner.username, "password": PASSWORD}).status_code == 200


def test_step_up_refuses_a_wrong_password_and_api_keys(stepping):
    owner = make_user(stepping)
    with stepping.client(owner.token) as api:
        key = api.post("/keys", json=KEY).json()["key"]
        assert_error(api.post("/auth/step-up", json={"password": "wrong-horse-9"}), 401, "INVALID_CREDENTIALS")
        assert_error(api.post("/auth/step-up", json={"code": "123456"}), 400, "VALIDATION_ERROR")  # no 2FA
        assert_error(api.post("/auth/step-up", json={}), 400, "VALIDATION_ERROR")
    with stepping.client() as api:
        r = api.post("/auth/step-up", json={"password": PASSWORD}, headers={"X-API-Key": key})
        assert_error(r, 403, "FORBIDDEN")
        assert_error(api.post("/auth/step-up", json={"password": PASSWORD}), 401, "AUTHENTICATION_REQUIRED")


# ---- money above STEP_UP_AMOUNT ------------------------------------------------------------------------------------


def test_money_above_the_threshold_needs_a_recent_authentication(stepping, db):
    payer, payee = make_user(stepping), make_user(stepping)
    fund(stepping, payer, "5000.00")
    stale = bearer(aged(payer.token, 600))
    big = {"from_wallet_id": payer.wallet_id, "to_username": payee.username, "amount": "1000.01"}
    with stepping.client() as api:
        # Refused before anything is recorded: the same Idempotency-Key then works once stepped up.
        r = api.post("/transfers", json=big, headers={**stale, "Idempotency-Key": "big-1"})
        assert_error(r, 403, "STEP_UP_REQUIRED")
        assert (
            scalar(
                db,
                "SELECT count(*) FROM transactions WHERE source_wallet_id = %s AND type = 'TRANSFER'",
                (payer.wallet_id,),
            )
            == 0
        )
        for path, body in (
            (f"/wallets/{payer.wallet_id}/withdraw", {"amount": "1000.01"}),
            (f"/wallets/{payer.wallet_id}/operation", {"operation_type": "WITHDRAW", "amount": "2000"}),
            ("/holds", {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "1500"}),
        ):
            assert_error(api.post(path, json=body, headers=stale), 403, "STEP_UP_REQUIRED")
        # At the threshold, and money coming in, need nothing more.
        ok = api.post("/transfers", json={**big, "amount": "1000.00"}, headers=stale)
        assert ok.status_code == 201, ok.text
        assert (
            api.post(f"/wallets/{payer.wallet_id}/deposit", json={"amount": "5000"}, headers=stale).status_code == 201
        )
        fresh = bearer(api.post("/auth/step-up", json={"password": PASSWORD}, headers=stale).json()["access_token"])
        r = api.post("/transfers", json=big, headers={**fresh, "Idempotency-Key": "big-1"})
        assert r.status_code == 201, r.text
    assert balance(stepping, payee) == "2000.01"


def test_an_api_key_moves_money_only_below_the_threshold(stepping):
    payer, payee = make_user(stepping), make_user(stepping)
    fund(stepping, payer, "3000.00")
    with stepping.client(payer.token) as api:
        key = api.post("/keys", json=KEY).json()["key"]
    with stepping.client() as api:
        keyed = {"X-API-Key": key}
        body = {"from_wallet_id": payer.wallet_id, "to_username": payee.username}
        r = api.post("/transfers", json={**body, "amount": "1000.01"}, headers=keyed)
        assert "API key" in assert_error(r, 403, "STEP_UP_REQUIRED")["error"]
        assert api.post("/transfers", json={**body, "amount": "999.99"}, headers=keyed).status_code == 201
    assert balance(stepping, payee) == "999.99"


def test_a_large_fx_quote_needs_a_recent_authentication(stepping, admin):
    payer, payee = make_user(stepping, currency="GBP"), make_user(stepping, currency="SEK")
    with stepping.client(admin.token) as api:
        assert api.put("/admin/fx-rates/GBP/SEK", json={"rate": "0.9"}).status_code == 200
    stale = bearer(aged(payer.token, 600))
    quote = {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id}
    with stepping.client() as api:
        # Judged by what it takes from the payer, in the payer's currency: 950 SEK is about 1055.56 GBP.
        r = api.post("/fx/quotes", json={**quote, "destination_amount": "950"}, headers=stale)
        assert_error(r, 403, "STEP_UP_REQUIRED")
        assert api.post("/fx/quotes", json={**quote, "source_amount": "999"}, headers=stale).status_code == 201


def test_step_up_amount_0_turns_the_money_check_off(own_server):
    lenient = own_server(STEP_UP_AMOUNT="0", REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:")
    payer = make_user(lenient)
    fund(lenient, payer, "20000")
    with lenient.client() as api:
        r = api.post(
            f"/wallets/{payer.wallet_id}/withdraw", json={"amount": "15000"}, headers=bearer(aged(payer.token, 3600))
        )
        assert r.status_code == 201, r.text
