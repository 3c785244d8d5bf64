"""The money path: record PENDING, execute under row locks into a double-entry ledger, fail or recover.

1. Record: the operation is inserted PENDING in its own short commit; the idempotency key (unique per caller)
   and a hash of the parameters live on that row, so a duplicate request finds it instead of executing twice.
   A retry of a key whose attempt was abandoned (claimed longer than PENDING_TIMEOUT ago) claims the row instead.
2. Execute: one DB transaction locks the user wallets in id order, checks status, funds and daily limit,
   moves the balances, marks the row COMPLETED and appends the entries, all in one durable commit. Only a
   PENDING row can be marked, so of all the attempts on one row at most one ever moves money.
3. Fail: a refusal rolls that back and marks the row FAILED (failure_code, failure_reason), durably before the
   answer; a refusal of a row something else finished first is answered as that row says. A database outage
   instead leaves the row PENDING for the client's retry to take over.
4. Recover: rows PENDING past the timeout touched no balance. Those without a key (nothing can retry them), and
   keyed ones after the key's retention, are failed as INTERRUPTED.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, func, select, update

from models import Entry, PendingTransaction, Transaction, Wallet
from wallet import errors
from wallet.ledger import history
from wallet.ledger.execute import Moved, NoLongerPending, execute, mark_failed, record_lost
from wallet.ledger.history import load_transaction, render_transaction
from wallet.ledger.record import (
    Claimed,
    Operation,
    Party,
    Recorded,
    Request,
    record,
    resolve_and_record,
)
from wallet.ledger.wallets import WALLET_COLUMNS, render_wallet
from wallet.notify import events
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

log = logging.getLogger("wallet.ledger")

T = Transaction.__table__
# The answer when step 1's record did not survive a crash or a failover before step 2 (execute.record_lost).
LOST = "The database lost this operation's record before it ran; send it again."
# Idempotency keys are kept at least this long (API.md): until then an abandoned keyed operation waits for a retry.
KEY_RETENTION = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Outcome:
    transaction: dict[str, Any]
    replayed: bool
    # The caller's wallet balance right after this operation (for the compatibility endpoint).
    wallet_balance: int | None
    # And what holds reserved of it then (None on a replay).
    wallet_held: int | None = None


def known_row(
    principal: Principal, op: Operation, tx_id: uuid.UUID, reference: str, created_at: dt.datetime
) -> dict[str, Any]:
    """The transaction's rendered columns, built from what we already know (saves a read)."""
    src, dst = op.source, op.destination
    return {
        "id": tx_id,
        "seq": 0,
        "reference": reference,
        "type": op.type,
        "status": "PENDING",
        "amount": op.amount,
        "currency": op.currency,
        "source_wallet_id": src.wallet_id if src else None,
        "destination_wallet_id": dst.wallet_id if dst else None,
        "source_user_id": src.user_id if src else None,
        "destination_user_id": dst.user_id if dst else None,
        "initiator_id": principal.user_id,
        "api_key_id": principal.api_key_id,
        "source_number": src.number if src else None,
        "destination_number": dst.number if dst else None,
        "source_username": src.username if src else None,
        "destination_username": dst.username if dst else None,
        "description": op.description,
        "provider": op.provider,
        "provider_reference": reference if op.provider else None,
        "hold_id": op.hold_id,
        "reverses": op.reverses,
        "metadata": op.metadata,
        "reversed_amount": 0,
        "failure_code": None,
        "failure_reason": None,
        "created_at": created_at,
        "completed_at": None,
    }


async def release(rt: Runtime, table: Table, row_id: uuid.UUID) -> None:
    """The database failed this attempt: nothing moved, so let a retry of the key take the row (a transaction, or a
    batch of them: bulk.py) over at once (expire the claim) rather than after PENDING_TIMEOUT. Best effort: the
    claim expires by itself anyway."""
    with contextlib.suppress(errors.ServiceUnavailable):
        async with rt.autocommit() as conn:
            await conn.execute(
                update(table)
                .where(table.c.id == row_id, table.c.status == "PENDING")
                .values(claimed_at=func.now() - dt.timedelta(seconds=rt.settings.pending_timeout))
            )


async def _replay(rt: Runtime, principal: Principal, op: Operation, tx_id: uuid.UUID, viewer: uuid.UUID) -> Outcome:
    """Answer as the attempt that finished the row did; a row still PENDING is another attempt's to finish."""
    async with rt.transaction() as conn:
        row = await load_transaction(conn, tx_id)
        if row is None:  # the record was lost (execute.record_lost): nothing happened
            raise errors.ServiceUnavailable(LOST)
        balance = None
        own = op.source if op.source and op.source.user_id == principal.user_id else op.destination
        if row["status"] == "COMPLETED" and own is not None:
            balance = (
                await conn.execute(
                    select(Entry.balance_after).where(Entry.transaction_id == tx_id, Entry.wallet_id == own.wallet_id)
                )
            ).scalar()
    if row["status"] == "PENDING":
        # No transaction_id here: a PENDING row is not yet on disk, and nothing is answered that is not durable.
        raise errors.IdempotencyInProgress()
    if row["status"] == "FAILED":
        error = errors.recorded_failure(row["failure_code"], row["failure_reason"], str(row["id"]))
        error.replayed = True  # type: ignore[attr-defined]
        raise error
    return Outcome(render_transaction(row, viewer), True, balance)


