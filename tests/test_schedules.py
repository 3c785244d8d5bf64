"""Scheduled and recurring transfers through HTTP and the real scheduler: occurrences paid once each, refusals
recorded and the next occurrence still run, the month rule, pause/resume/cancel, bad input, two servers running the
scheduler at once, and kill -9 mid-occurrence and between an occurrence's payment and its record.

Each test has a database of its own (`alone`), so no other test's server runs its schedules; a schedule made "two
days ago" is one whose start_at and next_run_at the test moves back, as if the servers had been down since."""

import datetime as dt

import psycopg2
import pytest
from conftest import assert_audit_ok, assert_error, fund, make_admin, make_user, wait_for

from scripts.local_services import libpq_url
from wallet.operations.schedules import occurrence_at, occurrence_key

FAST = {"SCHEDULE_INTERVAL": "1"}
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def in_an_hour():
    """A start no scheduler runs before the test moves it (a start of now could run at once, on today's date)."""
    return iso(dt.datetime.now(dt.UTC) + HOUR)


@pytest.fixture
def db_of():
    opened = []

    def connect(url):
        conn = psycopg2.connect(libpq_url(url))
        conn.autocommit = True
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def world(alone, db_of):
    """Factory: a server (with these settings) on a database of its own, a connection to it, and a payer funded with
    `funds` and a payee."""

    def make(funds, **env):
        server = alone(**{**FAST, **env})
        payer, payee = make_user(server), make_user(server)
        fund(server, payer, funds)
        return server, db_of(alone.database_url), payer, payee

    return make


def call(server, who, method, path, body=None):
    with server.client(who.token) as client:
        return client.request(method, path, json=body)


def iso(at):
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def schedule(server, payer, payee, amount="4.00", **extra):
    body = {
        "from_wallet_id": payer.wallet_id,
        "to_username": payee.username,
        "amount": amount,
        "description": "rent",
        "start_at": iso(dt.datetime.now(dt.UTC)),
        **extra,
    }
    r = call(server, payer, "POST", "/scheduled-transfers", body)
    assert r.status_code == 201, r.text
    return r.json()


def back_in_time(db, schedule_ids, by):
    """As if the schedules had been made `by` (a timedelta) earlier and no scheduler had run since (one statement: the
    scheduler sees them all moved, or none)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE scheduled_transfers SET start_at = start_at - %(d)s, next_run_at = next_run_at - %(d)s "
            "WHERE id = ANY(%(ids)s::uuid[])",
            {"d": by, "ids": list(schedule_ids)},
        )


def read(server, who, schedule_id):
    r = call(server, who, "GET", f"/scheduled-transfers/{schedule_id}")
    assert r.status_code == 200, r.text
    return r.json()


def ran(server, who, schedule_id, runs):
    return wait_for(lambda: (s := read(server, who, schedule_id))["runs"] >= runs and s)


def balance(server, who):
    return call(server, who, "GET", f"/wallets/{who.wallet_id}/balance").json()["balance"]


def paid(db, schedule_id):
    """The COMPLETED transfers made under the schedule's occurrence keys."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT idempotency_key FROM transactions WHERE idempotency_key LIKE %s AND status = 'COMPLETED' "
            "ORDER BY idempotency_key",
            (f"scheduled-transfer:{schedule_id}:%",),
        )
        return [r[0] for r in cur.fetchall()]


