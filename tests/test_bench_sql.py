"""bench/transfer.sql, the ceiling `make bench` measures, still runs against the schema (it mirrors the money path's
statements by hand, so a schema change could leave it behind): a few transfers on a small seeded database."""

import subprocess

import psycopg2
from conftest import run_audit

from bench.run import BENCH, pgbench_binary
from bench.seed import seed
from scripts.local_services import fresh_database, libpq_url
from settings import Settings

WALLETS = 10


def test_the_ceiling_script_runs_against_the_current_schema(postgres_server_url, tmp_path):
    with fresh_database(postgres_server_url) as url:
        seed(url, Settings(bcrypt_rounds=4, jwt_secret="x" * 32), WALLETS, tmp_path)
        command = [pgbench_binary(), "-n", "-M", "prepared", "-c", "2", "-t", "20", "-D", f"wallets={WALLETS}"]
        done = subprocess.run(
            [*command, "-f", str(BENCH / "transfer.sql"), libpq_url(url)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "number of failed transactions: 0" in done.stdout, done.stdout
        with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM transactions WHERE idempotency_key LIKE 'pgbench-%' AND status = 'COMPLETED'"
            )
            assert cur.fetchone()[0] == 40
            cur.execute("SELECT count(*) FROM events")
            assert cur.fetchone()[0] == 80  # each transfer tells the sender and the recipient
        assert run_audit(url).returncode == 0
