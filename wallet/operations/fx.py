"""Cross-currency transfers: exchange rates set by admins, quotes offered to users, and the transfer that executes a
quote through the ledger's lifecycle (wallet/ledger/lifecycle.py: record, this module's execution, fail or complete).

Rates are units of the quote currency per 1 base unit, exactly RATE_PLACES decimal places, one per direction (an
inverse is never derived: a desk prices each direction itself). A quote's customer rate is market * (1 - spread)
rounded down to RATE_PLACES; its amounts are rounded to each currency's minor unit in the house's favour: the source
amount up, the destination amount down. Everything is Decimal and integer minor units; no float anywhere.

A transfer moves the quoted amounts through one FX account per currency (a system wallet that keeps its balance and
may go negative: the house's position): the payer's source currency to the source FX account, the destination
currency from the destination FX account to the payee, so the entries sum to zero in each currency. The quote is
used in the commit that moves the money, so of all transfers naming it at most one ever completes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, localcontext
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from models import AdminAction, FxQuote, FxRate, FxRateChange, Transaction, Wallet
from models.fx import RATE_PLACES, SPREAD_PLACES
from wallet import errors
from wallet.ledger import history, lifecycle
from wallet.ledger.execute import MAX_BALANCE, Moved, NoLongerPending, check_status
from wallet.ledger.history import render_fx
from wallet.ledger.record import Operation, Party, any_user_wallet, own_wallet
from wallet.ledger.wallets import open_wallet
from wallet.money import MAX_MAJOR_UNITS, currency_exponent, decimal_places, exact_decimal, format_minor, to_minor
from wallet.notify import events
from wallet.platform import metrics
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

RATE_STEP = Decimal(1).scaleb(-RATE_PLACES)
MAX_RATE = Decimal(10) ** 12
MAX_SPREAD = Decimal("0.1")
# Unrounded amounts are shown to this many decimal places (cut, not rounded): enough to see the rounding.
UNROUNDED_PLACES = 20
# Decimal digits for the arithmetic: 10**12 major units times a rate of 10**12 with 10 places fits many times over.
PRECISION = 80

Q = FxQuote.__table__
T = Transaction.__table__


# ---- input ---------------------------------------------------------------------------------------------------


def parse_rate(raw: object, field: str = "rate") -> Decimal:
    value = exact_decimal(raw, field)
    if value <= 0:
        raise errors.ValidationError({field: ["Must be greater than zero."]})
    if value > MAX_RATE:
        raise errors.ValidationError({field: [f"Must not exceed {MAX_RATE:,}."]})
    if decimal_places(value) > RATE_PLACES:
        raise errors.ValidationError({field: [f"At most {RATE_PLACES} decimal places."]})
    return value


def parse_spread(raw: object, field: str = "spread") -> Decimal:
    value = exact_decimal(raw, field)
    if not 0 <= value <= MAX_SPREAD:
        raise errors.ValidationError({field: [f"Must be between 0 and {MAX_SPREAD} (a fraction: 0.0025 is 0.25 %)."]})
    if decimal_places(value) > SPREAD_PLACES:
        raise errors.ValidationError({field: [f"At most {SPREAD_PLACES} decimal places."]})
    return value


def _pair(base: str, quote: str) -> tuple[str, str]:
    for field, code in (("base", base), ("quote", quote)):
        if currency_exponent(code) is None:
            raise errors.ValidationError({field: ["Unknown currency; use an ISO 4217 code such as USD."]})
    if base == quote:
        raise errors.SameCurrency("A rate needs two different currencies.")
    return base, quote


# ---- rates (admin) -------------------------------------------------------------------------------------------


def _fixed(value: Decimal, places: int) -> str:
    return f"{value:.{places}f}"


def render_rate(row: Any) -> dict[str, Any]:
    return {
        "base": row.base,
        "quote": row.quote,
        "rate": _fixed(row.rate, RATE_PLACES),
        "spread": _fixed(row.spread, SPREAD_PLACES),
        "updated_by": row.updated_by,
        "updated_at": row.updated_at,
    }


def render_rate_change(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "base": row.base,
        "quote": row.quote,
        "rate": _fixed(row.rate, RATE_PLACES),
        "spread": _fixed(row.spread, SPREAD_PLACES),
        "set_by": row.set_by,
        "created_at": row.created_at,
    }


async def _ensure_fx_account(conn: AsyncConnection, currency: str) -> None:
    """The currency's FX account, opened with its first rate (so a transfer never has to create one)."""
    found = select(Wallet.id).where(Wallet.is_fx, Wallet.currency == currency)
    if (await conn.execute(found)).first() is None:
        try:
            async with conn.begin_nested():
                await open_wallet(conn, None, currency, f"FX {currency}", fx=True)
        except IntegrityError:  # another admin's rate opened it first
            pass


