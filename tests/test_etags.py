"""ETags on balance, wallet and history reads: 304 while nothing changed, a new answer as soon as anything did."""

import pytest
from conftest import fund, make_user


@pytest.mark.parametrize("path", ["/wallets/{w}/balance", "/wallets/{w}", "/wallets/{w}/transactions", "/transactions"])
def test_304_until_the_state_changes_then_the_new_state(server, path):
    alice, bob = make_user(server), make_user(server)
    fund(server, alice, "5.00")
    url = path.format(w=alice.wallet_id)
    with server.client(alice.token) as client:
        first = client.get(url)
        assert first.status_code == 200
        tag = first.headers["ETag"]
        assert first.headers["Cache-Control"] == "private, no-cache"
        again = client.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["ETag"] == tag
        assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200
        # A refused transfer changes no balance but adds a FAILED row to the history; a completed one changes both.
        for amount in ("50.00", "1.00"):
            client.post(
                "/transfers", json={"from_wallet_id": alice.wallet_id, "to_wallet_id": bob.wallet_id, "amount": amount}
            )
            changed = client.get(url, headers={"If-None-Match": tag})
            if amount == "50.00" and "transactions" not in url:
                assert changed.status_code == 304
                continue
            assert changed.status_code == 200 and changed.headers["ETag"] != tag
            assert changed.json() == client.get(url).json()
            tag = changed.headers["ETag"]
    with server.client(bob.token) as client:
        # Another user's view of the same path is theirs: never a 304 on alice's tag.
        assert client.get(path.format(w=bob.wallet_id), headers={"If-None-Match": tag}).status_code == 200


def test_writes_and_errors_carry_no_etag(server, user):
    with server.client(user.token) as client:
        r = client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "1.00"})
        assert r.status_code == 201 and "ETag" not in r.headers and r.headers["Cache-Control"] == "no-store"
        missing = client.get("/wallets/00000000-0000-4000-8000-000000000000/balance")
        assert missing.status_code == 404 and "ETag" not in missing.headers