def test_missed_daily_occurrences_are_each_paid_once_then_the_schedule_finishes(alone, world):
    server, db, payer, payee = world("20.00")
    made = schedule(server, payer, payee, every="day", count=3, start_at=in_an_hour())
    assert (made["status"], made["runs"], made["every"], made["count"]) == ("ACTIVE", 0, "day", 3)
    assert made["counterparty"] == {"username": payee.username, "wallet_number": payee.wallet_number}
    back_in_time(db, [made["id"]], 2 * DAY + HOUR)  # all three are due now
    done = ran(server, payer, made["id"], 3)
    assert (done["status"], done["next_run_at"], done["runs"]) == ("FINISHED", None, 3)
    occurrences = done["occurrences"]
    assert [o["occurrence"] for o in occurrences] == [2, 1, 0]  # newest first
    assert {o["status"] for o in occurrences} == {"COMPLETED"}
    start = dt.datetime.fromisoformat(occurrences[-1]["occurs_at"].replace("Z", "+00:00"))
    assert [o["occurrence_date"] for o in reversed(occurrences)] == [
        str((start + dt.timedelta(days=n)).date()) for n in range(3)
    ]
    for o in occurrences:
        tx = o["transaction"]
        assert (tx["type"], tx["status"], tx["amount"], tx["description"]) == ("TRANSFER", "COMPLETED", "4.00", "rent")
        assert (tx["source_wallet_id"], tx["destination_wallet_id"]) == (payer.wallet_id, payee.wallet_id)
    assert (balance(server, payer), balance(server, payee)) == ("8.00", "12.00")
    assert len(paid(db, made["id"])) == 3
    listed = call(server, payer, "GET", "/scheduled-transfers?status=FINISHED").json()
    assert [s["id"] for s in listed["items"]] == [made["id"]] and listed["next_cursor"] is None
    assert call(server, payee, "GET", "/scheduled-transfers").json()["items"] == []  # the payer's, not the payee's
    assert_error(call(server, payee, "GET", f"/scheduled-transfers/{made['id']}"), 404, "NOT_FOUND")
    assert_audit_ok(alone.database_url)


def test_a_refused_occurrence_is_recorded_and_the_next_one_still_runs(alone, db_of):
    server = alone(**FAST)
    db = db_of(alone.database_url)
    payer, payee, funder = make_user(server), make_user(server), make_user(server)
    fund(server, funder, "5.00")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    rent = schedule(server, payer, payee, every="day", count=2, start_at=iso(later))
    # The funder pays the payer once, half a day after the rent's first occurrence and before its second: a run
    # takes what is due in the order it fell due, one occurrence of each schedule at a time.
    gift = schedule(server, funder, payer, amount="5.00", start_at=iso(later + dt.timedelta(hours=12)))
    back_in_time(db, [rent["id"], gift["id"]], 2 * DAY)
    done = ran(server, payer, rent["id"], 2)
    second, first = done["occurrences"]
    assert (first["status"], first["failure_code"]) == ("FAILED", "INSUFFICIENT_FUNDS")  # nothing to pay it with yet
    assert first["failure_reason"].startswith("Insufficient funds")
    assert (first["transaction"]["status"], first["transaction"]["failure_code"]) == ("FAILED", "INSUFFICIENT_FUNDS")
    assert (second["status"], second["failure_code"], second["transaction"]["status"]) == (
        "COMPLETED",
        None,
        "COMPLETED",
    )
    assert (done["status"], done["runs"]) == ("FINISHED", 2)
    assert (balance(server, funder), balance(server, payer), balance(server, payee)) == ("0.00", "1.00", "4.00")
    assert_audit_ok(alone.database_url)


def test_an_occurrence_of_a_frozen_account_is_refused_and_recorded(alone):
    server = alone(**FAST)
    admin = make_admin(server, alone.database_url)
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "5.00")
    r = call(server, admin, "POST", f"/admin/users/{payer.id}/freeze", {"reason": "checks"})
    assert r.status_code == 200, r.text
    made = schedule(server, payer, payee, amount="1.00")
    done = ran(server, payer, made["id"], 1)
    assert (done["status"], done["occurrences"][0]["status"]) == ("FINISHED", "FAILED")
    assert done["occurrences"][0]["failure_code"] == "ACCOUNT_FROZEN"
    assert call(server, admin, "POST", f"/admin/users/{payer.id}/unfreeze").status_code == 200
    assert (balance(server, payer), balance(server, payee)) == ("5.00", "0.00")
    assert_audit_ok(alone.database_url)


