-- The textbook ceiling: a plain transfer as separate statements in one transaction, as a pgbench script over the
-- seeded wallets. A fixed reference: unlike bench/transfer.sql it does not follow the server's SQL, so our ratio to
-- it shows what the money path gains or loses against the obvious way of writing a transfer.
-- pgbench -n -M prepared -D wallets=1000 -f bench/textbook.sql; bench_user(n) / bench_wallet(n) are the seeded ids.
\set a random(1, :wallets)
\set b random(1, :wallets - 1)
\if :b >= :a
\set b :b + 1
\endif
BEGIN;
INSERT INTO transactions (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
    source_user_id, destination_user_id, initiator_id, idempotency_key, request_hash)
VALUES (gen_random_uuid(), 'TB' || upper(substr(md5(random()::text), 1, 16)), 'TRANSFER', 1, 'USD',
    bench_wallet(:a), bench_wallet(:b), bench_user(:a), bench_user(:b), bench_user(:a),
    'textbook-' || gen_random_uuid(), repeat('0', 64))
RETURNING id AS tx \gset
SELECT id FROM wallets WHERE id IN (bench_wallet(:a), bench_wallet(:b)) ORDER BY id FOR NO KEY UPDATE;
UPDATE wallets SET balance = balance - 1, updated_at = now() WHERE id = bench_wallet(:a) RETURNING balance AS src \gset
UPDATE wallets SET balance = balance + 1, updated_at = now() WHERE id = bench_wallet(:b) RETURNING balance AS dst \gset
INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
VALUES (CAST(:tx AS uuid), bench_wallet(:a), -1, 'USD', :src);
INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
VALUES (CAST(:tx AS uuid), bench_wallet(:b), 1, 'USD', :dst);
UPDATE transactions SET status = 'COMPLETED', completed_at = now() WHERE id = CAST(:tx AS uuid);
COMMIT;
