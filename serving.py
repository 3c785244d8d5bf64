"""The serving process: the routes and make_app(settings), the worker processes, the background jobs each
runs (led or not), and the drain on SIGTERM. server.py imports it only to serve: the other commands start without
the application (Tornado, the handlers and their schemas), a third sooner (`--help`: 1.10 -> 0.71 s)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import logging
import os
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvloop
from tornado import netutil, web

from handlers import (
    admin,
    auth,
    base,
    connections,
    deposits,
    docs,
    events,
    fx,
    google,
    holds,
    keys,
    money,
    ops,
    payment_requests,
    payouts,
    schedules,
    sessions,
    statements,
    two_factor,
    users,
    wallets,
    webapp,
    webhooks,
)
from handlers.base import implemented_verbs
from handlers.openapi import api_routes, openapi_path
from settings import Settings, StartupError, notify_socket
from wallet.errors import ServiceUnavailable
from wallet.identity.auth import poll_revocations
from wallet.ledger import lifecycle
from wallet.notify import dispatch
from wallet.notify import events as wallet_events
from wallet.operations import deposits as provider_deposits
from wallet.operations import holds as wallet_holds
from wallet.operations import payment_requests as wallet_payment_requests
from wallet.operations import payouts as wallet_payouts
from wallet.operations import schedules as wallet_schedules
from wallet.platform import metrics
from wallet.platform.db import migrate, resolve_database, schema
from wallet.platform.leadership import Leadership
from wallet.platform.logs import LoopLog, set_worker
from wallet.platform.membership import HEARTBEAT, Membership, check_key, key_fingerprint
from wallet.platform.runtime import Runtime
from wallet.platform.store import check_redis

log = logging.getLogger("wallet.server")


# The parent of PROCESSES workers kills one still running this long after SHUTDOWN_GRACE (its own cut-off, logged by
# the worker, comes first).
WORKER_GRACE_MARGIN = 5

# The cyclic garbage collector's thresholds once a process serves. Python's default (700 net new objects) runs a
# young collection several times per request, each moving the objects of the requests then in flight to an older
# generation, whose collections (up to the whole heap: 60-80 ms, a pause of the event loop) then grow with them; a
# younger generation of 10,000 is collected a few times a second under load, when most of those objects are gone.
GC_THRESHOLD = (10_000, 10, 10)

ROUTES = [
    *ops.routes,
    *docs.routes,
    *auth.routes,
    *google.routes,
    *users.routes,
    *two_factor.routes,
    *sessions.routes,
    *wallets.routes,
    *statements.routes,
    *money.routes,
    *holds.routes,
    *payment_requests.routes,
    *schedules.routes,
    *fx.routes,
    *deposits.routes,
    *payouts.routes,
    *keys.routes,
    *admin.routes,
    *events.routes,
    *webhooks.routes,
    *webapp.routes,
]


def _route_templates() -> dict[type[web.RequestHandler], str]:
    """Requests are counted by route template (/api/v1/wallets/{wallet_id}), never by raw path (a series per id);
    a redirect or static route by its pattern."""
    templates: dict[type[web.RequestHandler], str] = {handler: pattern for pattern, handler, *_ in ROUTES}
    for pattern, handler in api_routes(route[:2] for route in ROUTES):
        templates[handler] = openapi_path(pattern, next(iter(implemented_verbs(handler).values())))[0]
    return templates


def make_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    runtime = runtime or Runtime.create(settings)
    return base.Application(
        ROUTES,
        runtime=runtime,
        route_templates=_route_templates(),
        event_hub=wallet_events.Hub(runtime),
        default_handler_class=base.NotFoundHandler,
        log_function=base.log_request,
        compress_response=False,
        serve_traceback=False,
    )


async def _sweep(rt: Runtime, sweep: Callable[[Runtime], Awaitable[int]], what: str) -> None:
    failed = await sweep(rt)
    metrics.recovery_sweep(what, failed)
    if failed:
        log.warning(f"{what} failed", extra={"count": failed})


@dataclass(frozen=True)
class _Job:
    """A periodic job: `step` every `interval` seconds; with `cluster`, run by one process of the whole cluster (its
    leader, wallet/platform/leadership.py), otherwise by each process."""

    name: str  # its metric label and lock
    what: str  # for the log
    interval: int
    step: Callable[[], Awaitable[None]]
    cluster: bool = True
    # The settings that shape its runs: processes configured alike share one leader (wallet/platform/leadership.py).
    variant: tuple[object, ...] = ()


async def _periodically(job: _Job, leadership: Leadership, stopping: asyncio.Event) -> None:
    """Run the job every interval until `stopping` is set (a run under way finishes first, then a leader resigns);
    a failed run is logged (LoopLog) and retried. Each job has its own loop, so a slow provider delays no other."""
    report = LoopLog(log, job.what)
    while not stopping.is_set():
        try:
            if not job.cluster or await leadership.leads(job.name, repr(job.variant)):
                await job.step()
            report.ok()
        except Exception as error:
            report.failed(error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), job.interval)
    if job.cluster:
        await leadership.resign(job.name)


class _Signals:
    """SIGTERM (or SIGINT) once: drain. Twice: stop now."""

    def __init__(self) -> None:
        self.first, self.second = asyncio.Event(), asyncio.Event()

    def received(self) -> None:
        (self.second if self.first.is_set() else self.first).set()


async def _serve(settings: Settings, sockets: list[Any], fd_limit: int, forked: bool, schema_revision: str) -> None:
    rt = Runtime.create(settings)
    membership = Membership(rt, schema_revision)
    # Every revocation still in force is known before the first request is answered.
    await poll_revocations(rt)
    app = make_app(settings, rt)
    max_connections = connections.connection_cap(settings.max_connections, fd_limit, settings.db_pool_size)
    server = connections.CappedHTTPServer(
        app,
        max_body_size=settings.max_body_size,
        # Also the time allowed for a request's headers: a client dribbling them is cut off like an idle one.
        idle_connection_timeout=settings.idle_timeout,
        body_timeout=settings.body_timeout,
        max_connections=max_connections,
    )
    server.add_sockets(sockets)
    every = settings.recovery_interval
    stopping = asyncio.Event()
    assert settings.database_url
    # A leader's lock lives as long as its session: DATABASE_SESSION_URL reaches PostgreSQL around a transaction pooler.
    leadership = Leadership(settings.database_session_url or settings.database_url)
    jobs = [
        _Job(
            "interrupted-transactions",
            "recovery sweep of interrupted transactions",
            every,
            lambda: _sweep(rt, lifecycle.recover_interrupted, "interrupted transactions"),
            variant=(every, settings.pending_timeout),
        ),
        _Job(
            "provider-deposits",
            "recovery sweep of provider deposits",
            every,
            lambda: _sweep(rt, provider_deposits.sweep, "provider deposits"),
            variant=(
                every,
                settings.pending_timeout,
                settings.paystack_pending_timeout,
                settings.paystack_base_url,
                key_fingerprint(settings.paystack_secret_key or ""),
            ),
        ),
        # Paystack's word on the payouts whose webhook is late, and the transfers a dead server left unsent.
        _Job(
            "payout-verification",
            "verification sweep of payouts",
            every,
            lambda: wallet_payouts.sweep(rt),
            variant=(
                every,
                settings.pending_timeout,
                settings.paystack_base_url,
                key_fingerprint(settings.paystack_secret_key or ""),
            ),
        ),
        _Job(
            "hold-expiry",
            "expiry sweep of holds",
            every,
            lambda: _sweep(rt, wallet_holds.expire, "expired holds"),
            variant=(every,),
        ),
        # Each process's own cache of revoked sessions: every process polls.
        _Job(
            "revocation-poll",
            "revocation poll",
            settings.revocation_poll_interval,
            lambda: poll_revocations(rt),
            cluster=False,
        ),
        _Job(
            "heartbeat",
            "instance heartbeat",
            HEARTBEAT,
            lambda: membership.heartbeat(leadership.leading()),
            cluster=False,
        ),
        _Job(
            "payment-request-expiry",
            "expiry sweep of payment requests",
            every,
            lambda: _sweep(rt, wallet_payment_requests.expire, "expired payment requests"),
            variant=(every,),
        ),
        # Exactly once by each occurrence's key anyway; led, so that one process does the work.
        _Job(
            "scheduled-transfers",
            "scheduled transfers",
            settings.schedule_interval,
            lambda: wallet_schedules.run_due(rt),
            variant=(settings.schedule_interval,),
        ),
    ]
    if settings.db_pooler == "transaction" and not settings.database_session_url:
        # A transaction pooler keeps no session for a leader's lock: each process runs every job, as before leadership
        # (each is safe to run twice; it only costs the work twice).
        log.warning(
            "DB_POOLER=transaction without DATABASE_SESSION_URL: every process runs the periodic jobs, none leads "
            "them for the cluster"
        )
        jobs = [dataclasses.replace(job, cluster=False) for job in jobs]
    background = [asyncio.create_task(_periodically(job, leadership, stopping)) for job in jobs]
    background.append(asyncio.create_task(dispatch.dispatcher(rt, stopping)))

    signals = _Signals()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, signals.received)
    # Under a parent, Ctrl-C reaches every process of the group at once: the parent alone passes it on (as SIGTERM).
    if forked:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGINT, signals.received)
    # What is built by now (modules, routes, schemas, pools) lives as long as the process: frozen, no collection
    # walks it again.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    log.info(
        "listening",
        extra={
            "port": sockets[0].getsockname()[1],
            "host": settings.host,
            "max_connections": max_connections,
            "open_files_limit": fd_limit,
        },
    )
    await signals.first.wait()
    await _drain(settings, app, server, background, stopping, signals.second)
    await leadership.close()
    with contextlib.suppress(ServiceUnavailable):  # the row expires by itself
        await membership.leave()
    await rt.close()
    log.info("stopped")


async def _drain(
    settings: Settings,
    app: base.Application,
    server: connections.CappedHTTPServer,
    background: list[asyncio.Task[None]],
    stopping: asyncio.Event,
    now: asyncio.Event,
) -> None:
    """The stop after a SIGTERM (docs/operations.md, "Stopping and draining"): /ready answers 503 and every answer
    says Connection: close at once, streams close with 1012 and the background loops finish their current run; the
    port stays open for DRAIN_DELAY, then closes; idle connections are closed and every request read is answered.
    Whatever is left when SHUTDOWN_GRACE runs out, or at a second signal, is cut off, and the log says so."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.shutdown_grace
    log.info("draining", extra={"drain_delay": settings.drain_delay, "shutdown_grace": settings.shutdown_grace})
    app.draining = True
    hub: wallet_events.Hub = app.settings["event_hub"]
    hub.close()
    stopping.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(now.wait(), settings.drain_delay)
    server.stop()
    log.info("listener closed", extra={"open_connections": server.open_connections})

    while True:
        server.close_idle()  # each lap: a connection turns idle once its last answer has gone
        remaining = {
            "open_connections": server.open_connections,
            "requests": base.inflight(),
            "streams": hub.open_streams,
            "background_jobs": sum(not task.done() for task in background),
        }
        if not any(remaining.values()) or now.is_set() or loop.time() >= deadline:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(now.wait(), 0.05)
    if any(remaining.values()):
        why = "a second signal" if now.is_set() else "SHUTDOWN_GRACE ran out"
        log.warning(f"stopping now ({why}): cutting off what is left", extra=remaining)
        for task in background:
            task.cancel()
        await server.close_all_connections()


