"""Alembic environment: runs migrations over psycopg2 against the URL the caller put in the config."""

from alembic import context
from sqlalchemy import create_engine, pool

from models import Base
from wallet.platform.db import MIGRATION_LOCK_TIMEOUT

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            # One migrator at a time, even when several servers start together. A session lock, held until the
            # connection closes: a migration that builds an index CONCURRENTLY commits in the middle (its
            # autocommit_block), which would let a transaction lock go.
            connection.exec_driver_sql("SELECT pg_advisory_lock(727274)")
            # Taken after that lock, so a migrator waits for another as long as it takes, but for a table only so
            # long: see MIGRATION_LOCK_TIMEOUT. Session-wide, so it holds past an autocommit_block too.
            connection.exec_driver_sql(f"SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT}s'")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
