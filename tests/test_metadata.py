"""Metadata on money operations through HTTP: kept and returned, part of the idempotency hash, filtered in history
(metadata[KEY]=VALUE), and bad metadata refused."""

import pytest
from conftest import assert_error, fund, in_parallel, make_user, scalar, unique_name

pytestmark = pytest.mark.usefixtures("ledger_audited")


def send(client, payer, payee, amount, metadata, key=None):
    body = {"from_wallet_id": payer.wallet_id, "to_username": payee.username, "amount": amount, "metadata": metadata}
    return client.post("/transfers", json=body, headers={"Idempotency-Key": key} if key else {})


def test_every_money_operation_keeps_its_metadata_and_history_filters_by_it(server):
    payer, payee = make_user(server), make_user(server)
    with server.client(payer.token) as client:
        r = client.post(f"/wallets/{payer.wallet_id}/deposit", json={"amount": "30", "metadata": {"source": "atm"}})
        assert r.status_code == 201 and r.json()["metadata"] == {"source": "atm"}, r.text
        r = client.post(f"/wallets/{payer.wallet_id}/withdraw", json={"amount": "1", "metadata": {"order_id": "9"}})
        assert r.status_code == 201 and r.json()["metadata"] == {"order_id": "9"}, r.text
        op = {"operation_type": "WITHDRAW", "amount": "1", "metadata": {"order_id": "8"}}
        assert client.post(f"/wallets/{payer.wallet_id}/operation", json=op).status_code == 200
        tagged = send(client, payer, payee, "2.00", {"order_id": "123", "shop": "north"}).json()
        assert tagged["metadata"] == {"order_id": "123", "shop": "north"}
        plain = send(client, payer, payee, "3.00", None).json()
        assert plain["metadata"] == {}
        assert client.get(f"/transactions/{tagged['id']}").json()["metadata"] == tagged["metadata"]

        def ids(**params):
            r = client.get("/transactions", params=params)
            assert r.status_code == 200, r.text
            return [t["id"] for t in r.json()["items"]]

        assert ids(**{"metadata[order_id]": "123"}) == [tagged["id"]]
        assert ids(**{"metadata[order_id]": "123", "metadata[shop]": "north"}) == [tagged["id"]]
        assert ids(**{"metadata[order_id]": "123", "metadata[shop]": "south"}) == []
        assert len(ids(**{"metadata[order_id]": "9", "type": "WITHDRAWAL"})) == 1
        assert_error(client.get("/transactions", params={"metadata": "x"}), 400, "VALIDATION_ERROR")
    with server.client(payee.token) as client:  # the payee sees the labels of what reached them
        r = client.get("/transactions", params={"metadata[shop]": "north"})
        assert [t["id"] for t in r.json()["items"]] == [tagged["id"]]


def test_metadata_is_part_of_the_idempotency_hash(server, db):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "20.00")
    key = unique_name("meta")
    with server.client(payer.token) as client:
        first = send(client, payer, payee, "1.00", {"order_id": "1"}, key)
        again = send(client, payer, payee, "1.00", {"order_id": "1"}, key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
        assert_error(send(client, payer, payee, "1.00", {"order_id": "2"}, key), 422, "IDEMPOTENCY_MISMATCH")
        assert_error(send(client, payer, payee, "1.00", None, key), 422, "IDEMPOTENCY_MISMATCH")

    # Two at once with one key and different metadata: one transfer, the other told so.
    key = unique_name("race")

    def attempt(i):
        with server.client(payer.token) as client:
            return send(client, payer, payee, "1.00", {"n": str(i)}, key)

    answers = in_parallel(2, attempt)
    codes = sorted(a.status_code for a in answers)
    assert codes[0] == 201 and codes[1] in (409, 422), [a.text for a in answers]
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE idempotency_key = %s", (key,)) == 1


def test_bad_metadata_is_a_clear_400(server):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "5.00")
    with server.client(payer.token) as client:
        for metadata in (
            {f"k{i}": "v" for i in range(21)},
            {"k" * 41: "v"},
            {"": "v"},
            {"k": "v" * 501},
            {"k": 1},
            {"k": {"nested": "no"}},
            {"k": None},
            ["not", "an", "object"],
            "text",
        ):
            error = assert_error(send(client, payer, payee, "1.00", metadata), 400, "VALIDATION_ERROR")
            assert "metadata" in error["details"], error
        limits = {f"k{i:02}" + "k" * 37: "v" * 500 for i in range(20)}  # exactly at every limit
        r = send(client, payer, payee, "1.00", limits)
        assert r.status_code == 201 and r.json()["metadata"] == limits, r.text


def test_a_payment_request_pay_keeps_its_metadata(server):
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "5.00")
    with server.client(payee.token) as client:
        asked = client.post("/payment-requests", json={"to_username": payer.username, "amount": "2", "currency": "USD"})
    with server.client(payer.token) as client:
        r = client.post(
            f"/payment-requests/{asked.json()['id']}/pay",
            json={"from_wallet_id": payer.wallet_id, "metadata": {"invoice": "A-7"}},
        )
        assert r.status_code == 201 and r.json()["metadata"] == {"invoice": "A-7"}, r.text
        listed = client.get("/transactions", params={"metadata[invoice]": "A-7"}).json()["items"]
        assert [t["id"] for t in listed] == [r.json()["id"]]
