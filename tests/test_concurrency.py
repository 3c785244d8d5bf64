"""Money under concurrency: the bank invariant, no deadlocks, idempotency and daily limits with racing clients."""

import contextlib
import datetime as dt
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg2
import pytest
import test_paystack
from conftest import balance, fund, in_parallel, log_in, make_user, run_audit, scalar, unique_name, wait_for

from scripts.local_services import libpq_url

fake = test_paystack.fake  # the fake Paystack the payouts go through (a real local server, once per module)

CLIENTS = 16
WALLETS = 20
OPERATIONS = 2000
# Per request: a stuck lock fails the test in seconds instead of hanging it.
TIMEOUT = 15


@pytest.mark.slow
def test_bank_invariant(own_server, database_url, db, admin_username, fake):
    """Random transfers, deposits, withdrawals, holds (captured in part or whole, or voided), FX transfers and payouts
    to banks (through the fake Paystack, then sent, failed, or sent and returned) from racing clients, scheduled
    transfers falling due, and an admin reversing parts of completed ones, each with an Idempotency-Key it resends
    until a definite answer; midway the server is killed -9 and started again. Money is conserved in every currency,
    every key ran once, every payout was sent once and settled as Paystack said, every occurrence paid once, and what
    holds reserve and what was reversed match them (the audit)."""
    settings = {"DB_POOL_SIZE": "8", "FX_QUOTE_TTL": "600", "SCHEDULE_INTERVAL": "1"}
    # With PENDING_TIMEOUT 2 s and RECOVERY_INTERVAL 1 s (paystack_env's).
    server = own_server(**settings, **test_paystack.paystack_env(fake))
    fake.configure(transfer_outcome="pending", webhook_url=f"{server.url}/api/v1/webhooks/paystack")
    users = [make_user(server) for _ in range(WALLETS)]
    for u in users:
        fund(server, u, "50.00")
    wallet_ids = tuple(u.wallet_id for u in users)
    # FX: every user also holds a EUR wallet; an "fx" operation quotes USD -> EUR or EUR -> USD between two users
    # and sends the quote. Each touches exactly one USD wallet, so the USD counts below hold as they are.
    admin = log_in(server, admin_username)
    for base, quote, rate in (("USD", "EUR", "0.9137"), ("EUR", "USD", "1.0921")):
        put = {"rate": rate, "spread": "0.003"}
        with server.client(admin.token) as client:
            assert client.put(f"/admin/fx-rates/{base}/{quote}", json=put).status_code == 200
    eur = {}
    for u in users:
        with server.client(u.token) as client:
            eur[u.id] = client.post("/wallets", json={"currency": "EUR"}).json()["id"]
        fund(server, u, "50.00", eur[u.id])
    # Payouts: every user also holds an NGN wallet and a payout account; a "payout" operation sends part of it to the
    # bank, and the bank's side (below) ends each transfer as sent, failed, or sent and then returned.
    ngn, accounts = {}, {}
    for i, u in enumerate(users):
        with server.client(u.token) as client:
            ngn[u.id] = client.post("/wallets", json={"currency": "NGN"}).json()["id"]
            added = client.post(
                "/payout-accounts", json={"bank_code": "058", "account_number": f"55{i:08d}", "currency": "NGN"}
            )
            accounts[u.id] = added.json()["id"]
        fund(server, u, "50.00", ngn[u.id])
    # Scheduled transfers: daily, three occurrences, all already due (made to start in an hour, then moved back as if
    # made two days ago, so that none ran before), paid by the scheduler while the clients race and through the kill.
    schedules = []
    for i, u in enumerate(users[:10]):
        body = {
            "from_wallet_id": u.wallet_id,
            "to_wallet_id": users[i + 1].wallet_id,
            "amount": "3.00",
            "start_at": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
            "every": "day",
            "count": 3,
        }
        with server.client(u.token) as client:
            schedules.append(client.post("/scheduled-transfers", json=body).json()["id"])
    with db.cursor() as cur:
        cur.execute(
            "UPDATE scheduled_transfers SET start_at = start_at - interval '2 days 1 hour', "
            "next_run_at = next_run_at - interval '2 days 1 hour' WHERE id = ANY(%s::uuid[])",
            (schedules,),
        )
    references, payout_keys = [], []
    fx_before = {
        c: scalar(db, "SELECT balance FROM wallets WHERE is_fx AND currency = %s", (c,)) for c in ("USD", "EUR")
    }
    per_client = OPERATIONS // CLIENTS
    answered, retried = Counter(), Counter()
    voided = []

    def definite(client, path, body, headers):
        """Resend the same key through the kill and the restart until the answer is not 'try again'."""
        while True:
            try:
                r = client.post(path, json=body, headers=headers, timeout=TIMEOUT)
            except httpx.TransportError:  # the server is down
                retried["no answer"] += 1
            else:
                if r.status_code not in (409, 503):
                    return r
                retried[r.json()["code"]] += 1
            time.sleep(0.1)

    def void(client, hold_id, headers):
        """A void has no key: resend it through the kill; HOLD_NOT_ACTIVE then means an earlier attempt voided it."""
        while True:
            try:
                r = client.post(f"/holds/{hold_id}/void", headers=headers, timeout=TIMEOUT)
            except httpx.TransportError:
                retried["no answer"] += 1
            else:
                if r.status_code == 200 or r.json()["code"] == "HOLD_NOT_ACTIVE":
                    voided.append(hold_id)
                    return
                retried[r.json()["code"]] += 1
            time.sleep(0.1)

    def hold_run(client, rng, me, to, amount, outcomes, hold_keys, keys):
        """Place a hold, then capture part or all of it (a keyed transfer) or void it."""
        hold_keys.append(unique_name("hold"))
        body = {"from_wallet_id": me.wallet_id, "to_wallet_id": to.wallet_id, "amount": amount}
        r = definite(client, "/holds", body, {**me.headers, "Idempotency-Key": hold_keys[-1]})
        outcomes[("hold", r.status_code, r.json().get("code"))] += 1
        if r.status_code != 201:
            return
        hold_id, who = r.json()["id"], rng.choice([me, to])
        if rng.random() < 0.3:
            void(client, hold_id, who.headers)
            outcomes[("void", 200, None)] += 1
            return
        keys.append(unique_name("capture"))
        body = {"amount": f"{rng.randint(1, int(float(amount) * 100)) / 100:.2f}", "final": rng.random() < 0.7}
        r = definite(client, f"/holds/{hold_id}/capture", body, {**who.headers, "Idempotency-Key": keys[-1]})
        outcomes[("capture", r.status_code, r.json().get("code"))] += 1

    def client_run(i):
        rng = random.Random(i)
        outcomes, keys, hold_keys = Counter(), [], []
        with server.client() as client:
            for _ in range(per_client):
                me = rng.choice(users)
                amount = f"{rng.randint(1, 4000) / 100:.2f}"
                kind = rng.choices(
                    ["transfer", "deposit", "withdraw", "hold", "fx", "payout"], weights=[6, 2, 2, 1, 1, 1]
                )[0]
                if kind == "payout":
                    payout_keys.append(unique_name("payout"))
                    body = {"payout_account_id": accounts[me.id], "amount": f"{rng.randint(1, 2000) / 100:.2f}"}
                    headers = {**me.headers, "Idempotency-Key": payout_keys[-1]}
                    r = definite(client, f"/wallets/{ngn[me.id]}/payouts", body, headers)
                    outcomes[(kind, r.status_code, r.json().get("code"))] += 1
                    if r.status_code == 201:
                        references.append(r.json()["provider_reference"])
                    answered["all"] += 1
                    continue
                if kind == "hold":
                    hold_run(
                        client,
                        rng,
                        me,
                        rng.choice([u for u in users if u is not me]),
                        amount,
                        outcomes,
                        hold_keys,
                        keys,
                    )
                    answered["all"] += 1
                    continue
                if kind == "fx":
                    to = rng.choice([u for u in users if u is not me])
                    source, target = rng.choice([(me.wallet_id, eur[to.id]), (eur[me.id], to.wallet_id)])
                    # At least 1.00: a cent would convert to less than a cent, which no quote can offer.
                    ask = {
                        "from_wallet_id": source,
                        "to_wallet_id": target,
                        "source_amount": f"{rng.randint(1, 40)}.00",
                    }
                    q = definite(client, "/fx/quotes", ask, me.headers).json()
                    path, body = "/transfers", {"from_wallet_id": source, "to_wallet_id": target, "quote_id": q["id"]}
                    keys.append(unique_name("fx"))
                    r = definite(client, path, body, {**me.headers, "Idempotency-Key": keys[-1]})
                    outcomes[(kind, r.status_code, r.json().get("code"))] += 1
                    answered["all"] += 1
                    continue
                if kind == "transfer":
                    to = rng.choice([u for u in users if u is not me])
                    path, body = "/transfers", {"from_wallet_id": me.wallet_id, "to_wallet_id": to.wallet_id}
                else:
                    path, body = f"/wallets/{me.wallet_id}/{kind}", {}
                keys.append(unique_name("bank"))
                r = definite(client, path, {**body, "amount": amount}, {**me.headers, "Idempotency-Key": keys[-1]})
                outcomes[(kind, r.status_code, r.json().get("code"))] += 1
                answered["all"] += 1
        return outcomes, keys, hold_keys

    # Reversals (wallet/operations/reversals.py): an admin gives back random parts of completed operations while the
    # clients race. Always with an amount, so that every refusal (over-reversal, money gone) is a FAILED row like the
    # others.
    clients_done = threading.Event()
    reversing = {"outcomes": Counter(), "keys": []}

    def admin_run():
        rng, picker = random.Random(-1), psycopg2.connect(db.dsn)
        picker.autocommit = True
        pick = (
            "SELECT id, amount FROM transactions WHERE type <> 'REVERSAL' AND status = 'COMPLETED' "
            "AND fx_quote_id IS NULL AND (source_wallet_id IN %(w)s OR destination_wallet_id IN %(w)s) "
            "ORDER BY random() LIMIT 1"
        )
        with server.client() as client:
            while not clients_done.is_set():
                with picker.cursor() as cur:
                    cur.execute(pick, {"w": wallet_ids})
                    original, amount = cur.fetchone()
                reversing["keys"].append(unique_name("reverse"))
                body = {"amount": f"{rng.randint(1, amount) / 100:.2f}"}
                headers = {**admin.headers, "Idempotency-Key": reversing["keys"][-1]}
                r = definite(client, f"/admin/transactions/{original}/reverse", body, headers)
                reversing["outcomes"][("reverse", r.status_code, r.json().get("code"))] += 1
        picker.close()

    reverser = threading.Thread(target=admin_run)
    reverser.start()

    # The bank's side: each transfer ends as sent (most), failed, or sent and then returned, once Paystack has it (a
    # payout whose send the kill cut off is sent by the sweep later); its webhook may find the server down (the sweep
    # verifies then).
    bank_says, planned, said_by = {}, {}, {}

    def status_at_the_bank(reference):
        known = httpx.get(f"{fake.url}/_fake/transfers/{reference}", timeout=30)
        return known.json()["status"] if known.status_code == 200 else None

    def bank_run():
        rng = random.Random(-2)
        while not (clients_done.is_set() and len(bank_says) == len(set(references))):
            # Each once, though a payout answered again (a replay after the kill) is listed again. An end whose webhook
            # found the server down (or answering 503) stands, and is sent again next round, as Paystack retries a
            # webhook until it is answered 200: the sweep verifies only PENDING payouts, so a return after the success
            # is known from its webhook alone.
            for reference in [r for r in dict.fromkeys(references) if r not in bank_says]:
                outcome = planned.setdefault(reference, rng.choices(["success", "failed", "reversed"], [6, 2, 2])[0])
                steps = said_by.setdefault(reference, [])
                for said in ("success", "reversed") if outcome == "reversed" else (outcome,):
                    if said in steps:
                        continue
                    delivered = False
                    with contextlib.suppress(httpx.TransportError):
                        ended = httpx.post(f"{fake.url}/_fake/transfers/{reference}?outcome={said}", timeout=60)
                        delivered = ended.status_code == 200 and all(s == 200 for s in ended.json()["webhook_statuses"])
                    if status_at_the_bank(reference) != said or not delivered:
                        break  # not sent yet, or its webhook not taken (again next round)
                    steps.append(said)
                else:
                    bank_says[reference] = outcome
            time.sleep(0.2)

    bank = threading.Thread(target=bank_run)
    bank.start()

    def kill_midway():
        while answered["all"] < OPERATIONS // 2:
            time.sleep(0.01)
        server.kill()
        server.start()

    killer = threading.Thread(target=kill_midway)
    killer.start()
    started = time.monotonic()
    results = in_parallel(CLIENTS, client_run)
    elapsed = time.monotonic() - started
    killer.join(60)
    clients_done.set()
    reverser.join(60)
    bank.join(120)
    outcomes = sum((o for o, _, _ in results), reversing["outcomes"])
    keys = [k for _, ks, _ in results for k in ks] + reversing["keys"]
    hold_keys = [k for _, _, hks in results for k in hks]
    print(
        f"\nbank invariant: {CLIENTS} clients, {per_client * CLIENTS} operations among {WALLETS} wallets "
        f"in {elapsed:.1f}s with a server kill -9 midway ({per_client * CLIENTS / elapsed:.0f}/s): {dict(outcomes)}; "
        f"resent: {dict(retried)}"
    )

    assert retried["no answer"] > 0  # the kill did cut clients off
    allowed = {(201, None), (200, None), (400, "INSUFFICIENT_FUNDS"), (400, "REVERSAL_EXCEEDED")}
    assert {(status, code) for _, status, code in outcomes} <= allowed
    # Placing a hold or a payout is no transaction (a refused one records nothing); a capture is a transfer.
    completed = sum(n for (kind, status, _), n in outcomes.items() if status == 201 and kind not in ("hold", "payout"))
    refused = sum(n for (kind, status, _), n in outcomes.items() if status == 400 and kind not in ("hold", "payout"))
    assert outcomes[("capture", 201, None)] > 0 and outcomes[("void", 200, None)] > 0
    assert outcomes[("reverse", 201, None)] > 0
    placed = scalar(db, "SELECT COUNT(*) FROM holds WHERE idempotency_key = ANY(%s)", (hold_keys,))
    assert placed == outcomes[("hold", 201, None)]
    still_voided = "SELECT COUNT(*) FROM holds WHERE id = ANY(%s::uuid[]) AND status = 'VOIDED'"
    assert scalar(db, still_voided, (voided,)) == len(voided)
    assert completed > OPERATIONS // 2 and refused > 0  # a real mix, some failing for funds

    mine = {"w": wallet_ids}
    touching = "(source_wallet_id IN %(w)s OR destination_wallet_id IN %(w)s)"

    def count(condition):
        return scalar(db, f"SELECT COUNT(*) FROM transactions t WHERE {touching} AND {condition}", mine)

    def completed_total(kind):
        sql = f"SELECT SUM(amount) FROM transactions t WHERE {touching} AND type = %(k)s AND status = 'COMPLETED'"
        return scalar(db, sql, {**mine, "k": kind})

    money_in = completed_total("DEPOSIT") - completed_total("WITHDRAWAL")

    # A reversed deposit took money out again, a reversed withdrawal brought it back; reversed transfers moved it.
    def reversed_total(kind):
        sql = (
            "SELECT COALESCE(SUM(r.amount), 0) FROM transactions r JOIN transactions t ON t.id = r.reverses "
            "WHERE (r.source_wallet_id IN %(w)s OR r.destination_wallet_id IN %(w)s) AND r.status = 'COMPLETED' "
            "AND t.type = %(k)s"
        )
        return scalar(db, sql, {**mine, "k": kind})

    money_in -= reversed_total("DEPOSIT") - reversed_total("WITHDRAWAL")

    # Per currency, counting the FX accounts: what the users' wallets and the FX account gained is what came in.
    eur_ids = tuple(eur.values())
    fx_gained = {
        c: scalar(db, "SELECT balance FROM wallets WHERE is_fx AND currency = %s", (c,)) - fx_before[c]
        for c in ("USD", "EUR")
    }
    assert scalar(db, "SELECT SUM(balance) FROM wallets WHERE id IN %(w)s", mine) + fx_gained["USD"] == money_in
    assert scalar(db, "SELECT SUM(balance) FROM wallets WHERE id IN %s", (eur_ids,)) + fx_gained["EUR"] == (
        WALLETS * 50_00
    )
    assert scalar(db, "SELECT MIN(balance) FROM wallets WHERE id IN %s", (eur_ids,)) >= 0
    assert outcomes[("fx", 201, None)] > 0
    assert scalar(db, "SELECT MIN(balance) FROM wallets WHERE id IN %(w)s", mine) >= 0
    # Every key is one row: every success a client saw one COMPLETED row, every refusal one FAILED row.
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE idempotency_key = ANY(%s)", (keys,)) == len(keys)
    # Scheduled occurrences: each of the three of every schedule ran once, recorded with its one transaction (a
    # refused one FAILED, with its reason), under its own key.
    assert wait_for(
        lambda: (
            scalar(db, "SELECT COUNT(*) FROM scheduled_occurrences WHERE schedule_id = ANY(%s::uuid[])", (schedules,))
            == 3 * len(schedules)
        ),
        60,
    )
    occurrences = (
        "SELECT COUNT(*) FROM scheduled_occurrences o JOIN transactions t ON t.id = o.transaction_id "
        "WHERE o.schedule_id = ANY(%(s)s::uuid[]) AND t.status = o.status "
        "AND t.idempotency_key LIKE 'scheduled-transfer:' || o.schedule_id || ':%%'"
    )
    assert scalar(db, occurrences, {"s": schedules}) == 3 * len(schedules)
    scheduled = "SELECT COUNT(*) FROM transactions WHERE idempotency_key LIKE ANY(%(k)s) AND status = %(status)s"
    like = [f"scheduled-transfer:{s}:%" for s in schedules]
    scheduled_done = scalar(db, scheduled, {"k": like, "status": "COMPLETED"})
    scheduled_refused = scalar(db, scheduled, {"k": like, "status": "FAILED"})
    assert scheduled_done + scheduled_refused == 3 * len(schedules) and scheduled_done > 0
    assert count("status = 'COMPLETED'") == completed + WALLETS + scheduled_done
    assert count("status = 'FAILED'") == refused + scheduled_refused
    assert count("status = 'PENDING'") == 0
    entries = "FROM entries e WHERE e.transaction_id = t.id"
    legs = "CASE WHEN t.fx_quote_id IS NULL THEN 2 ELSE 4 END"  # an FX transfer has two legs in each currency
    assert count(f"status = 'COMPLETED' AND (SELECT COUNT(*) <> {legs} OR SUM(e.amount) <> 0 {entries})") == 0
    assert count(f"status = 'FAILED' AND EXISTS (SELECT 1 {entries})") == 0
    # Each wallet's stored balance is what its own entries add up to.
    own_entries = "(SELECT COALESCE(SUM(amount), 0) FROM entries WHERE wallet_id = w.id)"
    assert scalar(db, f"SELECT COUNT(*) FROM wallets w WHERE id IN %(w)s AND balance <> {own_entries}", mine) == 0
    # Payouts: every one was sent once and ended as the bank said (a return whose success the sweep never saw in time
    # is a failure: no money left), and the NGN wallets lost exactly what was sent and not returned.
    made = scalar(db, "SELECT COUNT(*) FROM payouts WHERE idempotency_key = ANY(%s)", (payout_keys,))
    assert made == len(set(references)) == outcomes[("payout", 201, None)] and made > 0
    pending = "SELECT COUNT(*) FROM payouts WHERE idempotency_key = ANY(%s) AND status = 'PENDING'"
    assert wait_for(lambda: scalar(db, pending, (payout_keys,)) == 0, 60)
    settled_as = {"success": {"COMPLETED"}, "failed": {"FAILED"}, "reversed": {"REVERSED", "FAILED"}}
    with db.cursor() as cur:
        cur.execute(
            "SELECT reference, status, failure_code, provider_status FROM payouts WHERE idempotency_key = ANY(%s)",
            (payout_keys,),
        )
        found = {row[0]: row[1:] for row in cur.fetchall()}
    payouts = {reference: status for reference, (status, *_) in found.items()}
    for reference, status in payouts.items():
        assert status in settled_as[bank_says[reference]], (reference, found[reference], bank_says[reference])
        assert httpx.get(f"{fake.url}/_fake/transfers/{reference}").json()["transfer_calls"] == 1
    assert {"COMPLETED", "FAILED", "REVERSED"} <= set(payouts.values())
    sent = "SELECT COALESCE(SUM(amount), 0) FROM payouts WHERE idempotency_key = ANY(%s) AND status = 'COMPLETED'"
    ngn_ids = tuple(ngn.values())
    ngn_total = scalar(db, "SELECT SUM(balance) FROM wallets WHERE id IN %s", (ngn_ids,))
    assert ngn_total == WALLETS * 50_00 - scalar(db, sent, (payout_keys,))
    assert scalar(db, "SELECT SUM(held) FROM wallets WHERE id IN %s", (ngn_ids,)) == 0
    audit = run_audit(database_url)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "ledger audit: OK" in audit.stdout


