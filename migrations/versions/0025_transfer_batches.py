"""transfer batches: transfer_batches, one row per POST /transfers/batch (its key, request hash, mode, status, and per
item its reference, transaction and refusal; the items are ordinary TRANSFER transactions), and ledger_execute_many(),
step 2 of all of a batch's items in one call

ledger_execute_batch() (0015, the group commit) runs ledger_execute() for each operation in a subtransaction of its
own, which costs little for its 32 but does not scale to a client's 1,000: past 64 subtransactions every snapshot
gets slower, and each subtransaction that locks and updates a wallet row its parent (or a sibling) already locked
makes a multixact (1,000 transfers from one wallet: 3.3 s for the statement alone). Nor does running ledger_execute()
1,000 times in one block: each call reads and updates the same rows again (0.75 to 1.9 s on a loaded machine).

ledger_execute_many() does each of ledger_execute()'s steps once for the whole batch, for transfers between user
wallets: it locks every wallet of the batch in id order, reads them (balance, held, the owner's status) and which
of the transactions are still PENDING (the COMPLETED mark checks it again, and undoes it all should one have been
decided meanwhile: only the recovery sweep does, a day on), creates or locks the charged users' daily-usage rows (in key order), then
decides the items in order in memory with ledger_execute()'s checks in ledger_execute()'s order (the status of
either side, WL001; funds, WL002; the balance ceiling, WL003; the daily limit, WL004; a row no longer PENDING, WL005),
each seeing the balances and usage the items before it left; and then writes it all with one statement per table:
the wallets' balances, the usage, the entries (in item order, each with the balance right after it, as ledger_execute()
writes them), the COMPLETED marks. Atomic: the first refusal ends it with nothing written. Independent: a refused item
is left out, the others go on.

Revision ID: 0025_transfer_batches
Revises: 0024_payout_transfers
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0025_transfer_batches"
# The lead renumbers at merge: this follows 0024 (the payouts helper's) once that lands.
down_revision = "0024_payout_transfers"
branch_labels = None
depends_on = None


# Per operation n (1-based), the arguments of ledger_execute() as arrays, its events as in ledger_execute_batch()
# (p_system is not used: both sides of a transfer are user wallets).
FUNCTION = r"""
CREATE FUNCTION ledger_execute_many(
    p_tx uuid[], p_type text[], p_amount bigint[], p_currency text[], p_source uuid[], p_destination uuid[],
    p_system uuid[], p_charged_user uuid[], p_limit bigint[], p_max_balance bigint, p_source_role text[],
    p_destination_role text[], p_event_counts int[], p_event_users uuid[], p_event_types text[], p_event_data text[],
    p_atomic boolean)
RETURNS TABLE (
    n int, done_at timestamptz, source_balance bigint, destination_balance bigint, event_users uuid[],
    event_types text[], stamped_events text[], refused_state text, refused_message text, refused_detail text)
LANGUAGE plpgsql AS $$
DECLARE
    total int := coalesce(array_length(p_tx, 1), 0);
    today date := CAST(timezone('UTC', now()) AS date);
    -- The batch's wallets in id order, as read under their locks, and whether the batch moved each.
    ids uuid[];
    balances bigint[];
    helds bigint[];
    statuses text[];
    moved boolean[];
    -- Per item: its source's and destination's place in ids, its row still PENDING, its usage row's place.
    src int[];
    dst int[];
    pending boolean[];
    usage_of int[];
    -- The charged users' usage rows today.
    usage_users uuid[];
    usage_currencies text[];
    usage_kinds text[];
    usage_amounts bigint[];
    -- Per item, what became of it.
    done boolean[] := array_fill(false, ARRAY[total]);
    source_after bigint[] := array_fill(NULL::bigint, ARRAY[total]);
    destination_after bigint[] := array_fill(NULL::bigint, ARRAY[total]);
    states text[] := array_fill(NULL::text, ARRAY[total]);
    messages text[] := array_fill(NULL::text, ARRAY[total]);
    details text[] := array_fill(NULL::text, ARRAY[total]);
    firsts int[] := '{}';
    lasts int[] := '{}';
    stamped text[];
    offset_at int := 0;
    first_at int;
    last_at int;
    s int;
    d int;
    u int;
    marked int;
