"""Reversals: an admin gives back all or part of a COMPLETED deposit, withdrawal or transfer as a new REVERSAL
transaction linked to it (`reverses`). The original is never edited; only its `reversed_amount` grows.

A reversal runs the ledger's money path (lifecycle.run: recorded PENDING first with its key and request hash, then
executed, then COMPLETED or FAILED durably) with its own step 2, because its rules are not a user's:
- The money goes back the way it came: each entry of the original is mirrored with the opposite sign for the
  reversal's amount. A deposit: from the user's wallet to the currency's system account; a withdrawal: from the
  system account to the user; a transfer: from the recipient back to the sender.
- Under the wallet row locks (in id order, as every execution takes them) and then the original's row lock, it is
  refused (recorded FAILED) when the reversals would add up to more than the original (REVERSAL_EXCEEDED), or when
  the wallet the money comes back from no longer has it available, holds counted (INSUFFICIENT_FUNDS): no balance
  is ever driven negative or below what its holds reserve.
- Freezes and deactivations do not stop it (an admin's correction must be possible on exactly such an account),
  nor do daily limits (they limit what users spend, not an admin's corrections).
- The original's reversed_amount, the entries, the COMPLETED mark, the admin action log entry and the events
  (transaction.completed for the admin and for each user whose wallet it touched) commit together.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text

from models import Transaction
from wallet import errors
from wallet.ledger import history, lifecycle
from wallet.ledger.execute import MAX_BALANCE, Moved, NoLongerPending
from wallet.ledger.history import render_transaction
from wallet.ledger.record import Operation, any_user_wallet, recorded_amount
from wallet.money import format_minor, to_minor
from wallet.notify import events
from wallet.operations import admin
from wallet.platform import metrics
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

T = Transaction.__table__
REVERSIBLE = ("DEPOSIT", "WITHDRAWAL", "TRANSFER")

_LOCK_WALLETS = text("""
SELECT id, balance, held, now() AS now FROM wallets
WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE
""")
# After the wallets, like a capture's hold row. NO KEY UPDATE: reversals being recorded meanwhile reference this row
# (their foreign-key check takes KEY SHARE) and must not queue behind it.
_LOCK_ORIGINAL = text("""
SELECT amount - reversed_amount AS remaining FROM transactions WHERE id = CAST(:original AS uuid) FOR NO KEY UPDATE
""")
# The move in one round trip: the user balances (the system account keeps none) and the entries, each mirroring an
# entry of the original; the original's reversed_amount (its CHECK is the last guard against exceeding); the events;
# and the COMPLETED mark, which returns no row when the reversal is no longer PENDING (the rollback undoes the rest).
_GIVE_BACK = text(f"""
WITH {events.cte()}, back AS (
    SELECT e.wallet_id, CASE WHEN e.amount > 0 THEN -CAST(:amount AS bigint) ELSE CAST(:amount AS bigint) END AS amount
    FROM entries e WHERE e.transaction_id = CAST(:original AS uuid)
), moved AS (
    UPDATE wallets AS w SET balance = w.balance + back.amount, updated_at = now()
    FROM back WHERE w.id = back.wallet_id AND NOT w.is_system
    RETURNING w.id, w.balance
), legs AS (
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT CAST(:tx AS uuid), back.wallet_id, back.amount, :currency, moved.balance
    FROM back LEFT JOIN moved ON moved.id = back.wallet_id
), reversed AS (
    UPDATE transactions SET reversed_amount = reversed_amount + CAST(:amount AS bigint)
    WHERE id = CAST(:original AS uuid)
)
UPDATE transactions SET status = 'COMPLETED', completed_at = now()
WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
RETURNING completed_at,
    (SELECT balance FROM moved WHERE id = CAST(:source AS uuid)) AS source_after,
    (SELECT balance FROM moved WHERE id = CAST(:destination AS uuid)) AS destination_after
