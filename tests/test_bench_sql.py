"""The pgbench scripts `make bench` measures still run against the schema and leave the ledger audit clean:
bench/transfer.sql (the same-SQL ceiling: it mirrors the money path's statements by hand, so a schema change could
leave it behind) and bench/textbook.sql (the fixed textbook ceiling), a few transfers each on a small seeded
database."""

import subprocess

import psycopg2
import pytest
from conftest import assert_audit_ok

from bench.pgbench import SCRIPTS, pgbench_binary
from bench.seed import seed
from bench.world import BENCH
from scripts.local_services import fresh_database, libpq_url
from settings import Settings

WALLETS = 10


@pytest.mark.parametrize(("scenario", "events"), [("ceiling", 2), ("textbook", 0)])
def test_the_ceiling_scripts_run_against_the_current_schema(
    postgres_server_url, template_database, tmp_path, scenario, events
):
    script, _, key = SCRIPTS[scenario]
    with fresh_database(postgres_server_url, template=template_database) as url:
        seed(url, Settings(bcrypt_rounds=4, jwt_secret="x" * 32), WALLETS, tmp_path)
        command = [pgbench_binary(), "-n", "-M", "prepared", "-c", "2", "-t", "20", "-D", f"wallets={WALLETS}"]
        done = subprocess.run(
            [*command, "-f", str(BENCH / script), libpq_url(url)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "number of failed transactions: 0" in done.stdout, done.stdout
        with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FROM transactions"
                " WHERE idempotency_key LIKE %s",
                (f"{key}%",),
            )
            assert cur.fetchone() == (40, 40)
            cur.execute(
                "SELECT count(*) FROM entries e JOIN transactions t ON t.id = e.transaction_id"
                " WHERE t.idempotency_key LIKE %s",
                (f"{key}%",),
            )
            assert cur.fetchone()[0] == 80  # two legs each
            cur.execute("SELECT count(*) FROM events")
            assert cur.fetchone()[0] == 40 * events  # the server's SQL tells the sender and the recipient
        assert_audit_ok(url)