async def set_rate(
    rt: Runtime, principal: Principal, base: str, quote: str, rate: Decimal, spread: Decimal | None
) -> dict[str, Any]:
    """Set a pair's rate (no spread: 0); the change, its history row and its admin log entry commit together."""
    base, quote = _pair(base, quote)
    spread = spread or Decimal(0)
    async with rt.transaction() as conn:
        for currency in sorted((base, quote)):
            await _ensure_fx_account(conn, currency)
        previous = (
            await conn.execute(
                select(FxRate.rate, FxRate.spread).where(FxRate.base == base, FxRate.quote == quote).with_for_update()
            )
        ).first()
        values = {"base": base, "quote": quote, "rate": rate, "spread": spread}
        row = (
            await conn.execute(
                insert(FxRate)
                .values(**values, updated_by=principal.user_id)
                .on_conflict_do_update(
                    index_elements=[FxRate.base, FxRate.quote],
                    set_={"rate": rate, "spread": spread, "updated_by": principal.user_id, "updated_at": text("now()")},
                )
                .returning(*FxRate.__table__.c)
            )
        ).one()
        await conn.execute(insert(FxRateChange).values(**values, set_by=principal.user_id))
        details = {
            "base": base,
            "quote": quote,
            "rate": _fixed(rate, RATE_PLACES),
            "spread": _fixed(spread, SPREAD_PLACES),
            "previous_rate": _fixed(previous.rate, RATE_PLACES) if previous else None,
            "previous_spread": _fixed(previous.spread, SPREAD_PLACES) if previous else None,
        }
        await conn.execute(insert(AdminAction).values(admin_id=principal.user_id, action="fx_rate", details=details))
    return render_rate(row)


async def list_rates(rt: Runtime) -> dict[str, Any]:
    async with rt.autocommit() as conn:
        rows = (await conn.execute(select(FxRate).order_by(FxRate.base, FxRate.quote))).all()
    return {"items": [render_rate(r) for r in rows]}


async def rate_history(
    rt: Runtime, base: str, quote: str, *, limit: int = 50, cursor: str | None = None
) -> dict[str, Any]:
    """Every rate set for a pair, newest first, with who set it."""
    base, quote = _pair(base, quote)
    query = select(FxRateChange).where(FxRateChange.base == base, FxRateChange.quote == quote)
    return await created_page(rt, query, FxRateChange, limit, cursor, render_rate_change)


async def position(rt: Runtime) -> dict[str, Any]:
    """The house's position per currency: each FX account's balance (negative: the house has paid out more of that
    currency than it took in)."""
    async with rt.autocommit() as conn:
        rows = (
            await conn.execute(
                select(Wallet.id, Wallet.number, Wallet.currency, Wallet.balance)
                .where(Wallet.is_fx)
                .order_by(Wallet.currency)
            )
        ).all()
    return {
        "items": [
            {
                "currency": r.currency,
                "balance": format_minor(r.balance, r.currency),
                "wallet_id": r.id,
                "wallet_number": r.number,
            }
            for r in rows
        ]
    }


