"""The wallet server: make_app(settings) and the command line (serve, migrate, create-admin, audit)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from tornado import netutil, web

from handlers import admin, auth, base, connections, deposits, docs, money, ops, users, wallets, webapp
from settings import Settings, SettingsError, load_settings
from wallet import accounts, ledger
from wallet import deposits as provider_deposits
from wallet.auth import poll_revocations
from wallet.db import migrate
from wallet.logs import setup_logging
from wallet.runtime import Runtime

log = logging.getLogger("wallet.server")

ROUTES = [
    *ops.routes,
    *docs.routes,
    *auth.routes,
    *users.routes,
    *wallets.routes,
    *money.routes,
    *deposits.routes,
    *admin.routes,
    *webapp.routes,
]


def make_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    return base.Application(
        ROUTES,
        runtime=runtime or Runtime.create(settings),
        default_handler_class=base.NotFoundHandler,
        log_function=base.log_request,
        compress_response=False,
        serve_traceback=False,
    )


def resolve_database(settings: Settings) -> Settings:
    """Use DATABASE_URL when given; otherwise start the embedded PostgreSQL (and migrate it)."""
    if settings.database_url:
        return settings
    from wallet.embedded import start_embedded_postgres

    return dataclasses.replace(settings, database_url=start_embedded_postgres(settings.var_dir))


async def _sweep(rt: Runtime, sweep: Callable[[Runtime], Awaitable[int]], what: str) -> None:
    failed = await sweep(rt)
    if failed:
        log.warning(f"{what} failed", extra={"count": failed})


async def _periodically(what: str, interval: int, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` every `interval` seconds for the life of the process; a failed run is logged and retried. Each
    job has its own loop, so a slow provider delays no other."""
    while True:
        try:
            await step()
        except Exception:
            log.exception(f"{what} failed")
        await asyncio.sleep(interval)


async def _serve(settings: Settings, sockets: list[Any], fd_limit: int) -> None:
    rt = Runtime.create(settings)
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
    background = [
        asyncio.create_task(
            _periodically(
                "recovery sweep of interrupted transactions",
                every,
                lambda: _sweep(rt, ledger.recover_interrupted, "interrupted transactions"),
            )
        ),
        asyncio.create_task(
            _periodically(
                "recovery sweep of provider deposits",
                every,
                lambda: _sweep(rt, provider_deposits.sweep, "provider deposits"),
            )
        ),
        asyncio.create_task(
            _periodically("revocation poll", settings.revocation_poll_interval, lambda: poll_revocations(rt))
        ),
    ]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "listening",
        extra={
            "port": sockets[0].getsockname()[1],
            "host": settings.host,
            "max_connections": max_connections,
            "open_files_limit": fd_limit,
        },
    )
    await stop.wait()

    log.info("shutting down: no new connections, finishing in-flight requests")
    server.stop()
    await base.wait_for_inflight(timeout=10)
    await server.close_all_connections()
    for task in background:
        task.cancel()
    await rt.close()
    log.info("stopped")


def _fork_workers(count: int) -> bool:
    """Fork `count` workers that share the bound sockets; True in a worker. The parent passes SIGTERM/SIGINT on to
    every worker (tornado's fork_processes does not, and leaves them serving as orphans), restarts a worker that
    crashed, and returns False once all have stopped."""
    workers: set[int] = set()
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            os.kill(pid, signum)

    def spawn() -> bool:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            return True
        workers.add(pid)
        return False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        if spawn():
            return True
    restarts = 0
    while workers:
        pid, status = os.wait()
        workers.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping or code == 0:
            continue
        restarts += 1
        log.warning("worker died; starting another", extra={"pid": pid, "exit_code": code, "restarts": restarts})
        if restarts <= 100 and spawn():
            return True
    return False


def serve(settings: Settings) -> None:
    settings = resolve_database(settings)
    migrate(settings.database_url)
    fd_limit = connections.raise_fd_limit()  # before forking: the workers inherit it
    sockets = netutil.bind_sockets(settings.port, settings.host)
    if settings.processes > 1 and not _fork_workers(settings.processes):
        return
    asyncio.run(_serve(settings, sockets, fd_limit))


async def _with_runtime(settings: Settings, fn: Any, *args: Any) -> Any:
    rt = Runtime.create(settings)
    try:
        return await fn(rt, *args)
    finally:
        await rt.close()


def create_admin(settings: Settings, username: str) -> int:
    password = settings.admin_password or getpass.getpass(f"Password for admin {username}: ")
    settings = resolve_database(settings)
    migrate(settings.database_url)
    try:
        user = asyncio.run(_with_runtime(settings, accounts.create_admin, username, password))
    except Exception as error:  # a validation failure is the operator's to fix: say it in one line
        print(f"create-admin failed: {getattr(error, 'details', None) or error}", file=sys.stderr)
        return 1
    print(f"admin {user['username']} ({user['id']}) is ready")
    return 0


def audit(settings: Settings) -> int:
    settings = resolve_database(settings)
    report = asyncio.run(_with_runtime(settings, ledger.audit))
    print(ledger.format_audit(report))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="server.py", description="Wallet API server")
    parser.add_argument("--port", type=int, help="listen port (overrides PORT)")
    parser.add_argument("--processes", type=int, help="worker processes sharing the port (overrides PROCESSES)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP (the default)")
    commands.add_parser("migrate", help="apply database migrations")
    admin = commands.add_parser("create-admin", help="create or promote an admin user")
    admin.add_argument("username")
    commands.add_parser("audit", help="verify the ledger; exit code 0 only when it balances")
    args = parser.parse_args(argv)

    overrides = {k: str(v) for k, v in (("PORT", args.port), ("PROCESSES", args.processes)) if v is not None}
    try:
        settings = load_settings(overrides=overrides)
    except SettingsError as error:
        print(f"invalid setting: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)

    if args.command == "migrate":
        migrate(resolve_database(settings).database_url)
        print("migrated to head")
        return 0
    if args.command == "create-admin":
        return create_admin(settings, args.username)
    if args.command == "audit":
        return audit(settings)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
