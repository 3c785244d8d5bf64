"""The hot path's statements, sent on the asyncpg connection that SQLAlchemy's pool hands out (DESIGN.md: in one
module, one way).

SQLAlchemy builds each statement once and compiles it here once; running it on the driver connection skips
SQLAlchemy's work per execution (the compiled cache lookup, parameter and result processing, the greenlet hop),
about 0.1 ms of the server's CPU a statement. asyncpg prepares each statement once per connection and caches it,
as SQLAlchemy's adapter does (behind a transaction pooler, DB_POOLER=transaction, both parse it with each execution
instead: wallet/platform/db.py). Only statements whose parameters and columns SQLAlchemy would not convert qualify:
`Prepared` refuses the others when built. Rows are asyncpg records that also answer attribute access, as
SQLAlchemy's rows do.

A statement runs in an autocommit block (Runtime.session/autocommit): one statement, one commit. Its errors are
asyncpg's own (`.sqlstate`, `.detail`, `.message`, as `postgres_error` finds them for either driver path); a
connection that drops under it, or whose host stopped taking writes, is invalidated in SQLAlchemy's pool and raised
as ConnectionResetError, which Runtime maps to 503 like any lost connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement

_DIALECT = PGDialect_asyncpg()
# The result type code only Numeric's processor reads: asyncpg returns NUMERIC columns as Decimal already.
_NUMERIC = 1700


class Row(asyncpg.Record):
    """A result row: by name (`row["id"]`), by position, or as an attribute (`row.id`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Prepared:
    """One statement, compiled once for asyncpg: its SQL with $n placeholders and the order of its named
    parameters."""

    def __init__(self, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        converted = [b.key for b in compiled.binds.values() if b.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)]
        columns = getattr(statement, "selected_columns", ())
        converted += [c.key for c in columns if c.type.dialect_impl(_DIALECT).result_processor(_DIALECT, _NUMERIC)]
        if converted:
            raise TypeError(f"SQLAlchemy converts {converted}: run this statement through SQLAlchemy")
        self.sql, self.names = compiled.string, tuple(compiled.positiontup or ())
        # The values the statement carries itself (a literal compared in a WHERE clause is a bind parameter too).
        self.fixed = {key: b.value for key, b in compiled.binds.items() if not b.required}

    async def first(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Row | None:
        return await self._run(conn, "fetchrow", values)

    async def one(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
        row = await self.first(conn, values)
        if row is None:
            raise LookupError("the statement returned no row")
        return row

    async def all(self, conn: AsyncConnection, values: Mapping[str, Any]) -> list[Row]:
        return await self._run(conn, "fetch", values)

    async def scalar(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Any:
        row = await self.first(conn, values)
        return None if row is None else row[0]

    async def _run(self, conn: AsyncConnection, method: str, values: Mapping[str, Any]) -> Any:
        sync = conn.sync_connection
        assert sync is not None and sync.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        driver: asyncpg.Connection = sync.connection.driver_connection
        try:
            return await getattr(driver, method)(
                self.sql, *(values[n] if n in values else self.fixed[n] for n in self.names), record_class=Row
            )
        except Exception as error:
            if not (driver.is_closed() or demoted(error)):
                raise
            await conn.invalidate()
            raise ConnectionResetError("the database connection was lost") from error


def demoted(error: BaseException | None) -> bool:
    """The host no longer takes writes on this connection (a leader demoted to a standby under it, in a switch-over):
    the connection is of no more use than a broken one, while a new one finds the new leader (a multi-host
    DATABASE_URL with target_session_attrs=read-write, or a proxy that routes to the leader)."""
    found = postgres_error(error) if error is not None else None
    return found is not None and found.sqlstate == "25006"  # read_only_sql_transaction


def postgres_error(error: BaseException) -> asyncpg.PostgresError | None:
    """The server's error behind an exception from either path: asyncpg's own, or wrapped by SQLAlchemy."""
    if isinstance(error, DBAPIError):
        error = error.orig.__cause__ if error.orig is not None else None  # type: ignore[assignment]
    return error if isinstance(error, asyncpg.PostgresError) else None