BEGIN
    FOR i IN 1 .. total LOOP
        firsts[i] := offset_at + 1;
        offset_at := offset_at + p_event_counts[i];
        lasts[i] := offset_at;
    END LOOP;
    PERFORM 1 FROM wallets WHERE id = ANY(p_source || p_destination) ORDER BY id FOR NO KEY UPDATE;
    SELECT array_agg(w.id ORDER BY w.id), array_agg(w.balance ORDER BY w.id), array_agg(w.held ORDER BY w.id),
        array_agg(u.status ORDER BY w.id)
    INTO ids, balances, helds, statuses
    FROM wallets w JOIN users u ON u.id = w.user_id WHERE w.id = ANY(p_source || p_destination);
    moved := array_fill(false, ARRAY[coalesce(array_length(ids, 1), 0)]);
    SELECT array_agg(array_position(ids, x.source) ORDER BY x.k),
        array_agg(array_position(ids, x.destination) ORDER BY x.k)
    INTO src, dst
    FROM unnest(p_source, p_destination) WITH ORDINALITY AS x (source, destination, k);
    SELECT array_agg(t.status IS NOT DISTINCT FROM 'PENDING' ORDER BY x.k) INTO pending
    FROM unnest(p_tx) WITH ORDINALITY AS x (id, k) LEFT JOIN transactions t ON t.id = x.id;
    WITH charged AS (
        SELECT DISTINCT p_charged_user[k] AS user_id, p_currency[k] AS currency, p_type[k] AS kind
        FROM generate_subscripts(p_tx, 1) AS k WHERE p_charged_user[k] IS NOT NULL
    ), locked AS (
        INSERT INTO daily_usage AS du (user_id, currency, kind, day, amount)
        SELECT user_id, currency, kind, today, 0 FROM charged ORDER BY user_id, currency, kind
        ON CONFLICT (user_id, currency, kind, day) DO UPDATE SET amount = du.amount
        RETURNING du.user_id, du.currency, du.kind, du.amount
    )
    SELECT array_agg(user_id), array_agg(currency), array_agg(kind), array_agg(amount)
    INTO usage_users, usage_currencies, usage_kinds, usage_amounts FROM locked;
    SELECT array_agg((
        SELECT min(j) FROM generate_subscripts(usage_users, 1) AS j
        WHERE usage_users[j] = p_charged_user[k] AND usage_currencies[j] = p_currency[k] AND usage_kinds[j] = p_type[k]
    ) ORDER BY k) INTO usage_of
    FROM generate_subscripts(p_tx, 1) AS k;

    FOR i IN 1 .. total LOOP
        s := src[i];
        d := dst[i];
        u := usage_of[i];
        IF NOT pending[i] THEN
            states[i] := 'WL005';
            messages[i] := 'no longer pending';
        ELSIF statuses[s] IN ('frozen', 'inactive') THEN
            states[i] := 'WL001';
            messages[i] := statuses[s];
            details[i] := p_source_role[i];
        ELSIF statuses[d] IN ('frozen', 'inactive') THEN
            states[i] := 'WL001';
            messages[i] := statuses[d];
            details[i] := p_destination_role[i];
        ELSIF balances[s] - helds[s] < p_amount[i] THEN
            states[i] := 'WL002';
            messages[i] := 'insufficient funds';
            details[i] := (balances[s] - helds[s])::text;
        ELSIF balances[d] + p_amount[i] > p_max_balance THEN
            states[i] := 'WL003';
            messages[i] := 'balance limit';
        ELSIF u IS NOT NULL AND usage_amounts[u] + p_amount[i] > p_limit[i] THEN
            states[i] := 'WL004';
            messages[i] := 'daily limit';
            details[i] := (usage_amounts[u] + p_amount[i])::text;
        ELSE
            balances[s] := balances[s] - p_amount[i];
            balances[d] := balances[d] + p_amount[i];
            IF u IS NOT NULL THEN
                usage_amounts[u] := usage_amounts[u] + p_amount[i];
            END IF;
            moved[s] := true;
            moved[d] := true;
            done[i] := true;
            source_after[i] := balances[s];
            destination_after[i] := balances[d];
        END IF;
        IF p_atomic AND states[i] IS NOT NULL THEN  -- nothing of the batch takes place
            done := array_fill(false, ARRAY[total]);
            moved := array_fill(false, ARRAY[coalesce(array_length(ids, 1), 0)]);
            EXIT;
        END IF;
    END LOOP;

    UPDATE wallets w SET balance = v.balance, updated_at = now()
    FROM unnest(ids, balances, moved) AS v (id, balance, moved) WHERE w.id = v.id AND v.moved;
    UPDATE daily_usage du SET amount = v.amount
    FROM unnest(usage_users, usage_currencies, usage_kinds, usage_amounts) AS v (user_id, currency, kind, amount)
    WHERE du.user_id = v.user_id AND du.currency = v.currency AND du.kind = v.kind AND du.day = today
        AND du.amount <> v.amount;
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT p_tx[k], CASE WHEN side = 1 THEN p_source[k] ELSE p_destination[k] END,
        CASE WHEN side = 1 THEN -p_amount[k] ELSE p_amount[k] END, p_currency[k],
        CASE WHEN side = 1 THEN source_after[k] ELSE destination_after[k] END
    FROM generate_subscripts(p_tx, 1) AS k, (VALUES (1), (2)) AS sides (side)
    WHERE done[k] ORDER BY k, side;
    UPDATE transactions t SET status = 'COMPLETED', completed_at = now()
    FROM unnest(p_tx, done) AS x (id, done) WHERE t.id = x.id AND x.done AND t.status = 'PENDING';
    GET DIAGNOSTICS marked = ROW_COUNT;
    IF marked <> (SELECT count(*) FROM unnest(done) AS x WHERE x) THEN
        -- a row decided meanwhile (only the recovery sweep does, a day on): undo it all; the retry sees it
        RAISE EXCEPTION 'a transaction of the batch is no longer PENDING';
    END IF;
    stamped := ledger_stamp(p_event_data, now());

    FOR i IN 1 .. total LOOP
        n := i;
        first_at := firsts[i];
        last_at := lasts[i];
        done_at := CASE WHEN done[i] THEN now() END;
        source_balance := source_after[i];
        destination_balance := destination_after[i];
        event_users := p_event_users[first_at:last_at];
        event_types := p_event_types[first_at:last_at];
        stamped_events := stamped[first_at:last_at];
        refused_state := states[i];
        refused_message := messages[i];
        refused_detail := details[i];
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    # A new, empty table: its index is built with it (nothing writes to it yet).
    op.create_table(
        'transfer_batches',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('initiator_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('api_key_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('idempotency_key', sa.String(length=255), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), server_default='PENDING', nullable=False),
        sa.Column('item_references', postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column('transaction_ids', postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False),
        sa.Column('item_errors', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("mode IN ('atomic', 'independent')", name=op.f('ck_transfer_batches_mode')),
        sa.CheckConstraint("status IN ('PENDING', 'COMPLETED', 'FAILED')", name=op.f('ck_transfer_batches_status')),
        sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_transfer_batches_api_key_id_api_keys')),
        sa.ForeignKeyConstraint(['initiator_id'], ['users.id'], name=op.f('fk_transfer_batches_initiator_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_transfer_batches')),
    )
    op.create_index('uq_transfer_batches_initiator_idempotency_key', 'transfer_batches',
                    ['initiator_id', 'idempotency_key'], unique=True)
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_execute_many")
    op.drop_index('uq_transfer_batches_initiator_idempotency_key', table_name='transfer_batches')
    op.drop_table('transfer_batches')
