"""Google sign-in against a local OIDC provider over HTTP: the redirect, first and later sign-ins, every way an ID
token can be wrong, replayed state, the pre-account-takeover case, linking, and setting a first password."""

import base64
import hashlib
import hmac
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from conftest import JWT_SECRET, PASSWORD, assert_error, make_admin, make_user, scalar, unique_name
from oidc_provider import CLIENT_ID, CLIENT_SECRET, REDIRECT_URL, OidcProvider


@pytest.fixture(scope="module")
def provider():
    with OidcProvider() as running:
        yield running


@pytest.fixture(scope="module")
def gserver(module_server, provider):
    return module_server(
        GOOGLE_CLIENT_ID=CLIENT_ID,
        GOOGLE_CLIENT_SECRET=CLIENT_SECRET,
        GOOGLE_DISCOVERY_URL=provider.discovery_url,
        GOOGLE_REDIRECT_URL=REDIRECT_URL,
    )


@pytest.fixture(autouse=True)
def _fresh_provider(provider):
    provider.reset()


def person():
    return {"sub": uuid.uuid4().hex, "email": f"{unique_name('g')}@Example.com"}


# The secret the test's "browser" keeps for its sign-in flows, and the challenge it starts them with.
BROWSER = "test-browser-binding-verifier-0123456789abcdef"


