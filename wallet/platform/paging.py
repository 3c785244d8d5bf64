"""Opaque keyset cursors (the sort key of a page's last row, versioned and base64url-encoded) and pages over them."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, tuple_

from wallet.errors import ValidationError
from wallet.platform.runtime import Runtime

_VERSION = "v1"


def encode_cursor(*key: object) -> str:
    text = "|".join([_VERSION, *(str(part) for part in key)])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *parsers: Callable[[str], Any]) -> tuple[Any, ...]:
    """The key parts, each read by its parser; anything else is a 400 on `cursor`."""
    try:
        version, *parts = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        if version != _VERSION or len(parts) != len(parsers):
            raise ValueError
        return tuple(parse(part) for parse, part in zip(parsers, parts, strict=True))
    except (ValueError, UnicodeDecodeError):
        raise ValidationError({"cursor": ["Not a valid cursor."]}) from None


def bigint(text: str) -> int:
    """A parser for a BIGINT key part (the database would refuse anything wider)."""
    value = int(text)
    if not 0 <= value < 2**63:
        raise ValueError(text)
    return value


async def created_page(
    rt: Runtime, query: Select, table: Any, limit: int, cursor: str | None, render: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """One page of `query`'s rows newest first, keyset-paged over (created_at, id)."""
    if cursor is not None:
        query = query.where(tuple_(table.created_at, table.id) < tuple_(*decode_cursor(cursor, utc_moment, uuid.UUID)))
    query = query.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)
    async with rt.transaction() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [render(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id) if more else None,
    }


def utc_moment(text: str, shift: dt.timedelta = dt.timedelta()) -> dt.datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime (a naive one is UTC), moved by `shift`.

    The one parser of dates from clients (query filters and cursors): a moment that falls outside the years
    1..9999 once in UTC (`9999-12-31T23:59:59-05:00`, or the day after `9999-12-31`) is a ValueError, not a crash.
    """
    parsed = dt.datetime.fromisoformat(text)
    try:
        moment = parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
        return moment + shift
    except OverflowError:
        raise ValueError(f"{text} is out of range") from None
