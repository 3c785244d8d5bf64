"""Holds through HTTP: place, read, capture (in parts), void, expire; refusals, races, and a kill -9 mid-capture."""

import time

import pytest
from conftest import (
    assert_error,
    balance,
    fund,
    in_parallel,
    kill_mid_execution,
    make_user,
    recorded,
    resend_while_in_progress,
    scalar,
    unique_name,
)

RECOVERY = {"PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1", "DB_POOL_SIZE": "8"}


# The ledger audit (balances, entries, held totals, captured amounts) passes after every test.
pytestmark = pytest.mark.usefixtures("ledger_audited")


def place(server, payer, payee, amount, key=None, **extra):
    body = {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": amount, **extra}
    with server.client(payer.token) as client:
        return client.post("/holds", json=body, headers={"Idempotency-Key": key} if key else {})


def placed(server, payer, payee, amount, **extra):
    r = place(server, payer, payee, amount, **extra)
    assert r.status_code == 201, r.text
    return r.json()


def capture(server, who, hold_id, key=None, **body):
    with server.client(who.token) as client:
        return client.post(f"/holds/{hold_id}/capture", json=body, headers={"Idempotency-Key": key} if key else {})


def void(server, who, hold_id):
    with server.client(who.token) as client:
        return client.post(f"/holds/{hold_id}/void")


def get_hold(server, who, hold_id):
    with server.client(who.token) as client:
        return client.get(f"/holds/{hold_id}")


def available(server, user):
    with server.client(user.token) as client:
        r = client.get(f"/wallets/{user.wallet_id}/balance")
        assert r.status_code == 200, r.text
        return r.json()["balance"], r.json()["available_balance"]


def test_a_hold_reserves_then_captures_in_parts_and_the_final_capture_releases_the_rest(server):
    payer, payee, stranger = make_user(server), make_user(server), make_user(server)
    fund(server, payer, "100.00")
    hold = placed(server, payer, payee, "30.00", description="room 12")
    assert hold["status"] == "ACTIVE" and hold["amount"] == "30.00" and hold["captured_amount"] == "0.00"
    assert (hold["from_wallet_id"], hold["to_wallet_id"], hold["currency"]) == (payer.wallet_id, payee.wallet_id, "USD")
    assert available(server, payer) == ("100.00", "70.00")
    with server.client(payer.token) as client:
        assert client.get(f"/wallets/{payer.wallet_id}").json()["available_balance"] == "70.00"

    # Payer and payee see it; anyone else is told it does not exist.
    assert get_hold(server, payee, hold["id"]).json() == hold
    assert_error(get_hold(server, stranger, hold["id"]), 404, "NOT_FOUND")
    assert_error(capture(server, stranger, hold["id"]), 404, "NOT_FOUND")
    assert_error(void(server, stranger, hold["id"]), 404, "NOT_FOUND")

    first = capture(server, payee, hold["id"], amount="10.00", final=False)
    assert first.status_code == 201, first.text
    tx = first.json()
    assert (tx["type"], tx["status"], tx["amount"], tx["hold_id"]) == ("TRANSFER", "COMPLETED", "10.00", hold["id"])
    assert (tx["source_wallet_id"], tx["destination_wallet_id"]) == (payer.wallet_id, payee.wallet_id)
    assert available(server, payer) == ("90.00", "70.00")  # the capture spent reserved money only
    assert get_hold(server, payer, hold["id"]).json()["remaining_amount"] == "20.00"

    final = capture(server, payer, hold["id"], amount="5.00")  # final by default: the other 15.00 are released
    assert final.status_code == 201, final.text
    after = get_hold(server, payee, hold["id"]).json()
    assert (after["status"], after["captured_amount"], after["remaining_amount"]) == ("CAPTURED", "15.00", "0.00")
    assert available(server, payer) == ("85.00", "85.00")
    assert balance(server, payee) == "15.00"
    assert_error(capture(server, payee, hold["id"]), 409, "HOLD_NOT_ACTIVE")
    assert_error(void(server, payee, hold["id"]), 409, "HOLD_NOT_ACTIVE")


def test_payer_and_payee_are_told_of_each_change_of_a_hold(server):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    captured, voided = placed(server, payer, payee, "3.00"), placed(server, payer, payee, "4.00")
    assert capture(server, payee, captured["id"], amount="1.00").status_code == 201
    assert void(server, payer, voided["id"]).status_code == 200
    for user in (payer, payee):
        with server.client(user.token) as client:
            seen = [(e["type"], e["data"]["id"]) for e in client.get("/events").json()["items"] if "hold" in e["type"]]
        assert seen == [
            ("hold.created", captured["id"]),
            ("hold.created", voided["id"]),
            ("hold.captured", captured["id"]),
            ("hold.released", voided["id"]),
        ]


def test_capture_defaults_to_all_that_remains_and_a_void_releases_it(server):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "50.00")
    whole = placed(server, payer, payee, "20.00")
    r = capture(server, payee, whole["id"])
    assert r.status_code == 201 and r.json()["amount"] == "20.00", r.text
    voided = placed(server, payer, payee, "12.50")
    r = void(server, payee, voided["id"])
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["remaining_amount"]) == ("VOIDED", "0.00")
    assert available(server, payer) == ("30.00", "30.00")
    assert_error(capture(server, payer, voided["id"]), 409, "HOLD_NOT_ACTIVE")


