"""Alembic environment: runs migrations over psycopg2 against the URL the caller put in the config."""

from alembic import context
from sqlalchemy import create_engine, pool

from models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            # One migrator at a time, even when several servers start together.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
