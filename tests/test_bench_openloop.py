"""bench/openloop.py's read load (what `make bench` offers beside the logins) against the test server: the reads of
bench/wrk.lua, every one answered, and --max-connections holds the generator to that many connections however far
the answers fall behind the offered rate."""

import json
import subprocess
import sys

from conftest import ROOT, make_user


def openloop(url: str, users_file: str, *options: str) -> dict:
    command = [sys.executable, "-m", "bench.openloop", url, users_file, "reads", "1000", "0.3", "--load", "read"]
    done = subprocess.run([*command, *options], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.split("BENCH ", 1)[1])


def test_reads_offered_open_loop_stay_within_the_connection_cap(server, tmp_path):
    user, users_file = make_user(server), tmp_path / "users.tsv"
    users_file.write_text(f"{user.token}\t{user.wallet_id}\t{user.username}\n")
    free = openloop(server.url, str(users_file))
    assert free["statuses"] == {"200": 300} and free["unanswered"] == {}
    assert free["connections"] > 2  # 1,000 reads a second overlap: without a cap the generator opens more
    capped = openloop(server.url, str(users_file), "--max-connections", "2")
    assert capped["statuses"] == {"200": 300} and capped["unanswered"] == {}
    assert capped["connections"] <= 2
