"""The wallet server: make_app(settings) and the command line (serve, migrate, create-admin, audit, backup, restore)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import getpass
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import marshmallow
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
    sessions,
    statements,
    two_factor,
    users,
    wallets,
    webapp,
    webhooks,
)
from handlers.auth import RegisterSchema
from handlers.base import implemented_verbs
from handlers.openapi import api_routes, openapi_path
from settings import Settings, SettingsError, StartupError, load_settings, misspelled, notify_socket
from wallet.errors import ValidationError, WalletError
from wallet.identity import accounts
from wallet.identity.auth import poll_revocations
from wallet.ledger import audit as ledger_audit
from wallet.ledger import lifecycle
from wallet.notify import dispatch
from wallet.notify import events as wallet_events
from wallet.operations import deposits as provider_deposits
from wallet.operations import holds as wallet_holds
from wallet.platform import backup, metrics
from wallet.platform.db import check_database, migrate
from wallet.platform.logs import LoopLog, setup_logging
from wallet.platform.runtime import Runtime
from wallet.platform.store import check_redis

log = logging.getLogger("wallet.server")

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
    *fx.routes,
    *deposits.routes,
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


def resolve_database(settings: Settings) -> Settings:
    """Use DATABASE_URL when given (it must answer); otherwise start the embedded PostgreSQL."""
    if settings.database_url:
        check_database(settings.database_url)
        return settings
    from wallet.platform.embedded import start_embedded_postgres

    try:
        url = start_embedded_postgres(settings.var_dir)
    except StartupError:
        raise
    except Exception as error:  # a library's error, often many lines: say where to look instead
        raise StartupError(
            f"the embedded PostgreSQL did not start ({type(error).__name__}); its log is "
            f"{settings.var_dir / 'pgdata' / 'log'} (or set DATABASE_URL)"
        ) from None
    return dataclasses.replace(settings, database_url=url)


async def _sweep(rt: Runtime, sweep: Callable[[Runtime], Awaitable[int]], what: str) -> None:
    failed = await sweep(rt)
    metrics.recovery_sweep(what, failed)
    if failed:
        log.warning(f"{what} failed", extra={"count": failed})


async def _periodically(what: str, interval: int, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` every `interval` seconds for the life of the process; a failed run is logged (LoopLog) and
    retried. Each job has its own loop, so a slow provider delays no other."""
    report = LoopLog(log, what)
    while True:
        try:
            await step()
            report.ok()
        except Exception as error:
            report.failed(error)
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
                lambda: _sweep(rt, lifecycle.recover_interrupted, "interrupted transactions"),
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
            _periodically("expiry sweep of holds", every, lambda: _sweep(rt, wallet_holds.expire, "expired holds"))
        ),
        asyncio.create_task(
            _periodically("revocation poll", settings.revocation_poll_interval, lambda: poll_revocations(rt))
        ),
        asyncio.create_task(dispatch.dispatcher(rt)),
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
        metrics.worker_stopped(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping or code == 0:
            continue
        restarts += 1
        log.warning("worker died; starting another", extra={"pid": pid, "exit_code": code, "restarts": restarts})
        if restarts <= 100 and spawn():
            return True
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
    migrate(settings.database_url)
    fd_limit = connections.raise_fd_limit()  # before forking: the workers inherit it
    # Migrated and listening (a connection from now on waits in the backlog, never refused): ready, for systemd.
    _notify_systemd("READY=1")
    # Every process of this server writes its metrics in one fresh folder: no count of an earlier run survives.
    parent = os.getpid()
    metrics_dir = metrics.start(parent)
    try:
        if settings.processes > 1 and not _fork_workers(settings.processes):
            return
        uvloop.run(_serve(settings, sockets, fd_limit))
    finally:
        if os.getpid() == parent:
            shutil.rmtree(metrics_dir, ignore_errors=True)


async def _with_runtime(settings: Settings, fn: Any, *args: Any) -> Any:
    rt = Runtime.create(settings)
    try:
        return await fn(rt, *args)
    finally:
        await rt.close()


def _admin_password(settings: Settings, username: str) -> str:
    if settings.admin_password:
        return settings.admin_password
    if not sys.stdin.isatty():
        raise StartupError("no terminal to ask for the password: set WALLET_ADMIN_PASSWORD")
    password = getpass.getpass(f"Password for admin {username}: ")
    if getpass.getpass("The same password again: ") != password:
        raise StartupError("the two passwords differ; nothing was changed")
    return password


def create_admin(settings: Settings, username: str) -> int:
    password = _admin_password(settings, username)
    try:
        # The rules of registration, from the one place that holds them (the password policy follows in the service).
        RegisterSchema().load({"username": username, "password": password})
    except marshmallow.ValidationError as error:
        raise ValidationError(error.normalized_messages()) from None
    settings = resolve_database(settings)
    migrate(settings.database_url)
    user = asyncio.run(_with_runtime(settings, accounts.create_admin, username, password))
    print(f"admin {user['username']} ({user['id']}) is ready")
    return 0


def audit(settings: Settings) -> int:
    settings = resolve_database(settings)
    report = asyncio.run(_with_runtime(settings, ledger_audit.audit))
    print(ledger_audit.format_audit(report))
    return 0 if report["ok"] else 1


def _parser() -> argparse.ArgumentParser:
    # Accepted before or after `serve` (`server.py --port 9000` and `server.py serve --port 9000`).
    listen = argparse.ArgumentParser(add_help=False)
    listen.add_argument("--host", default=argparse.SUPPRESS, help="listen address (overrides HOST)")
    listen.add_argument("--port", default=argparse.SUPPRESS, help="listen port (overrides PORT)")
    listen.add_argument(
        "--processes", default=argparse.SUPPRESS, help="worker processes sharing the port (overrides PROCESSES)"
    )
    parser = argparse.ArgumentParser(
        prog="server.py",
        parents=[listen],
        description="Wallet API server. Settings come from the environment or .env (see README.md).",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", parents=[listen], help="serve HTTP, after migrating (the default)")
    commands.add_parser("migrate", help="apply database migrations")
    admin = commands.add_parser(
        "create-admin",
        help="create or promote an admin user",
        description="The password comes from WALLET_ADMIN_PASSWORD, or is asked for twice on the terminal.",
    )
    admin.add_argument("username")
    commands.add_parser("audit", help="verify the ledger; exit code 0 only when it balances")
    dump = commands.add_parser("backup", help="dump the whole database into FILE (pg_dump custom format)")
    dump.add_argument("file", type=Path, metavar="FILE")
    load = commands.add_parser("restore", help="load a backup FILE into an empty database")
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument("--force", action="store_true", help="replace the contents of a database that is not empty")
    commands.add_parser(
        "stop-embedded", help="stop the embedded PostgreSQL under VAR_DIR when no server uses it (after a crash)"
    )
    return parser


def _run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "serve":
        serve(settings)
    elif command == "migrate":
        migrate(resolve_database(settings).database_url)
        print("migrated to head")
    elif command == "create-admin":
        return create_admin(settings, args.username)
    elif command == "audit":
        return audit(settings)
    elif command == "backup":
        tool = backup.backup(resolve_database(settings).database_url, args.file)
        print(f"backed up to {args.file} ({args.file.stat().st_size} bytes, with {tool})")
    elif command == "restore":
        if args.file.is_file() and backup.readable_by_others(args.file):
            print(
                f"warning: {args.file} is readable by other users; it holds password hashes, e-mail addresses and "
                f"webhook secrets: chmod 600 it, and rotate what may have been read",
                file=sys.stderr,
            )
        tool = backup.restore(resolve_database(settings).database_url, args.file, args.force)
        print(f"restored {args.file} (with {tool}); start the server to use it")
    elif command == "stop-embedded":
        from wallet.platform.embedded import stop_orphaned_postgres

        if stop_orphaned_postgres(settings.var_dir):
            print("stopped the embedded PostgreSQL that a killed server had left running")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    cli = {"HOST": "host", "PORT": "port", "PROCESSES": "processes"}
    overrides = {variable: getattr(args, name) for variable, name in cli.items() if hasattr(args, name)}
    try:
        settings = load_settings(overrides=overrides)
    except SettingsError as error:
        print(f"invalid setting: {error}", file=sys.stderr)
        return 2
    # A one-line command prints its line; only the server narrates at LOG_LEVEL.
    setup_logging(settings.log_level if command == "serve" or settings.log_level == "DEBUG" else "WARNING")
    for line in misspelled():  # a typo would otherwise leave its default in place without a word
        log.warning(line)
    try:
        return _run(command, settings, args)
    except StartupError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1
    except WalletError as error:
        problems = " ".join(f"{field}: {' '.join(map(str, m))}" for field, m in (error.details or {}).items())
        print(f"{command}: {error.message} {problems}".rstrip(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
