"""group commit: ledger_execute_batch(), step 2 of many money operations in one statement and one commit

The server's group commit (wallet/ledger/batch.py) sends the step 2 of the operations that queued while the previous
batch was in flight as one call. It first locks every wallet of the batch in id order, as ledger_execute() does for
one operation, so batches and single executions take their wallet locks in one global order. It waits for them at
most p_lock_wait: past that (a wallet held by a slow transaction), it takes the ones free now and defers the
operations whose wallets it could not lock, for the server to execute alone, so that one busy wallet never holds a
whole batch, nor the batches queued behind it. Then it runs ledger_execute() for each operation in turn, each in its
own subtransaction: a refusal (SQLSTATE class WL) rolls back that operation alone and is returned in its row, and the
others go on. Any other error rolls back the whole batch, and the server then executes each operation alone. Each
row also returns the operation's events (their users, types and data, completed_at stamped) for the caller's
statement to write after the locks, as for one.

Revision ID: 0015_group_commit
Revises: 0014_fast_path
"""

from alembic import op

revision = "0015_group_commit"
down_revision = "0014_fast_path"
branch_labels = None
depends_on = None

# Per operation n (1-based), the arguments of ledger_execute() as arrays; its events are the p_event_counts[n]
# entries of p_event_users / p_event_types / p_event_data that follow the earlier operations' own.
FUNCTION = r"""
CREATE FUNCTION ledger_execute_batch(
    p_tx uuid[], p_type text[], p_amount bigint[], p_currency text[], p_source uuid[], p_destination uuid[],
    p_system uuid[], p_charged_user uuid[], p_limit bigint[], p_max_balance bigint, p_source_role text[],
    p_destination_role text[], p_event_counts int[], p_event_users uuid[], p_event_types text[], p_event_data text[],
    p_lock_wait text)
RETURNS TABLE (
    n int, deferred boolean, done_at timestamptz, source_balance bigint, destination_balance bigint,
    source_held bigint, destination_held bigint, event_users uuid[], event_types text[], stamped_events text[],
    refused_state text, refused_message text, refused_detail text)
LANGUAGE plpgsql AS $$
DECLARE
    wanted uuid[] := array_remove(p_source || p_destination, NULL);
    locked uuid[] := wanted;
    lock_timeout_was text := current_setting('lock_timeout');
    first int;
    last int := 0;
BEGIN
    BEGIN
        PERFORM set_config('lock_timeout', p_lock_wait, true);
        PERFORM 1 FROM wallets WHERE id = ANY(wanted) ORDER BY id FOR NO KEY UPDATE;
        PERFORM set_config('lock_timeout', lock_timeout_was, true);
    EXCEPTION WHEN lock_not_available THEN  -- rolled back: the locks taken so far, and the setting
        locked := ARRAY(SELECT id FROM wallets WHERE id = ANY(wanted) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED);
    END;
    FOR i IN 1 .. coalesce(array_length(p_tx, 1), 0) LOOP
        n := i;
        first := last + 1;
        last := last + p_event_counts[i];
        event_users := p_event_users[first:last];
        event_types := p_event_types[first:last];
        done_at := NULL;
        source_balance := NULL;
        destination_balance := NULL;
        source_held := NULL;
        destination_held := NULL;
        stamped_events := NULL;
        refused_state := NULL;
        refused_message := NULL;
        refused_detail := NULL;
        deferred := p_source[i] <> ALL(locked) OR p_destination[i] <> ALL(locked);
        IF deferred IS NOT TRUE THEN
            deferred := false;
            BEGIN
                SELECT e.done_at, e.source_balance, e.destination_balance, e.source_held, e.destination_held,
                    e.stamped_events
                INTO done_at, source_balance, destination_balance, source_held, destination_held, stamped_events
                FROM ledger_execute(p_tx[i], p_type[i], p_amount[i], p_currency[i], p_source[i], p_destination[i],
                    p_system[i], p_charged_user[i], p_limit[i], 0, p_max_balance, p_source_role[i],
                    p_destination_role[i], p_event_data[first:last]) e;
            EXCEPTION WHEN SQLSTATE 'WL000' THEN  -- the class: every refusal of ledger_execute()
                GET STACKED DIAGNOSTICS refused_state = RETURNED_SQLSTATE, refused_message = MESSAGE_TEXT,
                    refused_detail = PG_EXCEPTION_DETAIL;
            END;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_execute_batch")
