"""Database access: which database (DATABASE_URL, or the embedded one), the async engine for the request path, URLs
for both drivers, and migrations."""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.errors
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, exc, pool, text
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from settings import Settings, StartupError
from wallet.platform import metrics
from wallet.platform.prepared import demoted

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("wallet.db")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# How often PostgreSQL checks, during a statement, that the server is still connected.
CLIENT_CHECK_MS = 500
# Seconds a migration may wait for a lock (migrations/env.py sets lock_timeout): while an ALTER TABLE waits for its
# table, every query of that table queues behind it, so a migration that waits longer gives up, changing nothing,
# instead of stalling the API behind a long transaction; run again, it finds a moment when the table is free.
MIGRATION_LOCK_TIMEOUT = 3


def _url(database_url: str, driver: str) -> URL:
    url = make_url(database_url)
    return url.set(drivername=f"postgresql+{driver}")


def libpq_url(database_url: str) -> str:
    """A libpq URL (what psycopg2, pg_dump and pgbench take) from any SQLAlchemy-style PostgreSQL URL. A multi-host
    one (`?host=a:5432&host=b:5432`, SQLAlchemy's form) becomes libpq's (`?host=a,b&port=5432,5432`)."""
    url = _url(database_url, "psycopg2")
    if isinstance(url.query.get("host"), tuple):
        _, joined = PGDialect_psycopg2().create_connect_args(url)
        url = url.update_query_dict({"host": joined["host"], "port": joined["port"]})
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def sync_url(database_url: str) -> str:
    return _url(database_url, "psycopg2").render_as_string(hide_password=False)


# Behind a transaction pooler (DB_POOLER=transaction) each transaction may run on another server connection, and
# PgBouncer refuses startup parameters it does not know. So: no named prepared statements (asyncpg's cache and
# SQLAlchemy's both off: each execution parses an unnamed statement again, a second round trip), and
# no session settings (the role carries them: docs/operations.md#pgbouncer). asyncpg's command_timeout still bounds
# every statement from this side.
_TRANSACTION_POOLER = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: "",
}


def _session_settings(statement_timeout: int) -> dict[str, object]:
    """Settings each connection starts with, when it talks to PostgreSQL itself."""
    return {
        "server_settings": {
            "statement_timeout": f"{statement_timeout}s",
            # A money operation's execution is one statement that commits by itself (wallet/ledger/lifecycle.py):
            # when this process dies while it waits for a row lock, PostgreSQL cancels it within this interval
            # (PostgreSQL 14+) instead of completing it for nobody; the row stays PENDING for a retry or recovery.
            "client_connection_check_interval": f"{CLIENT_CHECK_MS}ms",
        }
    }


def create_engine(settings: Settings, database_url: str | None = None) -> AsyncEngine:
    """The pool, with waits that fit an HTTP API: a hung or overloaded database answers 503 within seconds.

    PostgreSQL cancels a statement after DB_STATEMENT_TIMEOUT (a lock wait too), leaving the connection usable; a
    database that does not answer at all (paused, a dead host) cannot cancel anything, so asyncpg gives up on its
    own side a second later. Connecting and waiting for a free connection are bounded by DB_POOL_TIMEOUT.
    `database_url`, when given, is used instead of DATABASE_URL's, with the same settings (DATABASE_READ_URL).
    """
    database_url = database_url or settings.database_url
    assert database_url
    statement_timeout = settings.db_statement_timeout
    engine = create_async_engine(
        _url(database_url, "asyncpg"),
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "timeout": settings.db_pool_timeout,
            "command_timeout": statement_timeout + 1,
            **(_TRANSACTION_POOLER if settings.db_pooler == "transaction" else _session_settings(statement_timeout)),
        },
    )
    event.listen(engine.sync_engine, "handle_error", _lost_when_demoted)
    event.listen(engine.sync_engine.pool, "checkout", lambda *_: metrics.pool_checkout(1))
    event.listen(engine.sync_engine.pool, "checkin", lambda *_: metrics.pool_checkout(-1))
    return engine


def _lost_when_demoted(context: ExceptionContext) -> None:
    """A connection whose host stopped taking writes is treated as lost: SQLAlchemy drops it and the rest of the pool
    (all opened to the old leader), and the request answers 503 (Runtime)."""
    if demoted(context.sqlalchemy_exception):
        context.is_disconnect = True