def _fork_workers(settings: Settings, sockets: list[Any]) -> bool:
    """Fork PROCESSES workers that share the bound sockets; True in a worker. The parent passes a stop signal on to
    every worker as SIGTERM (tornado's fork_processes does not, and leaves them serving as orphans) and closes its
    own copy of the sockets, so that the port closes when the workers' drain closes theirs; it restarts a worker that
    crashed (under its number, which every log line carries), waits for each worker to stop, and returns False once
    all have. A second signal is passed on too (the workers stop at once); a worker still running SHUTDOWN_GRACE +
    WORKER_GRACE_MARGIN seconds after the first is killed, and the log says so."""
    workers: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def send(signum: int) -> None:
        for pid in list(workers):
            # A handler can run as os.wait() returns, after it reaped a worker and before the loop forgets it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if stopping:
            log.warning("second stop signal: the workers stop now", extra={"workers": sorted(workers)})
        else:
            stopping = True
            for sock in sockets:
                sock.close()
            signal.setitimer(signal.ITIMER_REAL, settings.shutdown_grace + WORKER_GRACE_MARGIN)
        send(signal.SIGTERM)

    def too_late(_signum: int, _frame: Any) -> None:
        log.warning("workers still running after SHUTDOWN_GRACE: killed", extra={"workers": sorted(workers)})
        send(signal.SIGKILL)

    def spawn(number: int) -> bool:
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                signal.signal(signum, signal.SIG_DFL)
            set_worker(number)
            return True
        workers[pid] = number
        return False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGALRM, too_late)
    for number in range(1, settings.processes + 1):
        if spawn(number):
            return True
    restarts = 0
    while workers:
        pid, status = os.wait()
        number = workers.pop(pid, 0)  # 0: a child that is no worker (the embedded PostgreSQL's tools)
        metrics.worker_stopped(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping or code == 0 or not number:
            continue
        restarts += 1
        log.warning(
            "worker died; starting another",
            extra={"worker_number": number, "worker_pid": pid, "exit_code": code, "restarts": restarts},
        )
        if restarts <= 100 and spawn(number):
            return True
    signal.setitimer(signal.ITIMER_REAL, 0)
    return False


def _bind(settings: Settings) -> list[Any]:
    try:
        return netutil.bind_sockets(settings.port, settings.host)
    except socket.gaierror as error:
        raise StartupError(f"cannot listen on {settings.host!r}: {error.strerror} (HOST)") from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise StartupError(f"port {settings.port} is already in use on {settings.host} (PORT)") from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"{settings.host} is not an address of this machine (HOST)") from None
        raise StartupError(
            f"cannot listen on {settings.host} port {settings.port}: {error.strerror} (HOST, PORT)"
        ) from None


