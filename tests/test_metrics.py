"""GET /metrics: Prometheus text of the whole server (every worker process), behind METRICS_TOKEN."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, Server, assert_error, checkout_release, make_user
from prometheus_client.parser import text_string_to_metric_families

from scripts.local_services import fresh_database

TOKEN = "scrape-" + "t" * 24


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def two_workers(server_env, tmp_path_factory, postgres_server_url, template_database) -> Iterator[Server]:
    """Stopped with this module, not the session: every server keeps its database connections while it runs. On a
    database of its own, so that the periodic jobs of the cluster (here, of this server) are its own to lead."""
    with fresh_database(postgres_server_url, template=template_database) as url:
        settings = {"PROCESSES": "2", "METRICS_TOKEN": TOKEN, "RECOVERY_INTERVAL": "1", "DB_POOL_SIZE": "4"}
        server = Server({**server_env, **settings, "DATABASE_URL": url}, tmp_path_factory.mktemp("metrics") / "log")
        yield server.start()
        server.stop()


def test_counts_add_up_across_two_worker_processes(two_workers):
    server = two_workers
    # Many short connections at once: the two workers both accept some of them.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: httpx.get(f"{server.url}/health", verify=False).status_code, range(200)))
    assert statuses == [200] * 200
    seen = set()
    for _ in range(10):  # each scrape is answered by either worker, and every one sees the whole server
        samples = scrape(server.url)
        seen.add(value(samples, "wallet_http_requests_total", route="/health", method="GET", status="200"))
        assert value(samples, "wallet_processes") == 3  # the parent and two workers
        assert value(samples, "process_resident_memory_bytes") > 0
        assert value(samples, "process_cpu_seconds_total") > 0
    assert seen == {200.0}
    assert value(samples, "wallet_http_request_duration_seconds_count", route="/health", method="GET") == 200


def test_the_release_is_a_gauge(two_workers):
    version, revision = checkout_release()
    builds = {labels: v for (name, labels), v in scrape(two_workers.url).items() if name == "wallet_build_info"}
    assert builds == {(("revision", revision), ("version", version)): 1}


def test_requests_are_counted_by_route_template_not_path(two_workers):
    user = make_user(two_workers)
    with two_workers.client(user.token) as api:
        for _ in range(3):
            assert api.get(f"/wallets/{user.wallet_id}/balance").status_code == 200
        assert api.get("/no/such/path").status_code == 404
    samples = scrape(two_workers.url)
    route = "/api/v1/wallets/{wallet_id}/balance"
    assert value(samples, "wallet_http_requests_total", route=route, method="GET", status="200") == 3
    assert value(samples, "wallet_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not [key for key in samples if user.wallet_id in str(key)]


def test_money_logins_pool_and_recovery(two_workers):
    user = make_user(two_workers)
    before = scrape(two_workers.url)
    with two_workers.client(user.token) as api:
        for amount in ("5.00", "7.00"):
            assert api.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": amount}).status_code == 201
        r = api.post(f"/wallets/{user.wallet_id}/withdraw", json={"amount": "100.00"})
        assert_error(r, 400, "INSUFFICIENT_FUNDS")
        for _ in range(2):
            r = api.post("/auth/login", json={"username": user.username, "password": PASSWORD + "x"})
            assert r.status_code == 401
    time.sleep(2.5)  # RECOVERY_INTERVAL=1: the worker leading the sweep runs it about once a second
    after = scrape(two_workers.url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("wallet_money_operations_total", type="DEPOSIT", outcome="COMPLETED") == 2
    assert grew("wallet_money_operations_total", type="WITHDRAWAL", outcome="INSUFFICIENT_FUNDS") == 1
    assert grew("wallet_login_failures_total") == 2
    assert grew("wallet_recovery_sweeps_total", sweep="interrupted transactions") >= 2
    assert value(after, "wallet_interrupted_operations_total", sweep="interrupted transactions") == 0
    # One worker leads each periodic job of the cluster, the other follows (docs/operations.md#several-hosts).
    leaders = [(dict(labels)["job"], v) for (name, labels), v in after.items() if name == "wallet_job_leader"]
    for job in ("interrupted-transactions", "provider-deposits", "hold-expiry"):
        assert sorted(v for led, v in leaders if led == job) == [0, 1], leaders
    # Idle now: no connection checked out and nobody waiting, in any worker. The sweeps and the revocation poll take a
    # connection for a moment every second, so one scrape may catch one in use; a leaked one would never come back.
    assert ("wallet_db_pool_in_use", ()) in after and ("wallet_db_pool_waiting", ()) in after
    for _ in range(50):
        if value(after, "wallet_db_pool_in_use") == 0 and value(after, "wallet_db_pool_waiting") == 0:
            break
        time.sleep(0.1)
        after = scrape(two_workers.url)
    assert value(after, "wallet_db_pool_in_use") == 0 and value(after, "wallet_db_pool_waiting") == 0


def test_login_throttles_are_counted(server_env, tmp_path):
    settings = {"METRICS_TOKEN": TOKEN, "LOGIN_MAX_FAILURES": "2"}
    server = Server({**server_env, **settings, "DB_POOL_SIZE": "2"}, tmp_path / "server.log").start()
    try:
        user = make_user(server)
        with server.client() as api:
            codes = [
                api.post("/auth/login", json={"username": user.username, "password": "wrong-" + PASSWORD}).status_code
                for _ in range(4)
            ]
        samples = scrape(server.url)
    finally:
        server.stop()
    assert codes == [401, 401, 429, 429]
    assert value(samples, "wallet_login_failures_total") == 2
    assert value(samples, "wallet_login_throttled_total", scope="account") == 2


def test_metrics_need_the_token(two_workers, server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = httpx.get(f"{two_workers.url}/metrics", headers=headers)
        assert_error(r, 401, "INVALID_TOKEN")
        assert "wallet_" not in r.text
    # A server without METRICS_TOKEN has no /metrics at all.
    assert_error(httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}), 404, "NOT_FOUND")


def test_the_metrics_folder_lives_as_long_as_its_server(server_env, tmp_path):
    """Removed at a clean stop; the folder of a server killed with SIGKILL is removed by the next start."""
    settings = {**server_env, "METRICS_TOKEN": TOKEN, "DB_POOL_SIZE": "2"}

    def folders(server: Server) -> list[Path]:
        return list(Path(tempfile.gettempdir()).glob(f"wallet-metrics-{server.proc.pid}-*"))

    killed = Server(settings, tmp_path / "killed.log").start()
    killed.kill()
    left = folders(killed)
    assert len(left) == 1
    second = Server(settings, tmp_path / "second.log").start()
    try:
        assert not left[0].exists() and len(folders(second)) == 1
    finally:
        second.stop()
    assert folders(second) == []