def challenge(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def start(gserver, verifier=BROWSER):
    """GET /auth/google from a browser keeping `verifier`: the provider URL it redirects to."""
    r = httpx.get(
        f"{gserver.url}/api/v1/auth/google", params={"binding_challenge": challenge(verifier)}, follow_redirects=False
    )
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def consent(provider, location, who):
    """The browser at the provider: `who` signs in, and is sent back to our redirect URL with code and state."""
    provider.user = who
    r = httpx.get(location, follow_redirects=False)
    assert r.status_code == 302, r.text
    back = r.headers["Location"]
    assert back.startswith(REDIRECT_URL + "?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
    return query["code"], query["state"]


def callback(gserver, code, state, verifier=BROWSER):
    query = {"code": code, "state": state, "binding_verifier": verifier, "authuser": "0"}
    with gserver.client() as client:
        return client.get("/auth/google/callback", params=query)


def sign_in(gserver, provider, who):
    return callback(gserver, *consent(provider, start(gserver), who))


def me(gserver, token):
    with gserver.client(token) as client:
        return client.get("/users/me").json()


def test_not_configured_is_503(server):
    with server.client() as client:
        r = client.get("/auth/google", params={"binding_challenge": challenge(BROWSER)}, follow_redirects=False)
        assert_error(r, 503, "PROVIDER_NOT_CONFIGURED")
        r = client.get("/auth/google/callback", params={"code": "a", "state": "b", "binding_verifier": BROWSER})
        assert_error(r, 503, "PROVIDER_NOT_CONFIGURED")


def test_the_redirect_carries_state_nonce_and_an_s256_challenge(gserver, provider):
    location = start(gserver)
    assert location.startswith(f"{provider.url}/authorize?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert query["client_id"] == CLIENT_ID and query["redirect_uri"] == REDIRECT_URL
    assert query["response_type"] == "code" and "openid" in query["scope"].split()
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43
    assert query["state"] != start(gserver).split("state=")[1].split("&")[0]  # a new flow each time


def test_first_sign_in_creates_the_account_and_later_ones_find_it_by_subject(gserver, provider, db):
    who = person()
    r = sign_in(gserver, provider, who)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    user = me(gserver, tokens["access_token"])
    assert user["auth_providers"] == ["google"]
    assert user["email"] == who["email"].split("@")[0] + "@example.com"
    assert user["username"] == who["email"].split("@")[0]
    with gserver.client(tokens["access_token"]) as client:
        wallets = client.get("/wallets").json()["items"]
    assert [w["currency"] for w in wallets] == ["USD"]
    assert scalar(db, "SELECT password_hash FROM users WHERE id = %s", (user["id"],)) is None
    # Later: the same subject is the same account, whatever e-mail Google now reports.
    again = sign_in(gserver, provider, {**who, "email": f"{unique_name('moved')}@example.com"})
    assert again.status_code == 200, again.text
    assert me(gserver, again.json()["access_token"])["id"] == user["id"]
    # No password: a password login fails like a wrong password.
    with gserver.client() as client:
        r = client.post("/auth/login", json={"username": user["username"], "password": PASSWORD})
    assert_error(r, 401, "INVALID_CREDENTIALS")


def test_a_taken_username_gets_a_suffix(gserver, provider):
    taken = make_user(gserver)
    r = sign_in(gserver, provider, {"sub": uuid.uuid4().hex, "email": f"{taken.username}@elsewhere.example"})
    assert r.status_code == 200, r.text
    username = me(gserver, r.json()["access_token"])["username"]
    assert username.startswith(taken.username + "-") and username != taken.username


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        ({"forge": True}, "forged signature"),
        ({"claims": {"exp": 1_000_000, "iat": 999_000}}, "expired"),
        ({"claims": {"aud": "someone-else.apps.example"}}, "wrong audience"),
        ({"claims": {"aud": [CLIENT_ID, "someone-else.apps.example"]}}, "several audiences, no azp"),
        ({"claims": {"aud": [CLIENT_ID, "someone-else.apps.example"], "azp": "someone-else.apps.example"}}, "azp"),
        ({"claims": {"azp": "someone-else.apps.example"}}, "issued to another party"),
        ({"claims": {"exp": str(int(time.time()) + 86400)}}, "exp a string"),
        ({"claims": {"iat": str(int(time.time()))}}, "iat a string"),
        ({"claims": {"exp": True}}, "exp a boolean"),
        ({"claims": {"iss": "https://evil.example"}}, "wrong issuer"),
        ({"claims": {"nonce": "not-the-nonce"}}, "wrong nonce"),
        ({"claims": {"nonce": None}}, "no nonce"),
        ({"claims": {"email_verified": False}}, "unverified e-mail"),
        ({"claims": {"email": None}}, "no e-mail"),
    ],
)
def test_a_bad_id_token_is_401_and_creates_nothing(gserver, provider, db, spoil, why):
    who = person()
    code, state = consent(provider, start(gserver), who)
    provider.forge = spoil.get("forge", False)
    provider.claims = spoil.get("claims", {})
    body = assert_error(callback(gserver, code, state), 401, "INVALID_CREDENTIALS")
    assert "state" not in body["error"], body  # refused for the token, not for the flow
    assert scalar(db, "SELECT COUNT(*) FROM user_identities WHERE subject = %s", (who["sub"],)) == 0, why


def test_several_audiences_are_taken_when_the_token_was_issued_to_us(gserver, provider):
    provider.claims = {"aud": ["someone-else.apps.example", CLIENT_ID], "azp": CLIENT_ID}
    r = sign_in(gserver, provider, person())
    assert r.status_code == 200, r.text


def test_state_works_once_and_only_for_its_own_flow(gserver, provider):
    code, state = consent(provider, start(gserver), person())
    assert callback(gserver, code, state).status_code == 200
    assert_error(callback(gserver, code, state), 401, "INVALID_CREDENTIALS")  # replayed
    code, _ = consent(provider, start(gserver), person())
    for forged in ["x" * 43, "", "../../etc", "a" * 256]:
        r = callback(gserver, code, forged)
        assert r.status_code in (400, 401), r.text
        assert r.json()["code"] in ("INVALID_CREDENTIALS", "VALIDATION_ERROR")


def test_a_sign_in_comes_back_only_to_the_browser_that_started_it(gserver, provider):
    """Login CSRF: an attacker stops their own sign-in at the redirect and sends the link (code and state) to a
    signed-in victim, whose page would swap the victim's session for the attacker's account. The victim's browser
    does not hold the attacker's binding secret, so the callback refuses it; the flow stays the attacker's."""
    attacker = "attacker-browser-binding-verifier-0123456789"
    code, state = consent(provider, start(gserver, attacker), person())
    body = assert_error(callback(gserver, code, state, BROWSER), 401, "INVALID_CREDENTIALS")
    assert "browser" in body["error"]
    with gserver.client() as client:
        r = client.get("/auth/google/callback", params={"code": code, "state": state})
        assert "binding_verifier" in assert_error(r, 400, "VALIDATION_ERROR")["details"]
        for bad in ("", "short", "x" * 129, "has space" * 5):
            r = client.get("/auth/google/callback", params={"code": code, "state": state, "binding_verifier": bad})
            assert_error(r, 400, "VALIDATION_ERROR")
        # Starting needs the challenge, of the right shape.
        for query in ({}, {"binding_challenge": "abc"}, {"binding_challenge": "=" * 43}):
            r = client.get("/auth/google", params=query, follow_redirects=False)
            assert "binding_challenge" in assert_error(r, 400, "VALIDATION_ERROR")["details"]
    assert callback(gserver, code, state, attacker).status_code == 200


def signed_state(flow: str, expires: int, bound_to: str = f"browser:{challenge(BROWSER)}") -> str:
    """A state as the server signs it (<flow>.<expiry>.<HMAC under the server's secret>), for states it never issued."""
    mac = hmac.new(JWT_SECRET.encode(), f"google-state:{flow}.{expires}:{bound_to}".encode(), hashlib.sha256).digest()
    return f"{flow}.{expires}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def test_a_state_is_signed_not_stored_and_refused_once_expired_or_altered(gserver, provider, redis_url):
    """Starting flows writes nothing (anyone may start as many as they like without filling Redis); a state past its
    ten minutes, or with any part changed, signs no one in."""
    store = redis.Redis.from_url(redis_url)
    # Every key the server writes starts with its REDIS_PREFIX (wallet/platform/store.py); other test sessions write
    # their own keys into the same Redis meanwhile.
    mine = gserver.env["REDIS_PREFIX"] + "*"
    before = set(store.scan_iter(match=mine))
    locations = [start(gserver) for _ in range(20)]
    assert set(store.scan_iter(match=mine)) - before == set()
    store.close()

    code, state = consent(provider, locations[0], person())
    flow, expires, mac = state.split(".")
    assert int(expires) == pytest.approx(time.time() + 600, abs=30)
    assert state == signed_state(flow, int(expires))  # the test's copy of the signature is the server's
    for altered in (
        signed_state(flow, int(time.time()) - 1),  # expired, correctly signed
        f"{flow}.{int(expires) + 3600}.{mac}",  # a later expiry under the old signature
        f"{'A' * 32}.{expires}.{mac}",  # another flow's id
        signed_state(flow, int(expires), bound_to=f"user:{uuid.uuid4()}"),  # signed for a link flow
    ):
        assert_error(callback(gserver, code, altered), 401, "INVALID_CREDENTIALS")
    assert callback(gserver, code, state).status_code == 200  # none of them used the flow up


def test_a_refused_code_is_401_and_a_provider_outage_503(gserver, provider):
    _, state = consent(provider, start(gserver), person())
    assert_error(callback(gserver, "not-a-code", state), 401, "INVALID_CREDENTIALS")
    code, state = consent(provider, start(gserver), person())
    provider.token_status = 500
    assert_error(callback(gserver, code, state), 503, "SERVICE_UNAVAILABLE")
    with gserver.client() as client:
        assert_error(
            client.get(
                "/auth/google/callback", params={"state": state, "error": "access_denied", "binding_verifier": BROWSER}
            ),
            401,
            "INVALID_CREDENTIALS",
        )
        assert_error(client.get("/auth/google/callback", params={"code": "c"}), 400, "VALIDATION_ERROR")


def test_an_e_mail_of_a_password_account_never_signs_into_it_and_its_owner_links_google(gserver, provider):
    email = f"{unique_name('victim')}@example.com"
    owner = make_user(gserver, email=email)
    google_account = {"sub": uuid.uuid4().hex, "email": email.upper()}
    body = assert_error(sign_in(gserver, provider, google_account), 409, "ALREADY_EXISTS")
    assert "password" in body["error"]
    # The owner, logged in with the password, links that Google account.
    with gserver.client(owner.token) as client:
        r = client.post("/users/me/google/start")
        assert r.status_code == 200, r.text
        code, state = consent(provider, r.json()["authorization_url"], google_account)
        linked = client.post("/users/me/google", json={"code": code, "state": state})
        assert linked.status_code == 200, linked.text
        assert linked.json()["auth_providers"] == ["password", "google"]
    r = sign_in(gserver, provider, google_account)
    assert r.status_code == 200, r.text
    assert me(gserver, r.json()["access_token"])["id"] == owner.id


def test_a_link_flow_is_bound_to_the_user_who_started_it(gserver, provider):
    alice, mallory = make_user(gserver), make_user(gserver)
    google_account = person()
    with gserver.client(alice.token) as client:
        location = client.post("/users/me/google/start").json()["authorization_url"]
    code, state = consent(provider, location, google_account)
    with gserver.client(mallory.token) as client:
        assert_error(client.post("/users/me/google", json={"code": code, "state": state}), 401, "INVALID_CREDENTIALS")
    assert_error(callback(gserver, code, state), 401, "INVALID_CREDENTIALS")  # nor does it sign anyone in
    with gserver.client(alice.token) as client:
        # An account cannot link a Google account that already belongs to another of ours.
        taken = person()
        assert sign_in(gserver, provider, taken).status_code == 200
        location = client.post("/users/me/google/start").json()["authorization_url"]
        code, state = consent(provider, location, taken)
        assert_error(client.post("/users/me/google", json={"code": code, "state": state}), 409, "ALREADY_EXISTS")


def test_a_google_account_sets_its_first_password_without_a_current_one(gserver, provider):
    r = sign_in(gserver, provider, person())
    token = r.json()["access_token"]
    user = me(gserver, token)
    with gserver.client(token) as client:
        r = client.patch("/users/me", json={"password": "first-password-1"})
        assert r.status_code == 200, r.text
        assert r.json()["auth_providers"] == ["password", "google"]
        # From now on a change needs the current password, like any account's.
        body = assert_error(client.patch("/users/me", json={"password": "second-password-2"}), 400, "VALIDATION_ERROR")
        assert "current_password" in body["details"]
    with gserver.client() as client:
        assert (
            client.post("/auth/login", json={"username": user["username"], "password": "first-password-1"}).status_code
            == 200
        )


def test_concurrent_first_sign_ins_of_one_google_account_make_one_user(gserver, provider, db):
    who = person()
    flows = [consent(provider, start(gserver), who) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda flow: callback(gserver, *flow), flows))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({me(gserver, a.json()["access_token"])["id"] for a in answers}) == 1
    assert scalar(db, "SELECT COUNT(*) FROM user_identities WHERE subject = %s", (who["sub"],)) == 1


def test_a_deactivated_google_account_cannot_sign_in(gserver, provider, database_url):
    who = person()
    user = me(gserver, sign_in(gserver, provider, who).json()["access_token"])
    admin = make_admin(gserver, database_url)
    with gserver.client(admin.token) as client:
        assert client.post(f"/admin/users/{user['id']}/deactivate", json={}).status_code == 200
    assert_error(sign_in(gserver, provider, who), 403, "ACCOUNT_INACTIVE")