""")


def _told(completed: dict[str, Any], admin_id: uuid.UUID) -> list[events.NewEvent]:
    """transaction.completed for the admin and for each user whose wallet the reversal touched, from their side."""
    told = history.transaction_events(completed, admin_id)
    for user in dict.fromkeys((completed["source_user_id"], completed["destination_user_id"])):
        if user is not None and user != admin_id:
            told.append(events.NewEvent(user, "transaction.completed", render_transaction(completed, user)))
    return told


def _give_back(reason: str | None) -> lifecycle.Step2:
    """Step 2 of a reversal (see the module docstring); `reason` goes to the admin action log in its commit."""

    async def step(rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID) -> Moved:
        async with rt.transaction() as conn:
            parties = [p for p in (op.source, op.destination) if p is not None]
            locked = {
                r.id: r for r in (await conn.execute(_LOCK_WALLETS, {"ids": [p.wallet_id for p in parties]})).all()
            }
            remaining = (await conn.execute(_LOCK_ORIGINAL, {"original": op.reverses})).scalar_one()
            if op.amount > remaining:
                raise errors.ReversalExceeded(
                    f"The reversal is more than what remains of the transaction to reverse: "
                    f"{format_minor(remaining, op.currency)} {op.currency}."
                )
            if op.source is not None:
                source = locked[op.source.wallet_id]
                if source.balance - source.held < op.amount:
                    available = format_minor(source.balance - source.held, op.currency)
                    raise errors.InsufficientFunds(
                        f"Insufficient funds: the wallet the money comes back from has {available} {op.currency} "
                        "available."
                    )
            if op.destination is not None and locked[op.destination.wallet_id].balance + op.amount > MAX_BALANCE:
                raise errors.BalanceLimitExceeded()
            # now() is the transaction's start, so it is the completed_at the COMPLETED mark below will write.
            completed = {**row, "status": "COMPLETED", "completed_at": locked[parties[0].wallet_id].now}
            await admin.log_money_action(conn, initiator_id, "reverse", completed, reason)
            moved = (
                await conn.execute(
                    _GIVE_BACK,
                    {
                        "tx": row["id"],
                        "original": op.reverses,
                        "amount": op.amount,
                        "currency": op.currency,
                        "source": op.source.wallet_id if op.source else None,
                        "destination": op.destination.wallet_id if op.destination else None,
                        **events.params(_told(completed, initiator_id)),
                    },
                )
            ).first()
            if moved is None:
                raise NoLongerPending()
        metrics.money(op.type, "COMPLETED")
        return Moved(moved.completed_at, moved.source_after, moved.destination_after)

    return step


async def reverse(
    rt: Runtime,
    principal: Principal,
    original_id: uuid.UUID,
    amount: Decimal | None,
    reason: str | None,
    key: str | None,
) -> lifecycle.Outcome:
    """Give back `amount` (default: all not yet reversed) of a COMPLETED deposit, withdrawal or transfer; the admin
    asks. Idempotent per key like any ledger operation; a refusal decided under the locks is recorded FAILED, and
    the reversal is logged in the admin action log either way."""
    async with rt.autocommit() as conn:
        original = (await conn.execute(select(T).where(T.c.id == original_id))).first()
        if original is None:
            raise errors.NotFound("Transaction not found.")
        if original.type not in REVERSIBLE or original.status != "COMPLETED":
            raise errors.NotReversible(
                f"This {original.type.lower()} is {original.status}; only a COMPLETED deposit, withdrawal or "
                "transfer can be reversed."
            )
        if original.fx_quote_id is not None:
            raise errors.NotReversible(
                "A cross-currency transfer is not reversed (its rate has moved on): send the money back with a new "
                "cross-currency transfer instead."
            )
        sender = await any_user_wallet(conn, original.source_wallet_id) if original.source_wallet_id else None
        recipient = (
            await any_user_wallet(conn, original.destination_wallet_id) if original.destination_wallet_id else None
        )
        earlier = await recorded_amount(conn, principal, key)
    requested = None if amount is None else to_minor(amount, original.currency)
    minor = requested or earlier or original.amount - original.reversed_amount  # "all not yet reversed", once
    if not minor:  # a new request with nothing left to reverse: no amount to record
        raise errors.ReversalExceeded("The transaction has already been reversed in full.")
    params = {"op": "REVERSAL", "reverses": original_id, "amount": requested, "reason": reason}
    # The money goes back: from the original's recipient (or the system account) to its sender (or the system).
    op = Operation(
        "REVERSAL",
        minor,
        original.currency,
        recipient,
        sender,
        f"Reversal of {original.reference}",
        params,
        reverses=original_id,
    )
    viewer = (recipient or sender).user_id  # type: ignore[union-attr]  # a reversible transaction has a user side
    try:
        return await lifecycle.run(rt, principal, op, key, viewer=viewer, step=_give_back(reason))
    except errors.WalletError as error:
        if error.transaction_id is not None:  # recorded, then FAILED (e.g. the money is no longer there)
            await admin.log_outcome(rt, principal, "reverse", uuid.UUID(error.transaction_id), reason)
        raise
