"""DATABASE_READ_URL: statements read the replica it names, while balances, histories and every write stay on
DATABASE_URL (read-your-writes); the replica's lag is in /metrics. The "replica" here is another database, a copy of
the migrated template without this test's rows: what a replica far behind would show, so each read's source is plain.
(tests/test_cluster_bank.py's cluster serves its statements from Patroni's replicas through HAProxy's read port.)"""

from __future__ import annotations

from conftest import assert_error, balance, fund, make_user
from test_metrics import TOKEN, scrape, value

from scripts.local_services import fresh_database


def test_statements_read_the_replica_and_the_rest_the_leader(own_server, postgres_server_url, template_database):
    with fresh_database(postgres_server_url, template=template_database) as behind:
        server = own_server(DATABASE_READ_URL=behind, METRICS_TOKEN=TOKEN)
        user = make_user(server)
        fund(server, user, "10.00")
        # Read-your-writes: the balance and the history right after the deposit come from the leader.
        assert balance(server, user) == "10.00"
        with server.client(user.token) as api:
            history = api.get(f"/wallets/{user.wallet_id}/transactions")
            assert history.status_code == 200, history.text
            assert [t["amount"] for t in history.json()["items"]] == ["10.00"]
            # The statement reads the replica, which has not seen this wallet yet.
            assert_error(api.get(f"/wallets/{user.wallet_id}/statement"), 404, "NOT_FOUND")
        # A primary in the replica's place has nothing left to replay.
        assert ("wallet_replica_lag_seconds", ()) in (samples := scrape(server.url))
        assert value(samples, "wallet_replica_lag_seconds") == 0


def test_without_a_read_url_statements_read_the_leader_and_no_lag_is_reported(own_server):
    server = own_server(METRICS_TOKEN=TOKEN)
    user = make_user(server)
    fund(server, user, "10.00")
    with server.client(user.token) as api:
        r = api.get(f"/wallets/{user.wallet_id}/statement")
        assert r.status_code == 200, r.text
        assert r.json()["closing_balance"] == "10.00"
    assert not [name for name, _ in scrape(server.url) if name == "wallet_replica_lag_seconds"]