def test_listing_filters_by_wallet_and_status(server):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    kept, dropped = placed(server, payer, payee, "1.00"), placed(server, payer, payee, "2.00")
    assert void(server, payer, dropped["id"]).status_code == 200
    with server.client(payee.token) as client:
        listed = client.get("/holds", params={"wallet_id": payee.wallet_id}).json()["items"]
        assert [h["id"] for h in listed] == [dropped["id"], kept["id"]]  # newest first
        active = client.get("/holds", params={"status": "ACTIVE"}).json()["items"]
        assert [h["id"] for h in active] == [kept["id"]]
        assert_error(client.get("/holds", params={"wallet_id": payer.wallet_id}), 404, "NOT_FOUND")
        assert_error(client.get("/holds", params={"status": "OPEN"}), 400, "VALIDATION_ERROR")
        # Paged by cursor like every list: one per page, newest first, then the end.
        first = client.get("/holds", params={"wallet_id": payee.wallet_id, "limit": 1}).json()
        assert [h["id"] for h in first["items"]] == [dropped["id"]] and first["next_cursor"]
        second = client.get("/holds", params={"wallet_id": payee.wallet_id, "limit": 1, "cursor": first["next_cursor"]})
        assert [h["id"] for h in second.json()["items"]] == [kept["id"]] and second.json()["next_cursor"] is None
        assert_error(client.get("/holds", params={"cursor": "not-a-cursor"}), 400, "VALIDATION_ERROR")


def test_refusals_and_bad_input(server, admin, db):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    assert_error(place(server, payer, payee, "10.01"), 400, "INSUFFICIENT_FUNDS")
    hold = placed(server, payer, payee, "8.00")
    # The held amount is no longer available: to another hold, a withdrawal or a transfer.
    assert_error(place(server, payer, payee, "2.01"), 400, "INSUFFICIENT_FUNDS")
    with server.client(payer.token) as client:
        refused = assert_error(
            client.post(f"/wallets/{payer.wallet_id}/withdraw", json={"amount": "2.01"}), 400, "INSUFFICIENT_FUNDS"
        )
        assert "available balance is 2.00" in refused["error"]
        for body in (
            {"from_wallet_id": payer.wallet_id, "amount": "1"},
            {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "to_wallet_number": "1", "amount": 1},
            {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "1", "expires_in": 59},
            {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "1", "expires_in": 604801},
            {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "-1"},
        ):
            assert_error(client.post("/holds", json=body), 400, "VALIDATION_ERROR")
        assert_error(client.post("/holds/not-a-uuid/capture", json={}), 400, "VALIDATION_ERROR")
        assert_error(client.post(f"/holds/{hold['id']}/capture", json={"final": "maybe"}), 400, "VALIDATION_ERROR")
        by_number = {"from_wallet_id": payer.wallet_id, "to_wallet_number": payee.wallet_number, "amount": "1"}
        r = client.post("/holds", json=by_number)
        assert r.status_code == 201 and r.json()["to_wallet_id"] == payee.wallet_id, r.text
        assert void(server, payer, r.json()["id"]).status_code == 200

    exceeded = assert_error(capture(server, payee, hold["id"], amount="8.01"), 400, "HOLD_EXCEEDED")
    assert recorded(db, exceeded["transaction_id"]) == ("FAILED", "HOLD_EXCEEDED", 0, 0)

    # Freezing either account blocks captures, recorded FAILED like other refusals; unfreezing restores them.
    for frozen in (payer, payee):
        with server.client(admin.token) as client:
            assert client.post(f"/admin/users/{frozen.id}/freeze", json={"reason": "review"}).status_code == 200
        refused = assert_error(capture(server, payee, hold["id"], amount="1.00", final=False), 403, "ACCOUNT_FROZEN")
        assert recorded(db, refused["transaction_id"]) == ("FAILED", "ACCOUNT_FROZEN", 0, 0)
        with server.client(admin.token) as client:
            assert client.post(f"/admin/users/{frozen.id}/unfreeze").status_code == 200
    assert capture(server, payee, hold["id"]).status_code == 201
    assert available(server, payer) == ("2.00", "2.00")