# ---- quotes ----------------------------------------------------------------------------------------------------


def customer_rate(market: Decimal, spread: Decimal) -> Decimal:
    """The spread against the customer: fewer destination units per source unit, rounded down."""
    with localcontext(prec=PRECISION):
        return (market * (1 - spread)).quantize(RATE_STEP, rounding=ROUND_DOWN)


def _minor(value: Decimal, currency: str, rounding: str) -> int:
    exponent = currency_exponent(currency)
    assert exponent is not None
    with localcontext(prec=PRECISION):
        return int(value.scaleb(exponent).to_integral_value(rounding=rounding))


def _unrounded(value: Decimal) -> str:
    with localcontext(prec=PRECISION):
        return _fixed(value.quantize(Decimal(1).scaleb(-UNROUNDED_PLACES), rounding=ROUND_DOWN), UNROUNDED_PLACES)


def convert(
    rate: Decimal, source: str, destination: str, source_amount: Decimal | None, destination_amount: Decimal | None
) -> tuple[int, int]:
    """(source minor units, destination minor units) for the one amount given: the other is computed exactly and
    rounded in the house's favour (a source amount up, a destination amount down)."""
    with localcontext(prec=PRECISION):
        if source_amount is not None:
            paid = to_minor(source_amount, source, "source_amount")
            received = _minor(source_amount * rate, destination, ROUND_FLOOR)
            field, computed, currency = "source_amount", received, destination
        else:
            assert destination_amount is not None
            received = to_minor(destination_amount, destination, "destination_amount")
            paid = _minor(destination_amount / rate, source, ROUND_CEILING)
            field, computed, currency = "destination_amount", paid, source
    if computed <= 0:
        raise errors.ValidationError({field: [f"Too small: it converts to less than the smallest unit of {currency}."]})
    if Decimal(computed).scaleb(-(currency_exponent(currency) or 0)) > MAX_MAJOR_UNITS:
        raise errors.ValidationError({field: [f"Too large: it converts to more than {MAX_MAJOR_UNITS:,} {currency}."]})
    return paid, received


def render_quote(row: Any) -> dict[str, Any]:
    source = Decimal(row.source_amount).scaleb(-(currency_exponent(row.source_currency) or 0))
    destination = Decimal(row.destination_amount).scaleb(-(currency_exponent(row.destination_currency) or 0))
    with localcontext(prec=PRECISION):
        exact_source = destination / row.rate if row.fixed == "destination" else source
        exact_destination = source * row.rate if row.fixed == "source" else destination
    return {
        "id": row.id,
        "from_wallet_id": row.from_wallet_id,
        "to_wallet_id": row.to_wallet_id,
        "rate": _fixed(row.rate, RATE_PLACES),
        "market_rate": _fixed(row.market_rate, RATE_PLACES),
        "spread": _fixed(row.spread, SPREAD_PLACES),
        "source_amount": format_minor(row.source_amount, row.source_currency),
        "source_currency": row.source_currency,
        "destination_amount": format_minor(row.destination_amount, row.destination_currency),
        "destination_currency": row.destination_currency,
        "fixed": row.fixed,
        "rounding": {
            "source": "up",
            "destination": "down",
            "unrounded_source_amount": _unrounded(exact_source),
            "unrounded_destination_amount": _unrounded(exact_destination),
        },
        "expires_at": row.expires_at,
        "created_at": row.created_at,
    }


async def _recipient_wallet(conn: AsyncConnection, recipient: Mapping[str, Any]) -> Party:
    wallet_id = recipient.get("to_wallet_id")
    if wallet_id is None:
        wallet_id = (
            await conn.execute(select(Wallet.id).where(Wallet.number == recipient["to_wallet_number"]))
        ).scalar()
        if wallet_id is None:
            raise errors.NotFound("Recipient wallet not found.")
    try:
        return await any_user_wallet(conn, wallet_id)
    except errors.NotFound:
        raise errors.NotFound("Recipient wallet not found.") from None


