"""The bench's small world: paying users with funded wallets and ready access tokens (bench/large.py grows the large
one with the same ids and the same users file)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bcrypt
import psycopg2

from scripts.local_services import libpq_url
from settings import Settings
from wallet.identity.auth import _token_pair

PASSWORD = "bench-password-1"
BALANCE = 1_000_000  # minor units (10,000.00 USD) per wallet; transfers move 0.01

# Deterministic ids, so pgbench's script (bench/transfer.sql) can name user n and wallet n without a lookup.
USER_ID, WALLET_ID = "00000000-0000-4000-8000-{:012d}", "00000000-0000-4000-9000-{:012d}"
FUNCTIONS = f"""
CREATE FUNCTION bench_user(n int) RETURNS uuid IMMUTABLE LANGUAGE sql
    AS $$ SELECT ('{USER_ID[:24]}' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION bench_wallet(n int) RETURNS uuid IMMUTABLE LANGUAGE sql
    AS $$ SELECT ('{WALLET_ID[:24]}' || lpad(n::text, 12, '0'))::uuid $$;
"""
SYSTEM_NUMBER = "0999999999"  # the outside world's account
# User n is bench<n> with wallet number 1000000000 + n; user 0 is the merchant.
_SEED = """
INSERT INTO users (id, username, password_hash)
    SELECT bench_user(n), CASE n WHEN 0 THEN 'bench_merchant' ELSE 'bench' || n END, %(hash)s
    FROM generate_series(0, %(n)s) n;
INSERT INTO wallets (id, number, user_id, currency, balance)
    SELECT bench_wallet(n), (1000000000 + n)::text, bench_user(n), 'USD', %(balance)s FROM generate_series(0, %(n)s) n;
INSERT INTO wallets (id, number, user_id, currency, is_system)
    VALUES (gen_random_uuid(), %(system)s, NULL, 'USD', true);
-- Each balance arrives as a COMPLETED deposit with its two entries, so the ledger audit holds from the start.
INSERT INTO transactions (id, reference, type, status, amount, currency, destination_wallet_id, destination_user_id,
                          initiator_id, request_hash, completed_at)
    SELECT gen_random_uuid(), 'SEED' || n, 'DEPOSIT', 'COMPLETED', %(balance)s, 'USD', bench_wallet(n), bench_user(n),
           bench_user(n), repeat('0', 64), now()
    FROM generate_series(0, %(n)s) n;
INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT t.id, t.destination_wallet_id, t.amount, 'USD', t.amount FROM transactions t WHERE t.reference LIKE 'SEED%%'
    UNION ALL
    SELECT t.id, s.id, -t.amount, 'USD', NULL FROM transactions t, wallets s
    WHERE t.reference LIKE 'SEED%%' AND s.number = %(system)s;
"""
# A login session for users 0 .. n (the merchant and the paying users).
SESSIONS = """
INSERT INTO sessions (id, user_id, refresh_jti, expires_at)
    SELECT gen_random_uuid(), bench_user(n), gen_random_uuid(), now() + interval '1 day'
    FROM generate_series(0, %(n)s) n;
"""


def password_hash(settings: Settings) -> str:
    """One real bcrypt hash at the server's cost, shared by every user: hashing 1,000 at cost 12 would take
    minutes."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(settings.bcrypt_rounds)).decode()


def query(database_url: str, sql: str, params: Any = None) -> list[tuple]:
    """The rows of one statement, on a connection of its own (committed, then closed)."""
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def seed(database_url: str, settings: Settings, wallets: int, workdir: Path) -> tuple[Path, str, str]:
    """Insert the users, their funded wallets and one login session each; mint each user's access token as a login
    would. Returns what users_file() returns."""
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn, conn.cursor() as cur:
            values = {"hash": password_hash(settings), "n": wallets, "balance": BALANCE, "system": SYSTEM_NUMBER}
            cur.execute(FUNCTIONS + _SEED + SESSIONS, values)
    finally:
        conn.close()
    return users_file(database_url, settings, workdir)


def users_file(database_url: str, settings: Settings, workdir: Path) -> tuple[Path, str, str]:
    """Mint an access token, as a login would, for each user with a session (the merchant and the paying users).

    Returns the users file for wrk (the paying users), the merchant's wallet id and the merchant's token.
    """
    rows = query(
        database_url,
        # to_jsonb(s): an older revision's sessions (--against) have no authenticated_at/amr columns yet.
        "SELECT u.id, u.username, w.id, s.id, s.refresh_jti, to_jsonb(s) FROM users u"
        " JOIN wallets w ON w.user_id = u.id JOIN sessions s ON s.user_id = u.id ORDER BY w.number",
    )
    token_settings = SimpleNamespace(settings=settings)
    tokens = []
    for user_id, _, _, session_id, refresh_jti, columns in rows:
        signed_in = columns.get("authenticated_at")
        session = SimpleNamespace(
            authenticated_at=dt.datetime.fromisoformat(signed_in) if signed_in else dt.datetime.now(dt.UTC),
            amr=columns.get("amr") or ["pwd"],
        )
        pair = _token_pair(token_settings, user_id, "user", session_id, refresh_jti, session)  # type: ignore[arg-type]
        tokens.append(pair["access_token"])
    path = workdir / "users.tsv"
    with open(path, "w") as out:
        for token, (_, username, wallet_id, *_) in zip(tokens[1:], rows[1:], strict=True):  # [0]: merchant
            out.write(f"{token}\t{wallet_id}\t{username}\n")
    return path, str(rows[0][2]), tokens[0]