# An operation's own step 2 (a reversal's, wallet/operations/reversals.py; a cross-currency transfer's,
# wallet/operations/fx.py), in place of execute(): (rt, operation, its PENDING row, initiator) -> Moved.
Step2 = Callable[[Runtime, Operation, dict[str, Any], uuid.UUID], Awaitable[Moved]]


async def run(
    rt: Runtime,
    principal: Principal,
    op: Operation,
    key: str | None,
    viewer: uuid.UUID | None = None,
    step: Step2 | None = None,
) -> Outcome:
    """Record, execute (ledger_execute(), or the operation's own `step`), and fail or complete one money
    operation; idempotent per (caller, key)."""
    async with rt.session():
        claimed, existing = await record(rt, principal, op, key)
        return await _finish(rt, principal, op, claimed, existing, viewer or principal.user_id, step)


async def _finish(
    rt: Runtime,
    principal: Principal,
    op: Operation,
    claimed: Claimed | None,
    existing: Recorded | None,
    viewer: uuid.UUID,
    step: Step2 | None = None,
) -> Outcome:
    """Steps 2 and 3 for the row step 1 claimed, or the replay of the one already under the key."""
    if claimed is None:
        assert existing is not None
        return await _replay(rt, principal, op, existing.id, viewer)
    tx_id = claimed.id
    # created_at comes from the database, as a replay will read it.
    row = known_row(principal, op, tx_id, claimed.reference, claimed.created_at)
    try:
        done = await (step or execute)(rt, op, row, principal.user_id)
    except NoLongerPending:
        return await _replay(rt, principal, op, tx_id, viewer)
    except errors.ServiceUnavailable as error:
        await release(rt, T, tx_id)
        error.transaction_id = str(tx_id)
        raise
    except errors.WalletError as error:
        if not await mark_failed(rt, tx_id, error.code, error.message, row):
            # The row was finished first: by another attempt, or by this one's own commit whose answer the
            # connection lost (the group commit then executes again and is refused the funds already moved).
            return await _replay(rt, principal, op, tx_id, viewer)
        error.transaction_id = str(tx_id)
        raise
    except Exception as error:
        if record_lost(error):
            raise errors.ServiceUnavailable(LOST) from None
        log.exception("money operation failed unexpectedly", extra={"transaction_id": str(tx_id)})
        try:
            await mark_failed(rt, tx_id, "INTERNAL_ERROR", "The operation failed unexpectedly.", row)
        except Exception:
            log.exception("could not mark the transaction FAILED; recovery will", extra={"transaction_id": str(tx_id)})
        raise
    row.update(status="COMPLETED", completed_at=done.done_at)
    if op.source and op.source.user_id == principal.user_id:
        return Outcome(render_transaction(row, viewer), False, done.source_balance, done.source_held)
    return Outcome(render_transaction(row, viewer), False, done.destination_balance, done.destination_held)


async def _run_request(
    rt: Runtime, principal: Principal, request: Request, key: str | None, *, owner_views: bool = False
) -> Outcome:
    """run() for a request whose parties the recording statement resolves; answered as the caller sees it, or as
    the credited wallet's owner does (owner_views)."""
    op, claimed, existing, _ = await resolve_and_record(rt, principal, request, key)
    viewer = op.destination.user_id if owner_views and op.destination else principal.user_id
    return await _finish(rt, principal, op, claimed, existing, viewer)


# ---- the operations ---------------------------------------------------------------------------------------------