_NEW_QUOTE = text("""
INSERT INTO fx_quotes (id, user_id, from_wallet_id, to_wallet_id, source_currency, destination_currency, market_rate,
    spread, rate, source_amount, destination_amount, fixed, expires_at)
VALUES (CAST(:id AS uuid), CAST(:user_id AS uuid), CAST(:from_wallet_id AS uuid), CAST(:to_wallet_id AS uuid),
    :source_currency, :destination_currency, :market_rate, :spread, :rate, :source_amount, :destination_amount, :fixed,
    now() + CAST(:ttl AS interval))
RETURNING *
""")


async def create_quote(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    source_amount: Decimal | None,
    destination_amount: Decimal | None,
) -> dict[str, Any]:
    """Offer the caller a rate and both amounts for a transfer between two wallets of different currencies, valid
    for FX_QUOTE_TTL seconds. One that takes more than STEP_UP_AMOUNT needs a recent authentication."""
    async with rt.autocommit() as conn:
        payer = await own_wallet(conn, principal, from_wallet_id)
        payee = await _recipient_wallet(conn, recipient)
        if payee.wallet_id == payer.wallet_id:
            raise errors.SameWallet()
        if payee.currency == payer.currency:
            raise errors.SameCurrency()
        market = (
            await conn.execute(
                select(FxRate.rate, FxRate.spread).where(FxRate.base == payer.currency, FxRate.quote == payee.currency)
            )
        ).first()
        if market is None:
            raise errors.FxRateUnavailable(f"No exchange rate is set from {payer.currency} to {payee.currency}.")
        rate = customer_rate(market.rate, market.spread)
        if rate <= 0:
            raise errors.FxRateUnavailable(f"The rate from {payer.currency} to {payee.currency} is too small to use.")
        paid, received = convert(rate, payer.currency, payee.currency, source_amount, destination_amount)
        # A quote is where a cross-currency transfer's amount is known (executing it names only the quote): a large
        # one needs a recent authentication, judged by what it would take from the payer, in the payer's currency.
        principal.require_recent_authentication_above(
            Decimal(paid).scaleb(-(currency_exponent(payer.currency) or 0)),
            rt.settings.step_up_amount,
            rt.settings.step_up_window,
        )
        row = (
            await conn.execute(
                _NEW_QUOTE,
                {
                    "id": uuid.uuid4(),
                    "user_id": principal.user_id,
                    "from_wallet_id": payer.wallet_id,
                    "to_wallet_id": payee.wallet_id,
                    "source_currency": payer.currency,
                    "destination_currency": payee.currency,
                    "market_rate": market.rate,
                    "spread": market.spread,
                    "rate": rate,
                    "source_amount": paid,
                    "destination_amount": received,
                    "fixed": "source" if source_amount is not None else "destination",
                    "ttl": dt.timedelta(seconds=rt.settings.fx_quote_ttl),
                },
            )
        ).one()
    return render_quote(row)


# ---- the transfer ----------------------------------------------------------------------------------------------

