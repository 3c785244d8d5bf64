-- The ceiling: the SQL one transfer runs (wallet/ledger.py), as a pgbench script over the seeded wallets.
-- pgbench -n -M prepared -D wallets=1000 -f bench/transfer.sql; bench_user(n) / bench_wallet(n) are the seeded ids.
\set a random(1, :wallets)
\set b random(1, :wallets - 1)
\if :b >= :a
\set b :b + 1
\endif
-- Read the two parties (the caller's wallet and the recipient's) in one statement, outside a transaction.
SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
 WHERE w.id IN (bench_wallet(:a), bench_wallet(:b));
-- 1. Record the PENDING row in one statement whose commit does not wait for the disk (or take over an abandoned one).
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO transactions AS t (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
    source_user_id, destination_user_id, initiator_id, api_key_id, idempotency_key, request_hash, description,
    provider, provider_reference)
SELECT gen_random_uuid(), 'TX' || upper(substr(md5(random()::text), 1, 16)), 'TRANSFER', 1, 'USD',
    bench_wallet(:a), bench_wallet(:b), bench_user(:a), bench_user(:b), bench_user(:a), NULL,
    'pgbench-' || gen_random_uuid(), md5(random()::text) || md5(random()::text), NULL, NULL, NULL
FROM relaxed
ON CONFLICT (initiator_id, idempotency_key) DO UPDATE SET claimed_at = now()
WHERE t.status = 'PENDING' AND t.provider IS NULL AND t.claimed_at < now() - CAST('60 seconds' AS interval)
    AND t.request_hash = excluded.request_hash
    AND t.source_wallet_id IS NOT DISTINCT FROM excluded.source_wallet_id
    AND t.destination_wallet_id IS NOT DISTINCT FROM excluded.destination_wallet_id
RETURNING id AS tx, reference, created_at \gset
-- 2. Execute in one statement, outside an explicit transaction (one durable commit): ledger_execute() locks both
-- wallets in id order, checks status, funds and the daily limit, charges the daily usage, moves the balances, appends
-- the entries, marks the row COMPLETED and stamps completed_at into the events' data; the CTEs after it write the
-- two events (wallet/events.py: the per-user head locks, the rows, their webhook deliveries).
WITH done AS MATERIALIZED (
    SELECT * FROM ledger_execute(CAST(:tx AS uuid), 'TRANSFER', CAST(1 AS bigint), 'USD',
        bench_wallet(:a), bench_wallet(:b), CAST(NULL AS uuid), bench_user(:a),
        CAST(1000000000 AS bigint), CAST(0 AS bigint), CAST(1000000000000000000 AS bigint), 'sending',
        'recipient''s',
        -- A rendered Transaction is about 600 bytes.
        ARRAY[json_build_object('id', CAST(:tx AS text), 'completed_at', NULL, 'pad', repeat('x', 530))::text,
              json_build_object('id', CAST(:tx AS text), 'completed_at', NULL, 'pad', repeat('y', 530))::text])
), new_events (user_id, type, data, n) AS (
    SELECT * FROM unnest(ARRAY[bench_user(:a), bench_user(:b)],
        ARRAY['transaction.completed', 'transfer.received'], (SELECT stamped_events FROM done)) WITH ORDINALITY
), event_locks AS (
    INSERT INTO event_heads AS h (user_id, last_event_at)
    SELECT DISTINCT user_id, now() FROM new_events ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET last_event_at = excluded.last_event_at
    RETURNING h.user_id
), emitted AS (
    INSERT INTO events (user_id, type, data)
    SELECT n.user_id, n.type, CAST(n.data AS jsonb) FROM new_events n JOIN event_locks l ON l.user_id = n.user_id
    ORDER BY n.n
    RETURNING id, user_id, type
), queued AS (
    INSERT INTO deliveries (id, channel, endpoint_id, event_id, next_attempt_at)
    SELECT gen_random_uuid(), 'webhook', w.id, e.id, now()
    FROM emitted e JOIN webhook_endpoints w ON w.user_id = e.user_id
    WHERE w.status = 'active' AND (e.type = ANY(w.event_types) OR '*' = ANY(w.event_types))
    UNION ALL
    SELECT gen_random_uuid(), 'email', NULL, e.id, now() FROM emitted e JOIN users u ON u.id = e.user_id
    WHERE u.email IS NOT NULL AND e.type = ANY(ARRAY['transfer.received', 'deposit.completed', 'account.frozen',
        'account.unfrozen', 'account.deactivated'])
)
SELECT done_at, source_balance, destination_balance FROM done;