def with_metadata(params: dict[str, Any], metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """A request's hashed parameters with its metadata, when it has any (a request without keeps the hash it had
    before metadata existed, so a key recorded then still replays)."""
    return params if metadata is None else {**params, "metadata": dict(metadata)}


def _own_wallet_request(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    kind: str,
    amount: Decimal,
    description: str | None,
    metadata: Mapping[str, str] | None,
) -> Request:
    if kind == "DEPOSIT" and not rt.settings.allow_self_deposit:
        raise errors.Forbidden("Self-service deposits are turned off on this server.")

    def params(minor: int) -> dict[str, Any]:
        return with_metadata({"op": kind, "wallet": wallet_id, "amount": minor, "description": description}, metadata)

    return Request(kind, wallet_id, principal.user_id, amount, description, params, metadata=metadata)


async def own_wallet_operation(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    kind: str,
    amount: Decimal,
    description: str | None,
    key: str | None,
    metadata: Mapping[str, str] | None = None,
) -> Outcome:
    """A DEPOSIT into, or a WITHDRAWAL from, one of the caller's wallets."""
    request = _own_wallet_request(rt, principal, wallet_id, kind, amount, description, metadata)
    async with rt.session():
        return await _run_request(rt, principal, request, key)


async def operation(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    operation_type: str,
    amount: Decimal,
    description: str | None,
    key: str | None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The compatibility endpoint: a deposit or withdrawal answered with the updated wallet."""
    kind = "DEPOSIT" if operation_type == "DEPOSIT" else "WITHDRAWAL"
    request = _own_wallet_request(rt, principal, wallet_id, kind, amount, description, metadata)
    async with rt.session():
        op, claimed, existing, named = await resolve_and_record(rt, principal, request, key)
        outcome = await _finish(rt, principal, op, claimed, existing, principal.user_id)
        if outcome.wallet_held is not None:  # rendered from the two statements' answers: no read after the move
            row: Any = SimpleNamespace(
                id=named.id,
                number=named.number,
                name=named.name,
                currency=named.currency,
                held=outcome.wallet_held,
                status=named.status,
                created_at=named.wallet_created_at,
                updated_at=outcome.transaction["completed_at"],
            )
        else:  # a replay: the wallet as it is now
            async with rt.autocommit() as conn:
                row = (await conn.execute(select(*WALLET_COLUMNS).where(Wallet.id == wallet_id))).one()
    rendered = render_wallet(row, outcome.wallet_balance)
    rendered["updated_at"] = outcome.transaction["completed_at"]  # a replay: when its operation moved the balance
    return {"wallet": rendered, "replayed": outcome.replayed}


def _transfer_request(
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    description: str | None,
    metadata: Mapping[str, str] | None = None,
) -> Request:
    def params(minor: int) -> dict[str, Any]:
        request = {
            "op": "TRANSFER",
            "wallet": from_wallet_id,
            "recipient": dict(recipient),
            "amount": minor,
            "description": description,
        }
        return with_metadata(request, metadata)

    return Request("TRANSFER", from_wallet_id, principal.user_id, amount, description, params, recipient, metadata)


async def payer_and_payee(
    rt: Runtime, principal: Principal, from_wallet_id: uuid.UUID, recipient: Mapping[str, Any]
) -> tuple[Party, Party]:
    """The caller's wallet and a recipient's (by id, number, username or phone) in the same currency: a hold's two
    sides, resolved by the statement a transfer records with (recording nothing)."""
    request = _transfer_request(principal, from_wallet_id, recipient, Decimal(0), None)
    op, _, _, _ = await resolve_and_record(rt, principal, request, None, only_resolve=True)
    assert op.source is not None and op.destination is not None
    return op.source, op.destination


async def transfer(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    description: str | None,
    key: str | None,
    metadata: Mapping[str, str] | None = None,
) -> Outcome:
    request = _transfer_request(principal, from_wallet_id, recipient, amount, description, metadata)
    async with rt.session():
        return await _run_request(rt, principal, request, key)


async def admin_deposit(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    amount: Decimal,
    description: str | None,
    reason: str | None,
    key: str | None,
) -> Outcome:
    """An admin credits any user wallet; the admin is kept on the row as its initiator. The logged reason is part
    of the request, so reusing a key with another reason is a mismatch like any other changed parameter."""

    def params(minor: int) -> dict[str, Any]:
        return {
            "op": "ADMIN_DEPOSIT",
            "wallet": wallet_id,
            "amount": minor,
            "description": description,
            "reason": reason,
        }

    request = Request("DEPOSIT", wallet_id, None, amount, description, params)
    async with rt.session():
        return await _run_request(rt, principal, request, key, owner_views=True)


# ---- recovery --------------------------------------------------------------------------------------------------


async def recover_interrupted(rt: Runtime) -> int:
    """Step 4: fail rows whose claim is older than the timeout and that no retry can take over any more: those
    without a key, and keyed ones past the key's retention. Their execution never committed (or they would not be
    PENDING), so no balance was touched; the status guard makes this safe against a late commit or a claim. A
    provider deposit waits for its provider instead: wallet/operations/deposits.py sweeps those."""
    timeout = dt.timedelta(seconds=rt.settings.pending_timeout)
    async with rt.transaction() as conn:
        failed = (
            await conn.execute(
                update(T)
                .where(
                    T.c.id.in_(select(PendingTransaction.transaction_id)),
                    T.c.status == "PENDING",
                    T.c.claimed_at < func.now() - timeout,
                    T.c.idempotency_key.is_(None) | (T.c.claimed_at < func.now() - max(timeout, KEY_RETENTION)),
                    T.c.provider.is_(None),
                )
                .values(
                    status="FAILED",
                    failure_code=errors.Interrupted.code,
                    failure_reason=errors.Interrupted.message,
                    completed_at=func.now(),
                )
                .returning(T.c.id, T.c.initiator_id)
            )
        ).all()
        # Their events, in the same commit (rare, so one read per row is fine).
        for tx in failed:
            await events.emit(conn, history.transaction_events(await load_transaction(conn, tx.id), tx.initiator_id))
    return len(failed)