# FOR NO KEY UPDATE as in the ledger; a LEFT JOIN because the FX accounts have no owner. Rows lock in id order.
_LOCK = text("""
SELECT w.id, w.balance, w.held, u.status, now() AS now FROM wallets w LEFT JOIN users u ON u.id = w.user_id
WHERE w.id = ANY(CAST(:ids AS uuid[])) ORDER BY w.id FOR NO KEY UPDATE OF w
""")
# After the wallet locks: the quote row's lock queues a second transfer of the same quote, which then finds it used.
_USE_QUOTE = text("""
UPDATE fx_quotes SET used_at = now() WHERE id = CAST(:quote AS uuid) AND used_at IS NULL AND expires_at > now()
RETURNING id
""")
# The rest of step 2 in one statement: today's usage of the payer's source currency when a limit is set (its row lock
# serialises the limit), the four balances and entries, and the COMPLETED mark with the conversion; the events in
# the same commit.
_MOVE = text(f"""
WITH {events.cte()}, usage AS (
    INSERT INTO daily_usage AS d (user_id, currency, kind, day, amount)
    SELECT CAST(:payer AS uuid), :source_currency, 'TRANSFER', CAST(timezone('UTC', now()) AS date),
        CAST(:source_amount AS bigint)
    WHERE CAST(:payer AS uuid) IS NOT NULL
    ON CONFLICT (user_id, currency, kind, day) DO UPDATE SET amount = d.amount + excluded.amount
    RETURNING d.amount
), legs (wallet_id, amount, currency) AS (
    VALUES (CAST(:source AS uuid), -CAST(:source_amount AS bigint), CAST(:source_currency AS text)),
           (CAST(:fx_source AS uuid), CAST(:source_amount AS bigint), CAST(:source_currency AS text)),
           (CAST(:fx_destination AS uuid), -CAST(:destination_amount AS bigint), CAST(:destination_currency AS text)),
           (CAST(:destination AS uuid), CAST(:destination_amount AS bigint), CAST(:destination_currency AS text))
), moved AS (
    UPDATE wallets AS w SET balance = w.balance + legs.amount, updated_at = now()
    FROM legs WHERE w.id = legs.wallet_id
    RETURNING w.id, w.balance
), entered AS (
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT CAST(:tx AS uuid), legs.wallet_id, legs.amount, legs.currency, moved.balance
    FROM legs JOIN moved ON moved.id = legs.wallet_id
)
UPDATE transactions SET status = 'COMPLETED', completed_at = now(), fx_quote_id = CAST(:quote AS uuid),
    fx_rate = CAST(:rate AS numeric), destination_amount = CAST(:destination_amount AS bigint),
    destination_currency = :destination_currency
WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
RETURNING completed_at, (SELECT amount FROM usage) AS used,
    (SELECT balance FROM moved WHERE id = CAST(:source AS uuid)) AS source_after,
    (SELECT balance FROM moved WHERE id = CAST(:destination AS uuid)) AS destination_after
""")

_FX_ACCOUNTS = text("SELECT currency, id FROM wallets WHERE is_fx AND currency IN (:source, :destination)")


def _fx_columns(quote: Any) -> dict[str, Any]:
    """The transaction columns a COMPLETED transfer of this quote carries."""
    return {
        "fx_quote_id": quote.id,
        "fx_rate": quote.rate,
        "destination_amount": quote.destination_amount,
        "destination_currency": quote.destination_currency,
    }


