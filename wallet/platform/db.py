"""Database access: the async engine for the request path, URLs for both drivers, and migrations."""

from __future__ import annotations

from pathlib import Path

import psycopg2
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from settings import Settings, StartupError
from wallet.platform import metrics

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# How often PostgreSQL checks, during a statement, that the server is still connected.
CLIENT_CHECK_MS = 500


def _url(database_url: str, driver: str) -> URL:
    url = make_url(database_url)
    return url.set(drivername=f"postgresql+{driver}")


def libpq_url(database_url: str) -> str:
    """A libpq URL (what psycopg2, pg_dump and pgbench take) from any SQLAlchemy-style PostgreSQL URL."""
    return _url(database_url, "psycopg2").set(drivername="postgresql").render_as_string(hide_password=False)


def sync_url(database_url: str) -> str:
    return _url(database_url, "psycopg2").render_as_string(hide_password=False)


def create_engine(settings: Settings) -> AsyncEngine:
    """The pool, with waits that fit an HTTP API: a hung or overloaded database answers 503 within seconds.

    PostgreSQL cancels a statement after DB_STATEMENT_TIMEOUT (a lock wait too), leaving the connection usable; a
    database that does not answer at all (paused, a dead host) cannot cancel anything, so asyncpg gives up on its
    own side a second later. Connecting and waiting for a free connection are bounded by DB_POOL_TIMEOUT.
    """
    assert settings.database_url
    statement_timeout = settings.db_statement_timeout
    engine = create_async_engine(
        _url(settings.database_url, "asyncpg"),
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "timeout": settings.db_pool_timeout,
            "command_timeout": statement_timeout + 1,
            "server_settings": {
                "statement_timeout": f"{statement_timeout}s",
                # A money operation's execution is one statement that commits by itself (wallet/ledger/lifecycle.py):
                # when this process dies while it waits for a row lock, PostgreSQL cancels it within this interval
                # (PostgreSQL 14+) instead of completing it for nobody; the row stays PENDING for a retry or recovery.
                "client_connection_check_interval": f"{CLIENT_CHECK_MS}ms",
            },
        },
    )
    event.listen(engine.sync_engine.pool, "checkout", lambda *_: metrics.pool_checkout(1))
    event.listen(engine.sync_engine.pool, "checkin", lambda *_: metrics.pool_checkout(-1))
    return engine


def check_database(database_url: str) -> None:
    """Start-up: the database answers, or one line says why not and names DATABASE_URL."""
    try:
        psycopg2.connect(libpq_url(database_url), connect_timeout=5).close()
    except psycopg2.OperationalError as error:
        reason = (str(error).strip().splitlines() or ["no answer"])[0]
        raise StartupError(f"cannot connect to the database: {reason} (DATABASE_URL)") from None


def migrate(database_url: str) -> None:
    """Bring the schema to the Alembic head (blocking; run at start-up or from the command line)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url(database_url)
    command.upgrade(config, "head")