def check_database(settings: Settings) -> None:
    """Start-up: the database answers, or one line says why not and names DATABASE_URL. Behind a transaction pooler
    the server sends no statement_timeout: a warning when the sessions the pooler gives have none either."""
    assert settings.database_url
    try:
        conn = psycopg2.connect(libpq_url(settings.database_url), connect_timeout=5)
    except psycopg2.OperationalError as error:
        reason = (str(error).strip().splitlines() or ["no answer"])[0]
        raise StartupError(f"cannot connect to the database: {reason} (DATABASE_URL)") from None
    with contextlib.closing(conn), conn.cursor() as cur:
        if settings.db_pooler == "transaction":
            cur.execute("SHOW statement_timeout")
            if cur.fetchone()[0] == "0":
                log.warning(
                    "the pooler's sessions have no statement_timeout: set it in its connect_query or on the role "
                    "(DB_POOLER, docs/operations.md#pgbouncer)"
                )


def resolve_database(settings: Settings) -> Settings:
    """Use DATABASE_URL when given (it must answer); otherwise start the embedded PostgreSQL."""
    if settings.database_url:
        check_database(settings)
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
    return replace(settings, database_url=url)


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url(database_url)
    return config


@dataclass(frozen=True)
class Schema:
    """Where a database stands against this release's migrations."""

    current: str | None  # the database's revision; None when it has none yet (an empty database)
    head: str  # this release's last migration
    known: bool  # `current` is one of this release's migrations (or None)
    # The oldest release (its last migration) the schema serves, from schema_policy; None before that table exists.
    oldest_code: str | None = None
    serves: bool = True  # this release is at or after oldest_code

    @property
    def state(self) -> str:
        if self.current == self.head:
            return "at head"
        if self.known:
            return "behind"
        return "ahead" if self.serves else "too new"

    def describe(self) -> str:
        """One line for the operator."""
        if self.state == "at head":
            return f"the database is at this release's head ({self.head})"
        if self.state == "behind":
            return (
                f"the database is behind: at {self.current or 'no revision (empty)'}, this release's head is "
                f"{self.head}; run `wallet-server migrate`"
            )
        ahead = (
            f"the database is ahead: at {self.current}, a migration this release does not have (its head is "
            f"{self.head})"
        )
        if self.state == "too new":
            return f"{ahead}, and it serves no release before {self.oldest_code}: deploy that release or a later one"
        return f"{ahead}; a newer release migrated it"


@functools.cache
def release_migrations() -> tuple[frozenset[str], str]:
    """This release's migrations (their revisions) and its head, read from the migration scripts once a process
    (Alembic loads every script to walk them)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS))
    return frozenset(script.revision for script in scripts.walk_revisions()), scripts.get_current_head() or ""


def schema(database_url: str) -> Schema:
    from alembic.migration import MigrationContext

    engine = create_sync_engine(sync_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            has_policy = conn.scalar(text("SELECT to_regclass('schema_policy')")) is not None
            oldest_code = conn.scalar(text("SELECT oldest_code FROM schema_policy")) if has_policy else None
    finally:
        engine.dispose()
    revisions, head = release_migrations()
    known = current is None or current in revisions
    serves = oldest_code is None or oldest_code in revisions
    return Schema(current, head, known, oldest_code, serves)


def migrate(database_url: str) -> None:
    """Bring the schema to the Alembic head (blocking; run at start-up or from the command line). A database that a
    newer release migrated is left as it is (StartupError): its migrations are not this release's to undo."""
    from alembic import command

    found = schema(database_url)
    if found.state in ("ahead", "too new"):
        raise StartupError(f"{found.describe()}; nothing was changed")
    if found.state == "at head":
        return  # nothing to run: Alembic's upgrade would load its environment and every script again to find so
    try:
        command.upgrade(alembic_config(database_url), "head")
    except exc.OperationalError as error:
        if not isinstance(error.orig, psycopg2.errors.LockNotAvailable):
            raise
        raise StartupError(
            f"a migration waited more than {MIGRATION_LOCK_TIMEOUT} s for a table a transaction holds and was undone: "
            "run `wallet-server migrate` again (lock_timeout, see docs/operations.md#upgrades)"
        ) from None
