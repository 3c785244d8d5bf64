"""fast path: ledger_execute(), step 2 of the money path (wallet/ledger/lifecycle.py) as one server-side function, and
ledger_stamp() for the events of a transaction as it completes or fails

One call locks the wallets in id order, checks status, funds and the balance ceiling, charges the daily usage, moves
the balances, appends the two entries and marks the row COMPLETED; a refusal RAISEs with an SQLSTATE of class WL
(so everything it did rolls back) and the ledger maps it to the API's error. Called as one statement outside an
explicit transaction, it is a whole durable transaction in one round trip.

Revision ID: 0014_fast_path
Revises: 0013_fx
"""

from alembic import op

revision = "0014_fast_path"
down_revision = "0013_fx"
branch_labels = None
depends_on = None

# SQLSTATEs (wallet/ledger/execute.py _refusal): WL001 account status (MESSAGE the status, DETAIL whose), WL002 insufficient
# funds (DETAIL the available balance), WL003 balance ceiling, WL004 daily limit (DETAIL today's usage with this
# operation), WL005 the row is no longer PENDING.
# The events' data (rendered transactions) arrive with completed_at unknown; ledger_stamp() writes the row's
# completed_at into them as the API writes times (ISO 8601, UTC, Z, microseconds unless zero: orjson's OPT_UTC_Z), and
# ledger_execute() returns them for the caller's statement to write into the outbox after its locks (wallet/notify/events.py).
# The ledger's one-statement FAILED mark stamps its events the same way.
FUNCTION = r"""
CREATE FUNCTION ledger_execute(
    p_tx uuid, p_type text, p_amount bigint, p_currency text, p_source uuid, p_destination uuid, p_system uuid,
    p_charged_user uuid, p_limit bigint, p_released bigint, p_max_balance bigint,
    p_source_role text, p_destination_role text, p_event_data text[],
    OUT done_at timestamptz, OUT source_balance bigint, OUT destination_balance bigint, OUT source_held bigint,
    OUT destination_held bigint, OUT stamped_events text[])
LANGUAGE plpgsql AS $$
DECLARE
    -- NULL for a side the operation does not have (a deposit's source, a withdrawal's destination): every check
    -- below on a NULL is not true.
    src_balance bigint;
    src_held bigint;
    src_status text;
    dst_balance bigint;
    dst_status text;
    used bigint;
BEGIN
    PERFORM 1 FROM wallets WHERE id IN (p_source, p_destination) ORDER BY id FOR NO KEY UPDATE;
    SELECT w.balance, w.held, u.status INTO src_balance, src_held, src_status
    FROM wallets w JOIN users u ON u.id = w.user_id WHERE w.id = p_source;
    SELECT w.balance, u.status INTO dst_balance, dst_status
    FROM wallets w JOIN users u ON u.id = w.user_id WHERE w.id = p_destination;
    IF src_status IN ('frozen', 'inactive') THEN
        RAISE EXCEPTION USING ERRCODE = 'WL001', MESSAGE = src_status, DETAIL = p_source_role;
    END IF;
    IF dst_status IN ('frozen', 'inactive') THEN
        RAISE EXCEPTION USING ERRCODE = 'WL001', MESSAGE = dst_status, DETAIL = p_destination_role;
    END IF;
    IF src_balance - src_held + p_released < p_amount THEN
        RAISE EXCEPTION USING ERRCODE = 'WL002', MESSAGE = 'insufficient funds',
            DETAIL = (src_balance - src_held)::text;
    END IF;
    IF dst_balance + p_amount > p_max_balance THEN
        RAISE EXCEPTION USING ERRCODE = 'WL003', MESSAGE = 'balance limit';
    END IF;
    IF p_charged_user IS NOT NULL THEN
        -- Under the usage row's lock: concurrent requests of one user queue here, so the limit holds.
        INSERT INTO daily_usage AS d (user_id, currency, kind, day, amount)
        VALUES (p_charged_user, p_currency, p_type, CAST(timezone('UTC', now()) AS date), p_amount)
        ON CONFLICT (user_id, currency, kind, day) DO UPDATE SET amount = d.amount + excluded.amount
        RETURNING d.amount INTO used;
        IF used > p_limit THEN
            RAISE EXCEPTION USING ERRCODE = 'WL004', MESSAGE = 'daily limit', DETAIL = used::text;
        END IF;
    END IF;
    IF p_source IS NOT NULL THEN
        UPDATE wallets SET balance = balance - p_amount, updated_at = now() WHERE id = p_source
        RETURNING balance, held INTO source_balance, source_held;
    END IF;
    IF p_destination IS NOT NULL THEN
        UPDATE wallets SET balance = balance + p_amount, updated_at = now() WHERE id = p_destination
        RETURNING balance, held INTO destination_balance, destination_held;
    END IF;
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    VALUES (p_tx, coalesce(p_source, p_system), -p_amount, p_currency, source_balance),
           (p_tx, coalesce(p_destination, p_system), p_amount, p_currency, destination_balance);
    UPDATE transactions SET status = 'COMPLETED', completed_at = now() WHERE id = p_tx AND status = 'PENDING'
    RETURNING completed_at INTO done_at;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'WL005', MESSAGE = 'no longer pending';
    END IF;
    stamped_events := ledger_stamp(p_event_data, done_at);
END
$$
"""

# Rendered transactions (JSON text) with their completed_at set to `at`, written as the API writes times.
STAMP = r"""
CREATE FUNCTION ledger_stamp(events text[], at timestamptz) RETURNS text[] LANGUAGE sql STABLE AS $$
    SELECT ARRAY(
        SELECT CAST(jsonb_set(CAST(e.data AS jsonb), '{completed_at}', to_jsonb(
            to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
            || CASE WHEN extract(microseconds FROM at)::bigint % 1000000 = 0 THEN ''
                    ELSE to_char(at AT TIME ZONE 'UTC', '.US') END || 'Z')) AS text)
        FROM unnest(events) WITH ORDINALITY AS e (data, n) ORDER BY e.n)
$$
"""


def upgrade() -> None:
    op.execute(STAMP)
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_execute")
    op.execute("DROP FUNCTION ledger_stamp")