def test_place_and_capture_are_idempotent_by_key(server):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    key = unique_name("hold")
    first, again = place(server, payer, payee, "4.00", key), place(server, payer, payee, "4.00", key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert_error(place(server, payer, payee, "5.00", key), 422, "IDEMPOTENCY_MISMATCH")
    assert available(server, payer) == ("10.00", "6.00")

    hold_id, key = first.json()["id"], unique_name("capture")
    once, twice = capture(server, payee, hold_id, key), capture(server, payee, hold_id, key)
    assert (once.status_code, twice.status_code) == (201, 201)
    assert twice.json()["id"] == once.json()["id"] and twice.headers["Idempotent-Replayed"] == "true"
    assert (balance(server, payer), balance(server, payee)) == ("6.00", "4.00")


def test_expired_holds_are_refused_and_the_sweep_releases_them(own_server, db):
    server = own_server(**RECOVERY)
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    hold = placed(server, payer, payee, "6.00", expires_in=60)
    with db.cursor() as cur:  # a minute is the shortest expiry the API takes: move this one's into the past
        cur.execute("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = %s", (hold["id"],))
    assert_error(capture(server, payee, hold["id"]), 409, "HOLD_NOT_ACTIVE")  # even before the sweep ran
    deadline = time.monotonic() + 15
    while get_hold(server, payer, hold["id"]).json()["status"] == "ACTIVE" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get_hold(server, payer, hold["id"]).json()["status"] == "EXPIRED"
    assert available(server, payer) == ("10.00", "10.00")
    assert_error(void(server, payer, hold["id"]), 409, "HOLD_NOT_ACTIVE")


def test_the_daily_transfer_limit_counts_a_hold_when_it_is_captured(own_server, db):
    server = own_server(DAILY_TRANSFER_LIMIT="10.00")
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "50.00")
    hold = placed(server, payer, payee, "15.00")  # placing is not spending: the limit is not touched
    over = assert_error(capture(server, payee, hold["id"]), 400, "DAILY_LIMIT_EXCEEDED")
    assert recorded(db, over["transaction_id"]) == ("FAILED", "DAILY_LIMIT_EXCEEDED", 0, 0)
    assert capture(server, payee, hold["id"], amount="8.00", final=False).status_code == 201
    with server.client(payer.token) as client:
        transfer = {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "2.01"}
        assert_error(client.post("/transfers", json=transfer), 400, "DAILY_LIMIT_EXCEEDED")
    assert void(server, payer, hold["id"]).status_code == 200
    assert available(server, payer) == ("42.00", "42.00")


# ---- races ----------------------------------------------------------------------------------------------------


def test_two_captures_racing_for_the_last_of_a_hold_move_it_once(server, db):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "50.00")
    for _ in range(5):
        hold = placed(server, payer, payee, "10.00")
        answers = in_parallel(
            2, lambda i, h=hold: capture(server, payee if i else payer, h["id"], amount="6.00", final=False)
        )
        assert sorted(r.status_code for r in answers) == [201, 400], [r.text for r in answers]
        assert (
            scalar(db, "SELECT COUNT(*) FROM transactions WHERE hold_id = %s AND status = 'COMPLETED'", (hold["id"],))
            == 1
        )
    assert available(server, payer) == ("20.00", "0.00")  # five captures of 6.00; each hold's other 4.00 still held