def test_opposite_transfers_do_not_deadlock(server, db):
    a, b = make_user(server), make_user(server)
    fund(server, a, "1000")
    fund(server, b, "1000")
    rounds = 20

    def hammer(i):
        me, other = (a, b) if i % 2 else (b, a)
        statuses = Counter()
        with server.client(me.token) as client:
            for _ in range(rounds):
                r = client.post(
                    "/transfers",
                    json={"from_wallet_id": me.wallet_id, "to_wallet_id": other.wallet_id, "amount": "1.00"},
                    timeout=TIMEOUT,
                )
                statuses[r.status_code] += 1
        return statuses

    started = time.monotonic()
    statuses = sum(in_parallel(CLIENTS, hammer), Counter())
    assert statuses == {201: CLIENTS * rounds}
    assert time.monotonic() - started < 4 * TIMEOUT
    assert (balance(server, a), balance(server, b)) == ("1000.00", "1000.00")  # as many each way


def test_one_key_moves_money_once(server, db):
    sender, recipient = make_user(server), make_user(server)
    fund(server, sender, "100")
    key = unique_name("race")
    body = {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "10.00"}

    def send(_):
        with server.client(sender.token) as client:
            r = client.post("/transfers", json=body, headers={"Idempotency-Key": key}, timeout=TIMEOUT)
        return r.status_code, r.headers.get("Idempotent-Replayed"), r.json()

    results = in_parallel(20, send)
    first = [body for status, replayed, body in results if status == 201 and replayed is None]
    assert len(first) == 1
    for status, replayed, answer in results:
        assert (status, replayed, answer) in ((201, None, first[0]), (201, "true", first[0])) or (
            status == 409 and answer["code"] == "IDEMPOTENCY_IN_PROGRESS"
        ), (status, answer)
    assert (balance(server, sender), balance(server, recipient)) == ("90.00", "10.00")
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE idempotency_key = %s", (key,)) == 1


