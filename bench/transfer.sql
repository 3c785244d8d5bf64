-- The ceiling: the SQL one transfer runs (wallet/ledger/lifecycle.py), as a pgbench script over the seeded wallets: its two
-- statements as they run for a transfer alone. (Under load the server's group commit sends the step 2 of many
-- transfers as one ledger_execute_batch() call, which runs this same ledger_execute() for each: the server can pass
-- this ceiling, one transfer per commit, that way.)
-- pgbench -n -M prepared -D wallets=1000 -f bench/transfer.sql; bench_user(n) / bench_wallet(n) are the seeded ids.
\set a random(1, :wallets)
\set b random(1, :wallets - 1)
\if :b >= :a
\set b :b + 1
\endif
-- 1. Resolve the parties (the caller's wallet by id, the recipient by wallet id) and record the PENDING row (or take
-- over an abandoned one) in one statement whose commit does not wait for the disk: wallet/ledger/record.py's
-- _RESOLVE_AND_RECORD with this script's values in place of its parameters.
\set k random(1, 1000000000000000)
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
named AS (
    SELECT w.id, w.user_id, u.username, w.number, w.currency, w.name, w.status, w.created_at
    FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.id = bench_wallet(:a) AND w.user_id = coalesce(bench_user(:a), w.user_id)
), recipient_user AS (
    SELECT id FROM users WHERE lower(username) = lower(CAST(NULL AS text))
    UNION ALL
    SELECT id FROM users WHERE phone = CAST(NULL AS text)
), recipient AS (
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.id = bench_wallet(:b)
    UNION ALL
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.number = CAST(NULL AS text)
    UNION ALL
    (SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
     WHERE w.user_id = (SELECT id FROM recipient_user) AND w.currency = (SELECT currency FROM named)
     ORDER BY w.created_at, w.id LIMIT 1)
), 
inserted AS (
    INSERT INTO transactions AS t (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
        source_user_id, destination_user_id, initiator_id, api_key_id, idempotency_key, request_hash, description,
        provider, provider_reference, hold_id, reverses)
    
    SELECT gen_random_uuid(), 'TX' || upper(substr(md5(random()::text), 1, 16)), CAST('TRANSFER' AS text), CAST(1 AS bigint), n.currency,
        CASE WHEN c.deposit THEN NULL ELSE n.id END, CASE WHEN c.deposit THEN n.id ELSE r.id END,
        CASE WHEN c.deposit THEN NULL ELSE n.user_id END, CASE WHEN c.deposit THEN n.user_id ELSE r.user_id END,
        bench_user(:a), CAST(NULL AS uuid), ('pgbench-' || :client_id || '-' || :k), md5(random()::text) || md5(random()::text), NULL,
        NULL, NULL, NULL, NULL
    FROM relaxed, (SELECT CAST('TRANSFER' AS text) = 'DEPOSIT' AS deposit) c, named n LEFT JOIN recipient r ON true
    WHERE n.currency = 'USD' AND CAST(1 AS bigint) IS NOT NULL
        AND (CAST('TRANSFER' AS text) <> 'TRANSFER' OR (r.id <> n.id AND r.currency = n.currency))
    ON CONFLICT (initiator_id, idempotency_key) DO UPDATE SET claimed_at = now()
    WHERE t.status = 'PENDING' AND t.provider IS NULL AND t.claimed_at < now() - CAST('60 seconds' AS interval)
        AND t.request_hash = excluded.request_hash
        AND t.source_wallet_id IS NOT DISTINCT FROM excluded.source_wallet_id
        AND t.destination_wallet_id IS NOT DISTINCT FROM excluded.destination_wallet_id
    RETURNING id, reference, created_at
), claim AS (
    SELECT i.id AS tx_id, i.reference, i.created_at, e.id AS existing_id, e.request_hash AS existing_hash
    FROM (SELECT 1) AS one LEFT JOIN inserted i ON true
    LEFT JOIN transactions e ON i.id IS NULL AND e.initiator_id = bench_user(:a)
        AND e.idempotency_key = ('pgbench-' || :client_id || '-' || :k)
)
SELECT c.tx_id AS tx, n.id AS named_id, r.id AS to_id, EXISTS (SELECT 1 FROM recipient_user) AS found
FROM claim c LEFT JOIN named n ON true LEFT JOIN recipient r ON true \gset
-- 2. Execute in one statement, outside an explicit transaction (one durable commit): ledger_execute() locks both
-- wallets in id order, checks status, funds and the daily limit, charges the daily usage, moves the balances, appends
-- the entries, marks the row COMPLETED and stamps completed_at into the events' data; the CTEs after it write the
-- two events (wallet/notify/events.py: the per-user head locks, the rows, their webhook deliveries).
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