def test_pause_resume_and_cancel(alone, world):
    server, db, payer, payee = world("50.00")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    made = schedule(server, payer, payee, amount="1.00", every="week", start_at=iso(later))
    base = f"/scheduled-transfers/{made['id']}"
    paused = call(server, payer, "POST", f"{base}/pause").json()
    assert paused["status"] == "PAUSED"
    back_in_time(db, [made["id"]], 15 * DAY)  # three weekly occurrences fell due while it was paused: none is paid
    assert read(server, payer, made["id"])["runs"] == 0
    resumed = call(server, payer, "POST", f"{base}/resume").json()
    # Resumed from the next occurrence due from now: one week after the last that fell due while paused.
    start = dt.datetime.fromisoformat(resumed["start_at"].replace("Z", "+00:00"))
    assert (resumed["status"], resumed["next_run_at"]) == ("ACTIVE", iso(start + dt.timedelta(weeks=3)))
    assert resumed["runs"] == 0 and paid(db, made["id"]) == []
    cancelled = call(server, payer, "POST", f"{base}/cancel").json()
    assert (cancelled["status"], cancelled["next_run_at"]) == ("CANCELLED", None)
    for action in ("pause", "resume", "cancel"):
        assert_error(call(server, payer, "POST", f"{base}/{action}"), 409, "SCHEDULE_NOT_ACTIVE")
    stranger = make_user(server)
    assert_error(call(server, stranger, "POST", f"{base}/pause"), 404, "NOT_FOUND")
    assert_audit_ok(alone.database_url)


def test_a_monthly_occurrence_on_a_day_the_month_lacks_falls_on_its_last_day():
    jan31 = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)
    assert [occurrence_at(jan31, "month", n).date() for n in range(4)] == [
        dt.date(2025, 1, 31),
        dt.date(2025, 2, 28),
        dt.date(2025, 3, 31),
        dt.date(2025, 4, 30),
    ]
    assert occurrence_at(dt.datetime(2023, 12, 29, tzinfo=dt.UTC), "month", 2).date() == dt.date(2024, 2, 29)
    assert occurrence_at(jan31, "week", 2) == jan31 + dt.timedelta(days=14)


def test_bad_input(alone):
    server = alone()
    payer, payee, stranger = make_user(server), make_user(server), make_user(server)
    now = dt.datetime.now(dt.UTC)
    good = {
        "from_wallet_id": payer.wallet_id,
        "to_wallet_id": payee.wallet_id,
        "amount": "1.00",
        "start_at": iso(now + dt.timedelta(minutes=5)),
    }
    for change in (
        {"start_at": iso(now - dt.timedelta(hours=1))},
        {"start_at": "tomorrow"},
        {"every": "year"},
        {"count": 3},  # repeating needs every
        {"every": "day", "count": 0},
        {"every": "day", "count": 2, "until": iso(now + dt.timedelta(days=3))},
        {"every": "day", "until": iso(now)},
        {"amount": "0"},
        {"amount": "1.001"},
        {"to_wallet_number": payee.wallet_number},  # two recipients
        {"quote_id": "00000000-0000-4000-8000-000000000000"},
        {"colour": "red"},
    ):
        assert_error(call(server, payer, "POST", "/scheduled-transfers", {**good, **change}), 400, "VALIDATION_ERROR")
    assert_error(
        call(server, payer, "POST", "/scheduled-transfers", {**good, "start_at": None}), 400, "VALIDATION_ERROR"
    )
    body = {**good, "to_wallet_id": payer.wallet_id}
    assert_error(call(server, payer, "POST", "/scheduled-transfers", body), 400, "SAME_WALLET")
    body = {**good, "from_wallet_id": stranger.wallet_id}
    assert_error(call(server, payer, "POST", "/scheduled-transfers", body), 404, "NOT_FOUND")
    body = {k: v for k, v in good.items() if k != "to_wallet_id"} | {"to_username": "nobody_here"}
    assert_error(call(server, payer, "POST", "/scheduled-transfers", body), 404, "NOT_FOUND")
    assert_error(call(server, payer, "GET", "/scheduled-transfers/nope"), 400, "VALIDATION_ERROR")
    assert_error(call(server, payer, "GET", "/scheduled-transfers?status=DONE"), 400, "VALIDATION_ERROR")
    r = call(server, payer, "POST", "/scheduled-transfers", good)
    assert r.status_code == 201 and r.json()["every"] is None and r.json()["next_run_at"] == good["start_at"]


