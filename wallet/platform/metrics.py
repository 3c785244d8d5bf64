"""Prometheus metrics of the whole server: each process writes its own files in one directory, /metrics adds them up."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from wallet.platform import release

# The process whose children are the workers (itself when it serves alone); set by `start`.
_root_pid = os.getpid()
_PREFIX = "wallet-metrics-"


def start(root_pid: int) -> Path:
    """Before the first metric is touched and before workers fork: prometheus-client picks its multiprocess mode when
    a metric is created, from PROMETHEUS_MULTIPROC_DIR, so every process of this server writes in the fresh folder
    returned (the caller removes it at exit). Folders of servers that died without removing theirs go first."""
    global _root_pid
    for stale in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        owner = stale.name.removeprefix(_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{root_pid}-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _root_pid = root_pid
    return directory


def worker_stopped(pid: int) -> None:
    """A worker died: its live gauges (connections in use, waiting) no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


@functools.cache
def _m() -> SimpleNamespace:
    # Created on first use, in the worker, after `start` has named the directory.
    from prometheus_client import Counter, Gauge, Histogram

    return SimpleNamespace(
        requests=Counter("wallet_http_requests", "HTTP requests answered", ["route", "method", "status"]),
        latency=Histogram("wallet_http_request_duration_seconds", "Time to answer", ["route", "method"]),
        money=Counter("wallet_money_operations", "Money operations by type and outcome", ["type", "outcome"]),
        login_failures=Counter("wallet_login_failures", "Logins refused for wrong credentials"),
        throttled=Counter("wallet_login_throttled", "Password and code attempts refused by the throttle", ["scope"]),
        pool_in_use=Gauge("wallet_db_pool_in_use", "Database connections checked out", multiprocess_mode="livesum"),
        pool_waiting=Gauge(
            "wallet_db_pool_waiting", "Requests waiting for a database connection", multiprocess_mode="livesum"
        ),
        batches=Histogram(
            "wallet_ledger_statement_operations",
            "Money operations per step-2 statement (1 alone, more when the group commit batched them)",
            buckets=(1, 2, 4, 8, 16, 32),
        ),
        batch_failures=Counter(
            "wallet_ledger_batch_failures", "Group-commit batches that failed as a whole and went one by one"
        ),
        sweeps=Counter("wallet_recovery_sweeps", "Recovery sweeps run", ["sweep"]),
        interrupted=Counter(
            "wallet_interrupted_operations", "Operations failed by a recovery sweep (INTERRUPTED, given up)", ["sweep"]
        ),
        # One series per live process (its pid a label): 1 on the one process of the cluster that runs the job.
        job_leader=Gauge(
            "wallet_job_leader",
            "1 when this process runs the periodic job for the cluster",
            ["job"],
            multiprocess_mode="liveall",
        ),
    )


def request(route: str, method: str, status: int, seconds: float) -> None:
    m = _m()
    m.requests.labels(route, method, status).inc()
    m.latency.labels(route, method).observe(seconds)


def money(type_: str, outcome: str) -> None:
    _m().money.labels(type_, outcome).inc()


def ledger_statement(operations: int) -> None:
    _m().batches.observe(operations)


def ledger_batch_failed() -> None:
    _m().batch_failures.inc()


def login_failed() -> None:
    _m().login_failures.inc()


def login_throttled(scope: str) -> None:
    _m().throttled.labels(scope).inc()


def pool_checkout(change: int) -> None:
    _m().pool_in_use.inc(change)


@contextlib.contextmanager
def waiting_for_connection() -> Iterator[None]:
    waiting = _m().pool_waiting
    waiting.inc()
    try:
        yield
    finally:
        waiting.dec()


def recovery_sweep(sweep: str, failed: int) -> None:
    m = _m()
    m.sweeps.labels(sweep).inc()
    m.interrupted.labels(sweep).inc(failed)


def job_leader(job: str, leads: bool) -> None:
    _m().job_leader.labels(job).set(int(leads))


def _server_pids() -> list[int]:
    children = Path(f"/proc/{_root_pid}/task/{_root_pid}/children")
    return [_root_pid, *(int(pid) for pid in children.read_text().split())] if children.exists() else [_root_pid]


class _ServerProcesses:
    """process_* of the parent and its workers added up (prometheus-client's own collector sees one process), how many
    there are, and the release they run."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.process_collector import ProcessCollector

        totals: dict[str, Any] = {}
        pids = _server_pids()
        for pid in pids:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                if family.name in ("process_max_fds", "process_start_time_seconds") and pid != _root_pid:
                    continue  # the server's limit and start are the parent's
                if family.name not in totals:
                    totals[family.name] = family
                    continue
                total = totals[family.name]
                total.samples = [s._replace(value=s.value + family.samples[0].value) for s in total.samples]
        yield from totals.values()
        yield GaugeMetricFamily("wallet_processes", "Processes of this server (parent and workers)", len(pids))
        build = GaugeMetricFamily("wallet_build_info", "The release this server runs", labels=["version", "revision"])
        build.add_metric([release.version(), release.revision()], 1)
        yield build


class _Outbox:
    """The outbox's backlog as read from the database for this scrape (the same for every process)."""

    def __init__(self, lanes: Mapping[str, tuple[int, float]]) -> None:
        self.lanes = lanes

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        pending = GaugeMetricFamily("wallet_outbox_pending", "Deliveries waiting to be sent", labels=["lane"])
        oldest = GaugeMetricFamily(
            "wallet_outbox_oldest_pending_seconds", "Age of the oldest delivery waiting to be sent", labels=["lane"]
        )
        for lane, (count, age) in self.lanes.items():
            pending.add_metric([lane], count)
            oldest.add_metric([lane], age)
        yield from (pending, oldest)


class _Replica:
    """The replication lag of DATABASE_READ_URL's replica, read for this scrape."""

    def __init__(self, lag: float) -> None:
        self.lag = lag

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "wallet_replica_lag_seconds", "How far DATABASE_READ_URL's replica is behind the leader", self.lag
        )


def render(outbox: Mapping[str, tuple[int, float]], replica_lag: float | None = None) -> tuple[bytes, str]:
    """The whole server's metrics in the Prometheus text format, and their content type; `outbox` is the backlog by
    lane, (pending, age of the oldest in seconds), or empty when it could not be read; `replica_lag` the seconds
    DATABASE_READ_URL's replica lags (None without one, or when it could not be read)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_ServerProcesses())
    registry.register(_Outbox(outbox))
    if replica_lag is not None:
        registry.register(_Replica(replica_lag))
    return generate_latest(registry), CONTENT_TYPE_LATEST
