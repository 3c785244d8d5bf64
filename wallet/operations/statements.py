"""Statements: one wallet's ledger entries over a period, with opening and closing balances, from one snapshot."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from wallet.errors import NotFound, ValidationError
from wallet.money import format_minor
from wallet.platform.runtime import Runtime

BATCH = 1000  # entries fetched (and written out) at a time: memory follows the batch, not the period

_WALLET = text("""
SELECT id, number, name, currency, created_at, now() AS now FROM wallets
WHERE id = :wallet AND user_id = :user
""")

# The opening balance is the balance after the wallet's last entry before the period (0 when there is none).
_SUMMARY = text("""
SELECT COALESCE((SELECT balance_after FROM entries WHERE wallet_id = :wallet AND created_at < :since
                 ORDER BY created_at DESC, id DESC LIMIT 1), 0) AS opening,
       COUNT(*) AS count,
       COALESCE(SUM(amount) FILTER (WHERE amount > 0), 0) AS total_in,
       COALESCE(-SUM(amount) FILTER (WHERE amount < 0), 0) AS total_out
FROM entries WHERE wallet_id = :wallet AND created_at >= :since AND created_at < :until
""")

# Entries only exist for COMPLETED transactions, so a FAILED or PENDING operation never shows. The counterparty of a
# transfer is the other wallet (its owner and number); deposits and withdrawals have the outside world instead.
_ENTRIES = text("""
SELECT e.amount, e.balance_after, e.created_at, t.id AS transaction_id, t.reference, t.type, t.description,
       cw.number AS counterparty_number, cu.username AS counterparty_username
FROM entries e
JOIN transactions t ON t.id = e.transaction_id
LEFT JOIN wallets cw ON t.type = 'TRANSFER'
    AND cw.id = CASE WHEN e.amount < 0 THEN t.destination_wallet_id ELSE t.source_wallet_id END
LEFT JOIN users cu ON cu.id = cw.user_id
WHERE e.wallet_id = :wallet AND e.created_at >= :since AND e.created_at < :until
ORDER BY e.id  -- the order the balances moved in (the wallet row lock serialises its entries)
""")


@dataclass
class Statement:
    wallet: dict[str, Any]
    since: dt.datetime
    until: dt.datetime  # exclusive
    opening_balance: str
    closing_balance: str
    total_in: str
    total_out: str
    entry_count: int
    batches: AsyncIterator[list[dict[str, Any]]]

    @property
    def filename_stem(self) -> str:
        """statement-<number>-<first day>-<last day>, the days the period covers."""
        last_day = (self.until - dt.timedelta(microseconds=1)).date()
        return f"statement-{self.wallet['number']}-{self.since.date()}-{last_day}"


def _render_entry(row: Any, currency: str) -> dict[str, Any]:
    counterparty = None
    if row.counterparty_number is not None:
        counterparty = {"username": row.counterparty_username, "wallet_number": row.counterparty_number}
    return {
        "transaction_id": row.transaction_id,
        "reference": row.reference,
        "type": row.type,
        "description": row.description,
        "counterparty": counterparty,
        "direction": "in" if row.amount > 0 else "out",
        "amount": format_minor(abs(row.amount), currency),
        "balance": format_minor(row.balance_after, currency),
        "created_at": row.created_at,
    }


@asynccontextmanager
async def open_statement(
    rt: Runtime,
    owner_id: uuid.UUID,
    wallet_id: uuid.UUID,
    since: dt.datetime | None,
    until: dt.datetime | None,
    max_entries: int | None = None,
) -> AsyncIterator[Statement]:
    """The statement of one of `owner_id`'s wallets; its entries are read in batches while the block runs.

    `since` defaults to the wallet's opening, `until` (exclusive) to now. Over `max_entries` is a 400.
    The query schema has checked that a given `since` is before a given `until`.
    """
    async with rt.snapshot() as conn:
        wallet = (await conn.execute(_WALLET, {"wallet": wallet_id, "user": owner_id})).first()
        if wallet is None:
            raise NotFound("Wallet not found.")
        # A default bound never crosses the given one: the period is empty rather than inverted.
        if since is None:
            since = wallet.created_at if until is None else min(wallet.created_at, until)
        if until is None:
            until = max(wallet.now, since)
        params = {"wallet": wallet_id, "since": since, "until": until}
        summary = (await conn.execute(_SUMMARY, params)).one()
        if max_entries is not None and summary.count > max_entries:
            raise ValidationError(
                {"format": [f"This period has {summary.count} entries, over {max_entries}: narrow it or use csv."]}
            )

        async def batches() -> AsyncIterator[list[dict[str, Any]]]:
            async with conn.stream(_ENTRIES, params) as result:  # a server-side cursor
                async for rows in result.partitions(BATCH):
                    yield [_render_entry(row, wallet.currency) for row in rows]

        currency = wallet.currency
        entries = batches()
        try:
            yield Statement(
                wallet={"id": wallet.id, "number": wallet.number, "name": wallet.name, "currency": currency},
                since=since,
                until=until,
                opening_balance=format_minor(summary.opening, currency),
                closing_balance=format_minor(summary.opening + summary.total_in - summary.total_out, currency),
                total_in=format_minor(summary.total_in, currency),
                total_out=format_minor(summary.total_out, currency),
                entry_count=summary.count,
                batches=entries,
            )
        finally:
            await entries.aclose()  # a reader that stopped early (the client left) closes the cursor here


CSV_HEADER = (
    "date",
    "reference",
    "type",
    "description",
    "counterparty",
    "counterparty_wallet",
    "money_in",
    "money_out",
    "balance",
)


def _cell(value: str | None) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP's CSV injection advice: prefix a quote)."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value or ""


def csv_rows(entries: list[dict[str, Any]], header: bool = False) -> bytes:
    """Entries as CSV lines (RFC 4180, UTF-8), after the header row when asked."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_HEADER)
    for e in entries:
        party = e["counterparty"] or {}
        writer.writerow(
            (
                e["created_at"].astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                e["reference"],
                e["type"],
                _cell(e["description"]),
                _cell(party.get("username")),
                party.get("wallet_number", ""),
                e["amount"] if e["direction"] == "in" else "",
                e["amount"] if e["direction"] == "out" else "",
                e["balance"],
            )
        )
    return out.getvalue().encode()