def test_two_servers_running_the_scheduler_pay_each_occurrence_once(alone, db_of):
    first = alone(**FAST)
    second = alone(**FAST)
    db = db_of(alone.database_url)
    payers = [make_user(first) for _ in range(6)]
    payee = make_user(first)
    made = []
    for payer in payers:
        fund(first, payer, "10.00")
        made.append(schedule(first, payer, payee, amount="1.00", every="day", count=3, start_at=in_an_hour()))
    back_in_time(db, [s["id"] for s in made], 2 * DAY + HOUR)
    for payer, s in zip(payers, made, strict=True):
        assert ran(second, payer, s["id"], 3)["status"] == "FINISHED"
        assert len(paid(db, s["id"])) == 3, [
            (o["occurrence"], o["status"], o["failure_code"], o["failure_reason"])
            for o in read(first, payer, s["id"])["occurrences"]
        ]
    assert [balance(first, p) for p in payers] == ["7.00"] * len(payers)
    assert balance(first, payee) == f"{3 * len(payers)}.00"
    assert_audit_ok(alone.database_url)


def test_kill_9_mid_occurrence_then_restart_pays_it_once(alone, world):
    settings = {**FAST, "PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1"}
    server, db, payer, payee = world("10.00", **settings)
    # The payer's wallet row locked as an execution would hold it: the occurrence is recorded PENDING and waits.
    blocker = psycopg2.connect(libpq_url(alone.database_url))
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (payer.wallet_id,))
    made = schedule(server, payer, payee, amount="3.00")
    key = occurrence_key(made["id"], dt.datetime.fromisoformat(made["start_at"].replace("Z", "+00:00")))

    def pending():
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions WHERE idempotency_key = %s AND status = 'PENDING'", (key,))
            return cur.fetchone()[0] == 1

    wait_for(pending)
    server.kill()
    blocker.rollback()
    blocker.close()

    restarted = alone(**settings)
    done = ran(restarted, payer, made["id"], 1)  # the restart takes the abandoned attempt over
    assert (done["status"], done["occurrences"][0]["status"]) == ("FINISHED", "COMPLETED")
    assert paid(db, made["id"]) == [key]
    assert (balance(restarted, payer), balance(restarted, payee)) == ("7.00", "3.00")
    assert_audit_ok(alone.database_url)


def test_a_crash_between_the_payment_and_its_record_pays_nothing_more(alone, world):
    server, db, payer, payee = world("10.00")
    made = schedule(server, payer, payee, amount="2.00", every="day", count=2)
    ran(server, payer, made["id"], 1)
    server.kill()
    # What a process killed after the transfer's commit and before the schedule's advance leaves behind.
    with db.cursor() as cur:
        cur.execute("DELETE FROM scheduled_occurrences WHERE schedule_id = %s", (made["id"],))
        cur.execute(
            "UPDATE scheduled_transfers SET next_index = 0, runs = 0, next_run_at = start_at WHERE id = %s",
            (made["id"],),
        )
    restarted = alone(**FAST)
    again = ran(restarted, payer, made["id"], 1)
    assert again["occurrences"][0]["status"] == "COMPLETED"  # the replay of the transfer already made
    assert len(paid(db, made["id"])) == 1
    assert (balance(restarted, payer), balance(restarted, payee)) == ("8.00", "2.00")
    assert_audit_ok(alone.database_url)
