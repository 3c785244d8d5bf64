"""The command line: serve (the default; serving.py), migrate, create-admin, audit, backup, restore, stop-embedded."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import sys
from pathlib import Path
from typing import Any

from settings import Settings, SettingsError, StartupError, load_settings, misspelled
from wallet.errors import ValidationError, WalletError
from wallet.platform import release
from wallet.platform.logs import setup_logging

# Each command imports what it runs (the database layer, the domain, the handlers): `--help` and `--version` answer
# in a tenth of a second instead of a second, and a command starts without the parts it does not use.

log = logging.getLogger("wallet.server")


async def _with_runtime(settings: Settings, fn: Any, *args: Any) -> Any:
    from wallet.platform.runtime import Runtime

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
    import marshmallow

    from handlers.auth import RegisterSchema
    from wallet.identity import accounts
    from wallet.platform.db import migrate, resolve_database

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


# The audit reads the whole ledger, so its statements take as long as the ledger is big (a minute or more at ten
# million entries): DB_STATEMENT_TIMEOUT bounds a request's statements, and this command's only this far.
AUDIT_STATEMENT_TIMEOUT = 3600


def audit(settings: Settings) -> int:
    from wallet.ledger import audit as ledger_audit
    from wallet.platform.db import resolve_database

    settings = dataclasses.replace(resolve_database(settings), db_statement_timeout=AUDIT_STATEMENT_TIMEOUT)
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
    parser.add_argument("--version", action="version", version=release.describe())
    commands = parser.add_subparsers(dest="command")
    commands.add_parser(
        "serve", parents=[listen], help="serve HTTP, after migrating unless MIGRATE_ON_START=false (the default)"
    )
    migrate_command = commands.add_parser("migrate", help="apply database migrations")
    migrate_command.add_argument(
        "--check",
        action="store_true",
        help="change nothing: exit 0 when the database is at this release's head, 1 when it is behind or ahead",
    )
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


def _database_url(settings: Settings) -> str:
    from wallet.platform.db import resolve_database

    return resolve_database(settings).database_url


def _run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "serve":
        import serving

        serving.serve(settings)
    elif command == "migrate" and args.check:
        from wallet.platform.db import schema

        found = schema(_database_url(settings))
        print(found.describe())
        return 0 if found.state == "at head" else 1
    elif command == "migrate":
        from wallet.platform.db import migrate

        migrate(_database_url(settings))
        print("migrated to head")
    elif command == "create-admin":
        return create_admin(settings, args.username)
    elif command == "audit":
        return audit(settings)
    elif command == "backup":
        from wallet.platform import backup

        tool = backup.backup(_database_url(settings), args.file)
        print(f"backed up to {args.file} ({args.file.stat().st_size} bytes, with {tool})")
    elif command == "restore":
        from wallet.platform import backup

        if args.file.is_file() and backup.readable_by_others(args.file):
            print(
                f"warning: {args.file} is readable by other users; it holds password hashes, e-mail addresses and "
                f"webhook secrets: chmod 600 it, and rotate what may have been read",
                file=sys.stderr,
            )
        tool = backup.restore(_database_url(settings), args.file, args.force)
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
