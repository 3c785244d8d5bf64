"""Database access: the async engine for the request path, URLs for both drivers, and migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _url(database_url: str, driver: str) -> URL:
    url = make_url(database_url)
    return url.set(drivername=f"postgresql+{driver}")


def sync_url(database_url: str) -> str:
    return _url(database_url, "psycopg2").render_as_string(hide_password=False)


def create_engine(database_url: str, pool_size: int) -> AsyncEngine:
    return create_async_engine(
        _url(database_url, "asyncpg"),
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=30,
    )


def migrate(database_url: str) -> None:
    """Bring the schema to the Alembic head (blocking; run at start-up or from the command line)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url(database_url)
    command.upgrade(config, "head")
