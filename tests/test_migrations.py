"""Migrations: the Alembic head is exactly models/, there is one head, and the chain downgrades and upgrades cleanly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, create_engine, inspect, pool, text
from sqlalchemy.engine import make_url

from models import Base
from wallet.platform.db import MIGRATIONS, migrate, sync_url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url(database_url)
    return config


def test_one_head_and_the_test_database_is_at_it(database_url):
    heads = ScriptDirectory.from_config(alembic_config(database_url)).get_heads()
    assert len(heads) == 1, heads
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)
    engine.dispose()


def check_constraints_of_models() -> set[tuple[str, str]]:
    """(table, name) of every CHECK in models/; the naming convention has already given each its full name."""
    return {
        (table.name, str(constraint.name))
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }


def test_head_matches_models(database_url):
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, Base.metadata)
        inspector = inspect(conn)
        tables = set(inspector.get_table_names())
        # Autogenerate does not compare CHECK constraints; these guard the money, so compare them by name.
        checks = {(t, c["name"]) for t in Base.metadata.tables for c in inspector.get_check_constraints(t)}
    engine.dispose()
    assert differences == []
    assert set(Base.metadata.tables) <= tables
    assert checks == check_constraints_of_models()


@pytest.fixture
def scratch_database(postgres_server_url: str) -> Iterator[str]:
    name = f"wallet_scratch_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(make_url(postgres_server_url).set(drivername="postgresql").render_as_string(False))
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_downgrade_to_base_and_upgrade_again(scratch_database):
    migrate(scratch_database)
    config = alembic_config(scratch_database)
    command.downgrade(config, "base")
    engine = create_engine(sync_url(scratch_database), poolclass=pool.NullPool)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        functions = conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'ledger\\_%'")).scalar()
        assert functions == 0
    migrate(scratch_database)
    with engine.connect() as conn:
        assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_existing_addresses_get_their_comparison_key(scratch_database):
    """0004 fills users.email_key for the addresses already there, with the key the application compares by."""
    config = alembic_config(scratch_database)
    command.upgrade(config, "0004_auth_hardening-1")  # the revision before it
    engine = create_engine(sync_url(scratch_database), poolclass=pool.NullPool)
    addresses = {"\u0130lker@example.com": "i\u0307lker@example.com", "Stra\u00dfe@Example.com": "strasse@example.com"}
    with engine.begin() as conn:
        for i, address in enumerate([*addresses, None]):
            conn.execute(
                text("INSERT INTO users (id, username, email, password_hash) VALUES (:id, :name, :email, 'x')"),
                {"id": uuid.uuid4(), "name": f"user{i}", "email": address},
            )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT email, email_key FROM users WHERE email IS NOT NULL")).all())
        assert conn.execute(text("SELECT email_key FROM users WHERE email IS NULL")).all() == [(None,)]
    engine.dispose()
    assert keys == addresses