def prepare_schema(settings: Settings) -> str:
    """Before serving: with MIGRATE_ON_START, migrate to this release's head; without, refuse a database that is
    behind it (`migrate` first). A database ahead of it is served as it is (during a rolling upgrade the previous
    release runs on the next one's expanded schema, docs/operations.md#upgrades) unless a contract migration has
    left this release behind (schema_policy). Returns the database's revision."""
    assert settings.database_url
    found = schema(settings.database_url)
    if found.state == "too new":
        raise StartupError(found.describe())
    if found.state == "ahead":
        log.warning(
            "serving a database a newer release migrated",
            extra={"schema_revision": found.current, "head": found.head},
        )
        return str(found.current)
    if found.state == "behind":
        if not settings.migrate_on_start:
            raise StartupError(f"{found.describe()} first (MIGRATE_ON_START is false)")
        migrate(settings.database_url)
    return found.head


def _notify_systemd(state: str) -> None:
    """sd_notify(3) for Type=notify: one datagram to $NOTIFY_SOCKET (a path, or @ for the abstract namespace);
    nothing when systemd did not start us."""
    address = notify_socket()
    if not address:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
            sock.sendall(state.encode())
    except OSError as error:  # as sd_notify(3) does: a missing listener is no reason to stop serving
        log.warning(f"cannot notify systemd: {error.strerror} (NOTIFY_SOCKET={address})")


def serve(settings: Settings) -> None:
    sockets = _bind(settings)  # first: a taken port is said at once, before PostgreSQL starts
    if settings.redis_url:
        check_redis(settings.redis_url)
    settings = resolve_database(settings)
    schema_revision = prepare_schema(settings)
    assert settings.database_url
    check_key(settings.database_url, settings.jwt_secret)
    fd_limit = connections.raise_fd_limit()  # before forking: the workers inherit it
    # Migrated and listening (a connection from now on waits in the backlog, never refused): ready, for systemd.
    _notify_systemd("READY=1")
    # Every process of this server writes its metrics in one fresh folder: no count of an earlier run survives.
    parent = os.getpid()
    metrics_dir = metrics.start(parent)
    try:
        forked = settings.processes > 1
        if forked and not _fork_workers(settings, sockets):
            return
        uvloop.run(_serve(settings, sockets, fd_limit, forked, schema_revision))
    finally:
        if os.getpid() == parent:
            shutil.rmtree(metrics_dir, ignore_errors=True)
