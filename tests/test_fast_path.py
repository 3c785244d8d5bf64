"""The money path's shape (wallet/ledger/lifecycle.py): a transfer, a deposit and a withdrawal are two round trips to
PostgreSQL (record PENDING with the parties resolved in the same statement; execute with its durable commit) whichever
way the recipient is named; and the cache of verified access tokens (wallet/identity/tokens.py) never lets a revoked or
expired token through.

Round trips are counted on the wire: the server reaches PostgreSQL through a relay that counts the client's Sync and
Query messages (each ends one round trip of the extended or the simple protocol)."""

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import assert_audit_ok, assert_error, balance, fund, make_user, unique_phone
from test_outages import Relay

# A startup-phase request that is not the startup message itself (the server answers it, then the client goes on).
_SSL_OR_GSS = {80877103, 80877104}


class CountingRelay(Relay):
    """A Relay that counts the round trips the server sends: Sync ('S') and simple Query ('Q') messages."""

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.round_trips = 0
        self._lock = threading.Lock()
        self._unparsed: dict[socket.socket, bytes] = {}
        self._started: set[socket.socket] = set()

    def sent(self, connection: socket.socket, data: bytes) -> None:
        """Parse the messages: untyped ones until the startup message, then typed ones (type, length, body)."""
        buffer = self._unparsed.get(connection, b"") + data
        while True:
            if connection not in self._started:
                if len(buffer) < 8:
                    break
                length, code = struct.unpack("!II", buffer[:8])
                if len(buffer) < length:
                    break
                buffer = buffer[length:]
                if code not in _SSL_OR_GSS:
                    self._started.add(connection)
                continue
            if len(buffer) < 5:
                break
            kind, length = buffer[:1], struct.unpack("!I", buffer[1:5])[0]
            if len(buffer) < 1 + length:
                break
            buffer = buffer[1 + length :]
            if kind in (b"S", b"Q"):
                with self._lock:
                    self.round_trips += 1
        self._unparsed[connection] = buffer


@pytest.fixture
def counted(own_server, database_url) -> Iterator[tuple]:
    relay = CountingRelay(database_url)
    relay.start()
    # One pool connection, so after a warm-up every statement is prepared; background work polls as rarely as allowed.
    server = own_server(
        DATABASE_URL=relay.url,
        DB_POOL_SIZE="1",
        REVOCATION_POLL_INTERVAL="60",
        RECOVERY_INTERVAL="3600",
        # The delivery lanes' claims (two round trips every 250 ms by default) landed in every try of a loaded run.
        EVENTS_POLL_MS="60000",
    )
    yield server, relay
    relay.cut()


def fewest_round_trips(relay: CountingRelay, send, times: int = 4) -> int:
    """The fewest round trips one request took over several (background polls only ever add to a count)."""
    counts = []
    for _ in range(times):
        before = relay.round_trips
        send()
        time.sleep(0.05)  # the relay's thread has forwarded (and counted) everything the server sent
        counts.append(relay.round_trips - before)
    return min(counts)


def test_transfers_deposits_withdrawals_and_operations_take_two_round_trips(counted, database_url):
    server, relay = counted
    phone = unique_phone()
    alice, bob = make_user(server), make_user(server, phone=phone)
    fund(server, alice, "100.00")
    recipients = {
        "to_wallet_id": bob.wallet_id,
        "to_wallet_number": bob.wallet_number,
        "to_username": bob.username.upper(),  # a username is matched case-insensitively
        "to_phone": phone,
    }
    with server.client(alice.token) as api:

        def transfer(field: str) -> None:
            body = {"from_wallet_id": alice.wallet_id, field: recipients[field], "amount": "0.01"}
            r = api.post("/transfers", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["destination_wallet_id"] == bob.wallet_id and r.json()["status"] == "COMPLETED"

        def own(kind: str) -> None:
            r = api.post(f"/wallets/{alice.wallet_id}/{kind}", json={"amount": "0.01"})
            assert r.status_code == 201, r.text

        for field in recipients:
            transfer(field)  # the warm-up: every statement prepared on the pool's one connection
            assert fewest_round_trips(relay, lambda f=field: transfer(f)) == 2, field
        for kind in ("deposit", "withdraw"):
            own(kind)
            assert fewest_round_trips(relay, lambda k=kind: own(k)) == 2, kind

        def operation(kind: str) -> None:
            r = api.post(f"/wallets/{alice.wallet_id}/operation", json={"operation_type": kind, "amount": "0.01"})
            assert r.status_code == 200 and r.json()["id"] == alice.wallet_id, r.text

        for kind in ("DEPOSIT", "WITHDRAW"):  # answered with the wallet, rendered without a read after the move
            operation(kind)
            assert fewest_round_trips(relay, lambda k=kind: operation(k)) == 2, kind
    # 4 recipients x 5 transfers of 0.01 out; the deposits and withdrawals of 0.01 cancel out.
    assert balance(server, alice) == "99.80" and balance(server, bob) == "0.20"
    assert_audit_ok(database_url)


def test_a_refused_transfer_is_recorded_failed_in_one_more_round_trip(counted):
    server, relay = counted
    alice, bob = make_user(server), make_user(server)
    with server.client(alice.token) as api:

        def refused() -> None:
            body = {"from_wallet_id": alice.wallet_id, "to_wallet_id": bob.wallet_id, "amount": "5.00"}
            assert_error(api.post("/transfers", json=body), 400, "INSUFFICIENT_FUNDS")

        refused()
        assert fewest_round_trips(relay, refused) == 3


def test_a_wallet_outside_the_default_currency_converts_its_amount_in_its_own(server):
    """The recording statement guesses DEFAULT_CURRENCY for a wallet the process has not seen; a JPY wallet (no
    minor digits) corrects the guess, and the amount is refused or converted as JPY, never as USD."""
    alice, bob = make_user(server, currency="JPY"), make_user(server, currency="JPY")
    with server.client(alice.token) as api:
        r = api.post(f"/wallets/{alice.wallet_id}/deposit", json={"amount": "1.5"})
        assert_error(r, 400, "VALIDATION_ERROR")
        r = api.post(f"/wallets/{alice.wallet_id}/deposit", json={"amount": "150"})
        assert r.status_code == 201 and r.json()["amount"] == "150", r.text
        body = {"from_wallet_id": alice.wallet_id, "to_username": bob.username, "amount": "40"}
        r = api.post("/transfers", json=body, headers={"Idempotency-Key": "jpy-1"})
        assert r.status_code == 201 and r.json()["amount"] == "40", r.text
        replay = api.post("/transfers", json=body, headers={"Idempotency-Key": "jpy-1"})
        assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
        assert replay.headers["Idempotent-Replayed"] == "true"
    assert balance(server, alice) == "110" and balance(server, bob) == "40"


def test_a_cached_token_is_refused_at_once_when_its_login_ends(server):
    user = make_user(server)
    with server.client(user.token) as api:
        assert api.get("/wallets").status_code == 200  # verified, and now cached
        assert api.get("/wallets").status_code == 200
        assert api.post("/auth/logout").status_code == 204
        assert_error(api.get("/wallets"), 401, "TOKEN_REVOKED")


def test_a_cached_token_is_refused_once_it_expires(own_server):
    server = own_server(ACCESS_TOKEN_TTL="5")
    user = make_user(server)
    with server.client(user.token) as api:
        assert api.get("/wallets").status_code == 200  # cached now, for less than 5 s
        time.sleep(5.5)
        assert_error(api.get("/wallets"), 401, "TOKEN_EXPIRED")
