"""Migrations: the Alembic head is exactly models/, there is one head, the chain downgrades and upgrades cleanly, a
new migration builds its indexes on the big tables CONCURRENTLY (docs/operations.md#upgrades), and migrating a
database already at head runs nothing."""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, create_engine, inspect, pool, text
from sqlalchemy.engine import make_url

from models import Base
from wallet.platform.db import MIGRATIONS, alembic_config, libpq_url, migrate, sync_url


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


def test_migrating_a_database_at_head_runs_nothing(database_url):
    """At head, migrate() returns without running Alembic: it does not even queue behind another migrator's lock
    (migrations/env.py's advisory lock), held here, as every server start at head used to."""
    other_migrator = psycopg2.connect(libpq_url(database_url))
    with ThreadPoolExecutor(1) as pool_:
        try:
            other_migrator.cursor().execute("SELECT pg_advisory_lock(727274)")
            pool_.submit(migrate, database_url).result(timeout=10)  # an Alembic upgrade would wait for the lock
        finally:
            other_migrator.close()  # lets a waiting upgrade finish, so the test ends either way


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


def test_the_partial_indexes_migration_stopped_part_way_runs_again(scratch_database):
    """0028 rebuilds four indexes outside a transaction, one step at a time: one stopped part way (here by hand: the
    first index done, the second's new copy built, as a lock_timeout would leave them) is run again as a whole."""
    config = alembic_config(scratch_database)
    command.upgrade(config, "0027_entries_wallet_covering")
    engine = create_engine(sync_url(scratch_database), poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_transactions_hold_id"))
        conn.execute(text("CREATE INDEX ix_transactions_hold_id ON transactions (hold_id) WHERE hold_id IS NOT NULL"))
        conn.execute(text("CREATE INDEX ix_transactions_reverses_new ON transactions (reverses)"))
    migrate(scratch_database)
    with engine.connect() as conn:
        partial = conn.execute(
            text(
                "SELECT indexrelid::regclass::text, pg_get_expr(indpred, indrelid) FROM pg_index "
                "WHERE indrelid = 'transactions'::regclass AND indpred IS NOT NULL AND indexrelid::regclass::text "
                "IN ('ix_transactions_hold_id', 'ix_transactions_reverses', 'uq_transactions_fx_quote_id', "
                "'uq_transactions_provider_reference', 'ix_transactions_reverses_new')"
            )
        ).all()
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
    assert dict(partial) == {
        "ix_transactions_hold_id": "(hold_id IS NOT NULL)",
        "ix_transactions_reverses": "(reverses IS NOT NULL)",
        "uq_transactions_fx_quote_id": "(fx_quote_id IS NOT NULL)",
        "uq_transactions_provider_reference": "(provider_reference IS NOT NULL)",
    }


# The tables that grow with every money operation and event. A plain CREATE INDEX blocks their writes for as long as it
# builds (minutes on a big ledger), so a migration builds their indexes CONCURRENTLY.
BIG_TABLES = {"transactions", "entries", "holds", "events", "deliveries"}
# The migrations written before that rule, up to and including this revision, built theirs plainly while the tables
# were new or small; they keep them. Every later migration follows the rule.
GRANDFATHERED_THROUGH = "0017_two_factor"
_CREATE_INDEX_SQL = re.compile(r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\b(.*?)\bON\s+(?:ONLY\s+)?\"?(\w+)", re.I | re.S)


def blocking_indexes(source: str) -> list[tuple[int, str]]:
    """(line, table) of each index a migration's source builds on a big table without CONCURRENTLY: `op.create_index`
    without `postgresql_concurrently=True` (or on a table not named literally), and CREATE INDEX in its SQL."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "create_index":
            given = dict(zip(("index_name", "table_name"), node.args, strict=False))
            given |= {keyword.arg: keyword.value for keyword in node.keywords}
            table, concurrently = given.get("table_name"), given.get("postgresql_concurrently")
            named = table.value if isinstance(table, ast.Constant) else "(a table not named literally)"
            built_concurrently = isinstance(concurrently, ast.Constant) and concurrently.value is True
            if (named in BIG_TABLES or not isinstance(table, ast.Constant)) and not built_concurrently:
                found.append((node.lineno, named))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for options, table in _CREATE_INDEX_SQL.findall(node.value):
                if table.lower() in BIG_TABLES and "concurrently" not in options.lower():
                    found.append((node.lineno, table.lower()))
    return sorted(found)


def test_new_migrations_build_indexes_on_big_tables_concurrently():
    assert set(Base.metadata.tables) >= BIG_TABLES
    scripts = ScriptDirectory(str(MIGRATIONS))
    newer = [s for s in scripts.walk_revisions(GRANDFATHERED_THROUGH, "heads") if s.revision != GRANDFATHERED_THROUGH]
    refused = {script.revision: blocking_indexes(Path(script.path).read_text()) for script in newer}
    assert {revision: found for revision, found in refused.items() if found} == {}

    # The rule sees what the grandfathered migrations did, in the forms a migration writes it, and lets through the
    # same indexes built CONCURRENTLY (in an autocommit_block: PostgreSQL refuses that inside a transaction).
    initial = Path(scripts.get_revision("0001").path).read_text()
    assert {table for _, table in blocking_indexes(initial)} == {"transactions", "entries"}
    refused_forms = """
def upgrade():
    op.create_index("ix_transactions_note", "transactions", ["note"])
    op.create_index(index_name="ix_holds_note", table_name="holds", columns=["note"], postgresql_concurrently=False)
    for table in ("users", "wallets"):
        op.create_index(f"ix_{table}_note", table, ["note"])
    op.execute('CREATE UNIQUE INDEX ix_entries_note ON "entries" (note)')
    op.execute("create index on events (note)")
"""
    assert blocking_indexes(refused_forms) == [
        (3, "transactions"),
        (4, "holds"),
        (6, "(a table not named literally)"),
        (7, "entries"),
        (8, "events"),
    ]
    allowed_forms = """
def upgrade():
    with op.get_context().autocommit_block():
        op.create_index("ix_transactions_note", "transactions", ["note"], postgresql_concurrently=True)
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_entries_note ON entries (note)")
    op.create_index("ix_users_note", "users", ["note"])
"""
    assert blocking_indexes(allowed_forms) == []
