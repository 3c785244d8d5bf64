"""`make bench`'s large world (bench/large.py), at a tiny size through the same code: the COPY seed leaves a ledger
the audit passes, with the merchant's deep history; `--world large` runs its scenarios on the small world and on
it, and every correctness check passes."""

import os
import shutil
import subprocess
import sys

import psycopg2
import pytest
from conftest import assert_audit_ok

from bench.large import cursors, grow
from bench.run import ROOT, passed
from scripts.local_services import fresh_database, libpq_url
from settings import Settings

WALLETS, ENTRIES = 2000, 20_000


def test_the_large_world_is_written_whole_and_passes_the_audit(postgres_server_url, template_database, tmp_path):
    with fresh_database(postgres_server_url, template=template_database) as url:
        said: list[str] = []
        users, merchant, token = grow(
            url, Settings(bcrypt_rounds=4, jwt_secret="x" * 32), WALLETS, ENTRIES, 1000, tmp_path, said.append
        )
        assert any(f"{ENTRIES:,} of {ENTRIES:,} entries (100%)" in line for line in said)  # the progress
        assert len(users.read_text().splitlines()) == 1000 and token
        with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT transaction_id) FROM entries")
            assert cur.fetchone() == (ENTRIES, ENTRIES // 2)
            cur.execute("SELECT count(*), min(balance) FROM wallets WHERE NOT is_system")
            count, lowest = cur.fetchone()
            assert count == WALLETS + 1 and lowest >= 0
            # the indexes dropped for the COPY are back, valid
            cur.execute(
                "SELECT count(*) FILTER (WHERE NOT i.indisvalid), count(*) FROM pg_index i"
                " WHERE i.indrelid IN ('transactions'::regclass, 'entries'::regclass)"
            )
            invalid, indexes = cur.fetchone()
            assert invalid == 0 and indexes >= 15
            cur.execute("SHOW session_replication_role")
            assert cur.fetchone()[0] == "origin"
        conn.close()
        found, depth = cursors(url, merchant)
        assert depth > (ENTRIES // 2 - WALLETS) * 0.03 and len(found) == 10  # one busy wallet, deep in history
        assert_audit_ok(url)


@pytest.mark.bench
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (make bench installs it)")
@pytest.mark.slow
def test_world_large_runs_the_scenarios_on_both_worlds_and_every_check_passes():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    command = [sys.executable, "-m", "bench.run", "--world", "large", "--wallets", str(WALLETS)]
    command += ["--entries", str(ENTRIES), "--seconds", "1", "--processes", "1", "--connections", "8"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "large world: 20,000 of 20,000 entries (100%)" in out  # the seed's progress
    small, large = out.split("\nsmall (1,000 wallets):")[1].split(
        f"\nlarge ({WALLETS:,} wallets, {ENTRIES:,} entries):"
    )
    for table in (small, large):
        for scenario in ("transfer", "hot", "read", "transfer+deep", "deep", "statement"):
            assert f"| {scenario} " in table
        assert "sweeps: interrupted transactions " in table and "sizes (" in table
    assert "depths of the merchant's" in large
    assert "transfer, 1 proc: req/s " in out.split("large / small:")[1]
    assert "audit " in out.split("large world targets:")[1]
    checks = out.split("checks:\n")[1].splitlines()
    # transfer, hot and the transfers beside deep's reads, and the audit, on each world
    assert len(checks) == 8 and all(passed(c) for c in checks), checks
