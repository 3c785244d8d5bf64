"""The bench's seed: paying users with funded wallets and ready access tokens."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import bcrypt
import psycopg2

from scripts.local_services import libpq_url
from settings import Settings
from wallet.identity.auth import _token_pair

PASSWORD = "bench-password-1"
BALANCE = 1_000_000  # minor units (10,000.00 USD) per wallet; transfers move 0.01

# Deterministic ids, so pgbench's script (bench/transfer.sql) can name user n and wallet n without a lookup.
_SEED = """
CREATE FUNCTION bench_user(n int) RETURNS uuid IMMUTABLE LANGUAGE sql
    AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION bench_wallet(n int) RETURNS uuid IMMUTABLE LANGUAGE sql
    AS $$ SELECT ('00000000-0000-4000-9000-' || lpad(n::text, 12, '0'))::uuid $$;
INSERT INTO users (id, username, password_hash)
    SELECT bench_user(n), CASE n WHEN 0 THEN 'bench_merchant' ELSE 'bench' || n END, %(hash)s
    FROM generate_series(0, %(n)s) n;
INSERT INTO wallets (id, number, user_id, currency, balance)
    SELECT bench_wallet(n), (1000000000 + n)::text, bench_user(n), 'USD', %(balance)s FROM generate_series(0, %(n)s) n;
INSERT INTO wallets (id, number, user_id, currency, is_system)
    VALUES (gen_random_uuid(), '0999999999', NULL, 'USD', true);
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
    WHERE t.reference LIKE 'SEED%%' AND s.number = '0999999999';  -- the outside world's account above
INSERT INTO sessions (id, user_id, refresh_jti, expires_at)
    SELECT gen_random_uuid(), id, gen_random_uuid(), now() + interval '1 day' FROM users;
"""


def seed(database_url: str, settings: Settings, wallets: int, workdir: Path) -> tuple[Path, str]:
    """Insert the users (one real bcrypt hash at the server's cost, shared: hashing 1,000 at cost 12 would take
    minutes), their funded wallets and one login session each; mint each user's access token as a login would.

    Returns the users file for wrk and the merchant's wallet id.
    """
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(settings.bcrypt_rounds)).decode()
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_SEED, {"hash": password_hash, "n": wallets, "balance": BALANCE})
            cur.execute(
                # to_jsonb(s): an older revision's sessions (--against) have no authenticated_at/amr columns yet.
                "SELECT u.id, u.username, w.id, s.id, s.refresh_jti, to_jsonb(s) FROM users u"
                " JOIN wallets w ON w.user_id = u.id JOIN sessions s ON s.user_id = u.id ORDER BY w.number"
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    token_settings = SimpleNamespace(settings=settings)
    users_file = workdir / "users.tsv"
    with open(users_file, "w") as out:
        for user_id, username, wallet_id, session_id, refresh_jti, columns in rows[1:]:  # [0]: merchant
            signed_in = columns.get("authenticated_at")
            session = SimpleNamespace(
                authenticated_at=dt.datetime.fromisoformat(signed_in) if signed_in else dt.datetime.now(dt.UTC),
                amr=columns.get("amr") or ["pwd"],
            )
            pair = _token_pair(token_settings, user_id, "user", session_id, refresh_jti, session)  # type: ignore[arg-type]
            access = pair["access_token"]
            out.write(f"{access}\t{wallet_id}\t{username}\n")
    return users_file, str(rows[0][2])