def _executor(quote: Any) -> lifecycle.Step2:
    """Step 2 of a transfer of this quote, for lifecycle.run: lock the payer, the payee and both FX accounts in id
    order, use the quote, check status, funds and the daily limit, move and mark COMPLETED in one commit."""

    async def execute(rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID) -> Moved:
        assert op.source is not None and op.destination is not None
        async with rt.transaction() as conn:
            accounts = dict(
                (
                    await conn.execute(
                        _FX_ACCOUNTS, {"source": quote.source_currency, "destination": quote.destination_currency}
                    )
                ).all()
            )
            fx_source, fx_destination = accounts[quote.source_currency], accounts[quote.destination_currency]
            ids = [op.source.wallet_id, op.destination.wallet_id, fx_source, fx_destination]
            locked = {r.id: r for r in (await conn.execute(_LOCK, {"ids": ids})).all()}
            if (await conn.execute(_USE_QUOTE, {"quote": quote.id})).first() is None:
                raise errors.QuoteExpired()
            source, destination = locked[op.source.wallet_id], locked[op.destination.wallet_id]
            check_status(source.status, "sending")
            check_status(destination.status, "recipient's")
            if source.balance - source.held < quote.source_amount:
                available = format_minor(source.balance - source.held, quote.source_currency)
                raise errors.InsufficientFunds(
                    f"Insufficient funds: the available balance is {available} {quote.source_currency}."
                )
            if destination.balance + quote.destination_amount > MAX_BALANCE:
                raise errors.BalanceLimitExceeded()
            # A limit of 0 is none (settings); then no usage is counted, as for every other operation.
            limit = int(rt.settings.daily_transfer_limit.scaleb(currency_exponent(quote.source_currency) or 0))
            completed = {**row, **_fx_columns(quote), "status": "COMPLETED", "completed_at": source.now}
            moved = (
                await conn.execute(
                    _MOVE,
                    {
                        "tx": row["id"],
                        "payer": op.source.user_id if limit else None,
                        "source": op.source.wallet_id,
                        "destination": op.destination.wallet_id,
                        "fx_source": fx_source,
                        "fx_destination": fx_destination,
                        "quote": quote.id,
                        "rate": quote.rate,
                        "source_amount": quote.source_amount,
                        "source_currency": quote.source_currency,
                        "destination_amount": quote.destination_amount,
                        "destination_currency": quote.destination_currency,
                        **events.params(history.transaction_events(completed, initiator_id)),
                    },
                )
            ).first()
            if moved is None:
                raise NoLongerPending()
            if limit and moved.used > limit:
                remaining = format_minor(max(limit - (moved.used - quote.source_amount), 0), quote.source_currency)
                raise errors.DailyLimitExceeded(
                    f"This would exceed the daily transfer limit of {format_minor(limit, quote.source_currency)} "
                    f"{quote.source_currency}; {remaining} remains today."
                )
        metrics.money("TRANSFER", "COMPLETED")
        return Moved(moved.completed_at, moved.source_after, moved.destination_after)

    return execute


_QUOTE_FOR_TRANSFER = text("""
SELECT q.*, q.expires_at <= now() AS expired, w.number AS to_number FROM fx_quotes q
JOIN wallets w ON w.id = q.to_wallet_id WHERE q.id = CAST(:quote AS uuid)
""")


async def transfer(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    quote_id: uuid.UUID,
    description: str | None,
    key: str | None,
) -> lifecycle.Outcome:
    """Execute the caller's quote: pay its source amount, the payee receives its destination amount. Idempotent per
    key like every ledger operation; refusals decided under the locks are recorded FAILED."""
    async with rt.autocommit() as conn:
        quote = (await conn.execute(_QUOTE_FOR_TRANSFER, {"quote": quote_id})).first()
        if quote is None or quote.user_id != principal.user_id:
            raise errors.NotFound("Quote not found.")
        named = {"to_wallet_id": quote.to_wallet_id, "to_wallet_number": quote.to_number}
        if from_wallet_id != quote.from_wallet_id or any(named.get(k) != v for k, v in recipient.items()):
            raise errors.QuoteMismatch()
        payer = await own_wallet(conn, principal, quote.from_wallet_id)
        payee = await any_user_wallet(conn, quote.to_wallet_id)
        earlier = None
        if key is not None:
            earlier = (
                await conn.execute(
                    select(T.c.id).where(T.c.initiator_id == principal.user_id, T.c.idempotency_key == key)
                )
            ).scalar()
    if earlier is None and (quote.used_at is not None or quote.expired):
        raise errors.QuoteExpired()  # nothing to record: a new request for a quote that can no longer be used
    params = {
        "op": "FX_TRANSFER",
        "wallet": payer.wallet_id,
        "recipient": dict(recipient),
        "quote": quote.id,
        "description": description,
    }
    op = Operation("TRANSFER", quote.source_amount, quote.source_currency, payer, payee, description, params)
    outcome = await lifecycle.run(rt, principal, op, key, step=_executor(quote))
    # The answer's row was built before execution, without the conversion (a replay reads it from the row).
    conversion = render_fx({"amount": quote.source_amount, "currency": quote.source_currency, **_fx_columns(quote)})
    return dataclasses.replace(outcome, transaction={**outcome.transaction, "fx": conversion})