def test_a_capture_racing_a_void_wins_or_loses_whole(server):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "50.00")
    captured = 0
    for _ in range(6):
        hold = placed(server, payer, payee, "5.00")
        r_capture, r_void = in_parallel(
            2, lambda i, h=hold: capture(server, payee, h["id"]) if i == 0 else void(server, payer, h["id"])
        )
        assert sorted((r_capture.status_code, r_void.status_code)) in ([200, 409], [201, 409]), (r_capture, r_void)
        status = get_hold(server, payer, hold["id"]).json()["status"]
        assert status == ("CAPTURED" if r_capture.status_code == 201 else "VOIDED")
        captured += 5 * (r_capture.status_code == 201)
    assert available(server, payer) == (f"{50 - captured}.00", f"{50 - captured}.00")
    assert balance(server, payee) == f"{captured}.00"


def test_a_capture_racing_the_expiry_sweep_either_moves_or_expires(own_server, db):
    server = own_server(**RECOVERY)
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "40.00")
    holds = [placed(server, payer, payee, "4.00") for _ in range(8)]
    with db.cursor() as cur:  # all due within the next second or so: the sweep (every second) and captures meet
        cur.execute(
            "UPDATE holds SET expires_at = now() + (random() * interval '1 second') WHERE id = ANY(%s::uuid[])",
            ([h["id"] for h in holds],),
        )
    answers = in_parallel(len(holds), lambda i: (time.sleep(i * 0.15), capture(server, payee, holds[i]["id"]))[1])
    time.sleep(2.5)  # let the sweep finish the rest
    moved = 0
    for hold, r in zip(holds, answers, strict=True):
        status = get_hold(server, payer, hold["id"]).json()["status"]
        if r.status_code == 201:
            assert status == "CAPTURED"
            moved += 4
        else:
            assert_error(r, 409, "HOLD_NOT_ACTIVE")
            assert status == "EXPIRED"
    assert available(server, payer) == (f"{40 - moved}.00", f"{40 - moved}.00")
    assert balance(server, payee) == f"{moved}.00"


def test_a_withdrawal_racing_a_new_hold_for_the_same_funds_never_both(server):
    payer, payee = make_user(server), make_user(server)
    for _ in range(6):
        fund(server, payer, "10.00")

        def race(i):
            if i == 0:
                return place(server, payer, payee, "10.00")
            with server.client(payer.token) as client:
                return client.post(f"/wallets/{payer.wallet_id}/withdraw", json={"amount": "10.00"})

        answers = in_parallel(2, race)
        assert sorted(r.status_code for r in answers) == [201, 400], [r.text for r in answers]
        assert_error(next(r for r in answers if r.status_code == 400), 400, "INSUFFICIENT_FUNDS")
        held = answers[0].status_code == 201
        assert available(server, payer) == ("10.00" if held else "0.00", "0.00")
        if held:
            assert void(server, payer, answers[0].json()["id"]).status_code == 200
            with server.client(payer.token) as client:
                assert client.post(f"/wallets/{payer.wallet_id}/withdraw", json={"amount": "10.00"}).status_code == 201


# ---- crash --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_capture_cut_off_by_kill_9_runs_exactly_once_when_retried(own_server, db):
    doomed = own_server(**RECOVERY)
    payer, payee = make_user(doomed), make_user(doomed)
    fund(doomed, payer, "20.00")
    hold = placed(doomed, payer, payee, "7.00")
    key = unique_name("cut")

    # The capture is recorded PENDING and waits for the payer's wallet lock when the server is killed.
    pending = f"SELECT COUNT(*) FROM transactions WHERE hold_id = '{hold['id']}' AND status = 'PENDING'"
    kill_mid_execution(doomed, db, payer.wallet_id, lambda: capture(doomed, payee, hold["id"], key), pending)

    restarted = own_server(**RECOVERY)
    r = resend_while_in_progress(lambda: capture(restarted, payee, hold["id"], key))
    assert r.status_code == 201 and r.json()["hold_id"] == hold["id"], r.text
    replay = capture(restarted, payee, hold["id"], key)
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert recorded(db, r.json()["id"]) == ("COMPLETED", None, 2, 0)
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE hold_id = %s", (hold["id"],)) == 1
    assert get_hold(restarted, payer, hold["id"]).json()["status"] == "CAPTURED"
    assert available(restarted, payer) == ("13.00", "13.00")
    assert balance(restarted, payee) == "7.00"