def test_concurrent_withdrawals_never_exceed_the_daily_limit(own_server, db):
    limited = own_server(DAILY_WITHDRAW_LIMIT="100.00")
    user = make_user(limited)
    fund(limited, user, "1000")

    def withdraw(_):
        with limited.client(user.token) as client:
            r = client.post(f"/wallets/{user.wallet_id}/withdraw", json={"amount": "7.00"}, timeout=TIMEOUT)
        return r.status_code, r.json().get("code")

    results = Counter(in_parallel(20, withdraw))
    # 14 x 7.00 = 98.00 fits in 100.00; a 15th would not, and refusals use none of the allowance.
    assert results == {(201, None): 14, (400, "DAILY_LIMIT_EXCEEDED"): 6}
    assert balance(limited, user) == "902.00"
    assert (
        scalar(db, "SELECT SUM(amount) FROM daily_usage WHERE user_id = %s AND kind = 'WITHDRAWAL'", (user.id,)) == 9800
    )


def test_a_deadlock_the_database_breaks_is_a_503_and_the_keyed_retry_moves_once(server, database_url, db):
    """Another transaction locks the two wallets in the other order: PostgreSQL breaks the cycle by failing the server's
    statement (its deadlock_timeout runs out first). Nothing moved: 503 with Retry-After, and the keyed retry moves the
    money once."""
    a, b = make_user(server), make_user(server)
    fund(server, a, "100")
    first, second = sorted([a.wallet_id, b.wallet_id])  # the server locks the wallets in id order
    key = unique_name("deadlock")
    body = {"from_wallet_id": a.wallet_id, "to_wallet_id": b.wallet_id, "amount": "10.00"}

    def send() -> httpx.Response:
        with server.client(a.token) as client:
            return client.post("/transfers", json=body, headers={"Idempotency-Key": key}, timeout=TIMEOUT)

    blocker = psycopg2.connect(libpq_url(database_url))
    try:
        with blocker.cursor() as cur:
            cur.execute("SET deadlock_timeout = '60s'")  # the server's session finds the cycle, not this one
            cur.execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (second,))
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(send)
                # Executing alone (the group commit gave up its short wait): it holds `first` and waits for `second`.
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
                wait_for(lambda: scalar(db, waiting, ("%FROM ledger_execute(%",)) == 1)
                cur.execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (first,))
                blocker.rollback()
                r = answer.result()
    finally:
        blocker.close()
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert balance(server, a) == "100.00"
    retried = send()
    assert retried.status_code == 201, retried.text
    assert (balance(server, a), balance(server, b)) == ("90.00", "10.00")
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE idempotency_key = %s", (key,)) == 1
