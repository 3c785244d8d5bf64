"""Batch transfers (POST /transfers/batch): up to 1,000 transfers of one caller under one Idempotency-Key, on the money
path of lifecycle.py with each step done once for the whole batch.

0. Replay: the key already names a finished batch of this caller (same request hash): its first answer, rebuilt from
   the batch row and its items' transactions; a different request under the key is 422, one still running 409.
1. Resolve: one statement reads every item's source wallet (the caller's own) and recipient; an item the parties
   refuse (not found, same wallet, currency mismatch, an amount the currency cannot hold) fails on its own, or, in an
   atomic batch, fails the batch before anything is recorded (400 BATCH_FAILED, per-item errors). Step-up: each
   currency's total of the batch counts against STEP_UP_AMOUNT, as one transfer of that total would.
2. Record: one statement inserts the batch row (its key, hash, mode, the items' references, transaction ids and
   refusals) and every item's PENDING transaction, or, when the key's batch was abandoned (its claim older than
   PENDING_TIMEOUT: the attempt died), claims it for this attempt, which then finishes the items still PENDING.
3. Execute: one ledger_execute_many() statement (batch.execute_many()) locks every wallet of the batch in id order
   (so two batches, or a batch and single transfers, cannot deadlock), then its daily-usage rows in key order, decides
   the items in order with ledger_execute()'s checks and writes them all, with their events, in one durable commit.
   Independent: a refused item is left out; atomic: the first refusal ends it with nothing written.
4. Finish: one statement marks the refused items FAILED (with their events) and the batch COMPLETED or FAILED, in a
   durable commit before the answer.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select, text

from models import TransferBatch
from wallet import errors
from wallet.ledger import batch, history
from wallet.ledger.execute import refusal_error, step_values
from wallet.ledger.history import load_transactions, render_transaction
from wallet.ledger.lifecycle import LOST, known_row, release
from wallet.ledger.record import (
    Operation,
    Party,
    Request,
    abandoned_after,
    metadata_json,
    new_reference,
    parties,
    request_hash,
)
from wallet.money import currency_exponent, to_minor
from wallet.notify import events
from wallet.platform import metrics
from wallet.platform.prepared import Prepared
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

B = TransferBatch.__table__

MAX_ITEMS = 1000
MODES = ("atomic", "independent")


@dataclass(frozen=True)
class Item:
    """One transfer of a batch, as the client sent it."""

    reference: str
    from_wallet_id: uuid.UUID
    recipient: Mapping[str, Any]  # exactly one of to_wallet_id / to_wallet_number / to_username / to_phone / to_email
    amount: Decimal
    description: str | None = None
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True)
class BatchOutcome:
    body: dict[str, Any]  # {"id", "mode", "items": [{"reference", "status", "transaction", "error"}]}
    replayed: bool


def _hashed(mode: str, items: list[Item]) -> str:
    """The whole request's hash: a key reused with any other mode, item or order is a mismatch."""
    return request_hash(
        {
            "op": "TRANSFER_BATCH",
            "mode": mode,
            "items": [
                {
                    "reference": i.reference,
                    "wallet": i.from_wallet_id,
                    "recipient": dict(i.recipient),
                    "amount": format(i.amount.normalize(), "f"),
                    "description": i.description,
                    "metadata": dict(i.metadata) if i.metadata is not None else None,
                }
                for i in items
            ],
        }
    )


def _error(error: errors.WalletError, transaction_id: uuid.UUID | None = None) -> dict[str, Any]:
    """An item's error in the contract's error shape."""
    body: dict[str, Any] = {"error": error.message, "code": error.code}
    if error.details:
        body["details"] = error.details
    if transaction_id is not None:
        body["transaction_id"] = str(transaction_id)
    return body


def _item(reference: str, row: Mapping[str, Any] | None, error: Any, viewer: uuid.UUID) -> dict[str, Any]:
    """An item of the answer: its transaction as recorded (FAILED ones carry their error), or the refusal of an item
    nothing was recorded for."""
    if row is None:
        return {"reference": reference, "status": "FAILED", "transaction": None, "error": error}
    failed = row["status"] == "FAILED"
    rendered_error = None
    if failed:
        rendered_error = {"error": row["failure_reason"], "code": row["failure_code"], "transaction_id": str(row["id"])}
    return {
        "reference": reference,
        "status": row["status"],
        "transaction": render_transaction(row, viewer),
        "error": rendered_error,
    }


def _answer(
    batch_id: uuid.UUID | None,
    mode: str,
    references: list[str],
    rows: list[Mapping[str, Any] | None],
    item_errors: list[Any],
    viewer: uuid.UUID,
) -> dict[str, Any]:
    items = [_item(ref, row, err, viewer) for ref, row, err in zip(references, rows, item_errors, strict=True)]
    return {"id": batch_id, "mode": mode, "items": items}


def _refuse(body: dict[str, Any], replayed: bool = False) -> errors.BatchFailed:
    failed = sum(i["error"] is not None and i["error"]["code"] != errors.BatchAborted.code for i in body["items"])
    error = errors.BatchFailed(
        f"The atomic batch was refused: {failed} of {len(body['items'])} items failed; nothing moved.",
        details=body,
    )
    error.replayed = replayed  # type: ignore[attr-defined]
    return error


# ---- 0. replay --------------------------------------------------------------------------------------------------


async def _replay(rt: Runtime, principal: Principal, found: Any) -> BatchOutcome:
    """The first answer of a finished batch, rebuilt from what it recorded."""
    if found.status == "PENDING":
        raise errors.IdempotencyInProgress()
    async with rt.autocommit() as conn:
        loaded = await load_transactions(conn, [i for i in found.transaction_ids if i is not None])
    rows = [loaded[i] if i is not None else None for i in found.transaction_ids]
    body = _answer(found.id, found.mode, found.item_references, rows, found.item_errors, principal.user_id)
    if found.status == "FAILED":
        raise _refuse(body, replayed=True)
    return BatchOutcome(body, True)


async def _existing(rt: Runtime, principal: Principal, key: str) -> Any:
    async with rt.autocommit() as conn:
        return (
            await conn.execute(select(B).where(B.c.initiator_id == principal.user_id, B.c.idempotency_key == key))
        ).first()


# ---- 1. resolve -------------------------------------------------------------------------------------------------

# Every item's source (the caller's own wallet) and recipient, as record.py's resolving statement finds one
# transfer's; the answer carries the same columns, one row per item in the request's order.
_RESOLVE = Prepared(
    text("""
SELECT r.n, n.id, n.user_id, n.username, n.number, n.currency,
    rc.id AS to_id, rc.user_id AS to_user_id, rc.username AS to_username, rc.number AS to_number,
    rc.currency AS to_currency, ru.id IS NOT NULL AS recipient_user_found
FROM unnest(CAST(:wallet AS uuid[]), CAST(:to_wallet AS uuid[]), CAST(:to_number AS text[]),
    CAST(:to_username AS text[]), CAST(:to_phone AS text[]), CAST(:to_email AS text[])) WITH ORDINALITY
    AS r (wallet, to_wallet, to_number, to_username, to_phone, to_email, n)
LEFT JOIN LATERAL (
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.id = r.wallet AND w.user_id = CAST(:owner AS uuid)
) n ON true
LEFT JOIN LATERAL (
    SELECT id FROM users WHERE lower(username) = lower(r.to_username)
    UNION ALL
    SELECT id FROM users WHERE phone = r.to_phone
    UNION ALL
    SELECT id FROM users WHERE email_key = r.to_email
    LIMIT 1
) ru ON true
LEFT JOIN LATERAL (
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.id = r.to_wallet
    UNION ALL
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.number = r.to_number
    UNION ALL
    (SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
     WHERE w.user_id = ru.id AND w.currency = n.currency ORDER BY w.created_at, w.id LIMIT 1)
    LIMIT 1
) rc ON true
ORDER BY r.n
""")
)


@dataclass(frozen=True)
class _Resolved:
    """An item whose parties were found, and its operation (amount in minor units of the source's currency)."""

    op: Operation
    params: Mapping[str, Any]


def _params(item: Item, minor: int) -> dict[str, Any]:
    """An item's hashed parameters, as a single transfer's."""
    request = {
        "op": "TRANSFER",
        "wallet": item.from_wallet_id,
        "recipient": dict(item.recipient),
        "amount": minor,
        "description": item.description,
    }
    return request if item.metadata is None else {**request, "metadata": dict(item.metadata)}


async def _resolve(rt: Runtime, principal: Principal, items: list[Item]) -> list[_Resolved | errors.WalletError]:
    def column(name: str) -> list[Any]:
        return [i.recipient.get(name) for i in items]

    values = {
        "wallet": [i.from_wallet_id for i in items],
        "to_wallet": column("to_wallet_id"),
        "to_number": column("to_wallet_number"),
        "to_username": column("to_username"),
        "to_phone": column("to_phone"),
        "to_email": column("to_email"),  # the address's email_key (handlers' RecipientEmail)
        "owner": principal.user_id,
    }
    async with rt.autocommit() as conn:
        rows = await _RESOLVE.all(conn, values)
    resolved: list[_Resolved | errors.WalletError] = []
    for item, row in zip(items, rows, strict=True):
        request = Request("TRANSFER", item.from_wallet_id, principal.user_id, item.amount, None, dict, item.recipient)
        try:
            source, destination = parties(row, request)
            minor = to_minor(item.amount, source.currency)
        except errors.WalletError as error:
            resolved.append(error)
            continue
        params = _params(item, minor)
        op = Operation(
            "TRANSFER", minor, source.currency, source, destination, item.description, params, metadata=item.metadata
        )
        resolved.append(_Resolved(op, params))
    return resolved


def _step_up(rt: Runtime, principal: Principal, ops: list[Operation]) -> None:
    """A batch moving more than STEP_UP_AMOUNT in a currency (its items' total) needs a recent authentication, as
    one transfer of that total would."""
    totals: dict[str, int] = defaultdict(int)
    for op in ops:
        totals[op.currency] += op.amount
    s = rt.settings
    for currency, total in totals.items():
        major = Decimal(total).scaleb(-(currency_exponent(currency) or 0))
        principal.require_recent_authentication_above(major, s.step_up_amount, s.step_up_window)


# ---- 2. record --------------------------------------------------------------------------------------------------

# The batch row and its items' PENDING transactions in one statement, a commit that does not wait for the disk (as a
# single transfer's record: nothing is answered from PENDING rows alone, and the commit that finishes them waits for
# it). A key already recorded by this caller inserts nothing, unless its batch is PENDING, its claim expired and it is
# the same request: then this attempt claims it (`fresh` false) and finishes the items its first attempt recorded.
_RECORD = Prepared(
    text("""
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)), batch AS (
    INSERT INTO transfer_batches AS b (id, initiator_id, api_key_id, idempotency_key, request_hash, mode,
        item_references, transaction_ids, item_errors)
    SELECT CAST(:id AS uuid), CAST(:initiator_id AS uuid), CAST(:api_key_id AS uuid), :idempotency_key, :request_hash,
        :mode, CAST(:references AS text[]), CAST(:transaction_ids AS uuid[]), CAST(:item_errors AS jsonb)
    FROM relaxed
    ON CONFLICT (initiator_id, idempotency_key) DO UPDATE SET claimed_at = now()
    WHERE b.status = 'PENDING' AND b.claimed_at < now() - CAST(:abandoned AS interval)
        AND b.request_hash = excluded.request_hash
    RETURNING b.id, b.created_at, b.xmax = 0 AS fresh
), items AS (
    INSERT INTO transactions (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
        source_user_id, destination_user_id, initiator_id, api_key_id, idempotency_key, request_hash, description,
        metadata)
    SELECT i.id, i.reference, 'TRANSFER', i.amount, i.currency, i.source, i.destination, i.source_user,
        i.destination_user, CAST(:initiator_id AS uuid), CAST(:api_key_id AS uuid), i.key, i.hash, i.description,
        CAST(i.metadata AS jsonb)
    FROM unnest(CAST(:tx AS uuid[]), CAST(:tx_reference AS text[]), CAST(:amount AS bigint[]),
        CAST(:currency AS text[]), CAST(:source AS uuid[]), CAST(:destination AS uuid[]), CAST(:source_user AS uuid[]),
        CAST(:destination_user AS uuid[]), CAST(:key AS text[]), CAST(:hash AS text[]), CAST(:description AS text[]),
        CAST(:metadata AS text[]))
        AS i (id, reference, amount, currency, source, destination, source_user, destination_user, key, hash,
            description, metadata)
    WHERE EXISTS (SELECT FROM batch WHERE fresh)
)
SELECT b.id, b.created_at, b.fresh FROM batch b
""")
)


def _item_key(batch_id: uuid.UUID, n: int) -> str:
    """An item's idempotency key: keyed like the batch (recovery leaves it for the batch's retry for as long as a key
    is kept), and out of the clients' reach (a key sent in a header is printable ASCII, this has a unit separator)."""
    return f"batch\x1f{batch_id}\x1f{n}"


@dataclass
class _Recorded:
    batch_id: uuid.UUID
    fresh: bool
    rows: list[dict[str, Any] | None]  # per item, its PENDING row as known_row() builds it (fresh only)


async def _record(
    rt: Runtime,
    principal: Principal,
    key: str,
    digest: str,
    mode: str,
    items: list[Item],
    resolved: list[_Resolved | errors.WalletError],
    item_errors: list[Any],
) -> _Recorded | None:
    """Step 2: the batch and its items recorded (or an abandoned one claimed); None when the key's batch is another
    attempt's (finished or running)."""
    batch_id = uuid.uuid4()
    planned: list[tuple[int, _Resolved, uuid.UUID, str]] = []
    for n, found in enumerate(resolved):
        if isinstance(found, _Resolved):
            planned.append((n, found, *new_reference()))
    ids: list[uuid.UUID | None] = [None] * len(items)
    for n, _, tx_id, _ in planned:
        ids[n] = tx_id

    def each(get: Any) -> list[Any]:
        return [get(n, found.op, tx_id, reference) for n, found, tx_id, reference in planned]

    values = {
        "id": batch_id,
        "initiator_id": principal.user_id,
        "api_key_id": principal.api_key_id,
        "idempotency_key": key,
        "request_hash": digest,
        "mode": mode,
        "references": [i.reference for i in items],
        "transaction_ids": ids,
        "item_errors": orjson.dumps(item_errors).decode(),
        "abandoned": abandoned_after(rt),
        "tx": each(lambda n, op, tx_id, ref: tx_id),
        "tx_reference": each(lambda n, op, tx_id, ref: ref),
        "amount": each(lambda n, op, tx_id, ref: op.amount),
        "currency": each(lambda n, op, tx_id, ref: op.currency),
        "source": each(lambda n, op, tx_id, ref: op.source.wallet_id),
        "destination": each(lambda n, op, tx_id, ref: op.destination.wallet_id),
        "source_user": each(lambda n, op, tx_id, ref: op.source.user_id),
        "destination_user": each(lambda n, op, tx_id, ref: op.destination.user_id),
        "key": each(lambda n, op, tx_id, ref: _item_key(batch_id, n)),
        "hash": [request_hash(found.params) for _, found, _, _ in planned],
        "description": each(lambda n, op, tx_id, ref: op.description),
        "metadata": each(lambda n, op, tx_id, ref: metadata_json(op.metadata)),
    }
    async with rt.autocommit() as conn:
        row = await _RECORD.first(conn, values)
    if row is None:
        return None
    if not row.fresh:
        return _Recorded(row.id, False, [])
    rows: list[dict[str, Any] | None] = [None] * len(items)
    for n, found, tx_id, reference in planned:
        rows[n] = known_row(principal, found.op, tx_id, reference, row.created_at)
    return _Recorded(row.id, True, rows)


# ---- 3. execute, 4. finish --------------------------------------------------------------------------------------

_FAILED_EVENTS = events.cte(
    "(SELECT data FROM stamped)", users="(SELECT users FROM stamped)", types="(SELECT types FROM stamped)"
)
# The refused items FAILED, each with its transaction.failed event stamped with its completed_at, and the batch
# decided; one statement, a commit that waits for the disk (the refusals are about to be answered).
_FINISH = Prepared(
    text(f"""
WITH failed AS MATERIALIZED (
    UPDATE transactions t SET status = 'FAILED', failure_code = f.code, failure_reason = f.reason, completed_at = now()
    FROM unnest(CAST(:failed AS uuid[]), CAST(:codes AS text[]), CAST(:reasons AS text[]),
        CAST(:failed_events AS text[])) WITH ORDINALITY AS f (id, code, reason, data, n)
    WHERE t.id = f.id AND t.status = 'PENDING'
    RETURNING t.id, t.completed_at, f.data, f.n
), stamped AS MATERIALIZED (
    SELECT array_agg((ledger_stamp(ARRAY[data], completed_at))[1] ORDER BY n) AS data,
        array_agg(CAST(:initiator_id AS uuid) ORDER BY n) AS users,
        array_agg(CAST('transaction.failed' AS text) ORDER BY n) AS types
    FROM failed
), {_FAILED_EVENTS}, decided AS (
    UPDATE transfer_batches SET status = :status, completed_at = now()
    WHERE id = CAST(:batch AS uuid) AND status = 'PENDING'
)
SELECT id, completed_at FROM failed
""")
)


def _operation(row: Mapping[str, Any]) -> Operation:
    """The operation of an item recorded by an earlier attempt, from its row."""
    source = Party(
        row["source_wallet_id"], row["source_user_id"], row["source_username"], row["source_number"], row["currency"]
    )
    destination = Party(
        row["destination_wallet_id"],
        row["destination_user_id"],
        row["destination_username"],
        row["destination_number"],
        row["currency"],
    )
    return Operation(
        "TRANSFER",
        row["amount"],
        row["currency"],
        source,
        destination,
        row["description"],
        {},
        metadata=row["metadata"],
    )


def _refusal(refused: batch.Refused, op: Operation, limit: int) -> errors.WalletError | None:
    """The API's error for an item ledger_execute() refused; None when it was no longer PENDING (finished by another
    attempt)."""
    try:
        error = refusal_error(refused, op, limit)
    except errors.WalletError as raised:  # a status refusal raises its error
        return raised
    return error if isinstance(error, errors.WalletError) else None


async def _execute(
    rt: Runtime, principal: Principal, mode: str, batch_id: uuid.UUID, rows: list[dict[str, Any] | None]
) -> tuple[list[Mapping[str, Any] | None], bool]:
    """Steps 3 and 4 for the items whose rows are PENDING; returns every item's row as it ends, and whether the batch
    completed (an atomic batch with a refusal did not)."""
    pending = [n for n, row in enumerate(rows) if row is not None and row["status"] == "PENDING"]
    ops = {n: _operation(rows[n]) for n in pending}  # type: ignore[arg-type]
    values = [await step_values(rt, ops[n], rows[n], principal.user_id) for n in pending]  # type: ignore[arg-type]
    outcomes = await batch.execute_many(rt, values, atomic=mode == "atomic") if values else []
    ended: list[Any] = list(rows)
    failures: dict[int, errors.WalletError] = {}
    lost: list[int] = []
    for n, v, outcome in zip(pending, values, outcomes, strict=True):
        if isinstance(outcome, batch.Refused):
            error = _refusal(outcome, ops[n], v["limit"])
            if error is None:
                lost.append(n)
            else:
                failures[n] = error
        elif outcome is not None:
            ended[n] = {**rows[n], "status": "COMPLETED", "completed_at": outcome.done_at}  # type: ignore[dict-item]
            metrics.money("TRANSFER", "COMPLETED")
        else:  # an atomic batch's item that did not take place: another was refused
            failures[n] = errors.BatchAborted()
    completed = mode != "atomic" or not failures
    ordered = sorted(failures)
    failed_rows = {
        n: {
            **rows[n],
            "status": "FAILED",
            "failure_code": failures[n].code,
            "failure_reason": failures[n].message[:255],
        }
        for n in ordered
    }
    async with rt.autocommit() as conn:
        done = await _FINISH.all(
            conn,
            {
                "failed": [failed_rows[n]["id"] for n in ordered],
                "codes": [failed_rows[n]["failure_code"] for n in ordered],
                "reasons": [failed_rows[n]["failure_reason"] for n in ordered],
                "failed_events": [
                    events.params(
                        history.transaction_events({**failed_rows[n], "completed_at": None}, principal.user_id)
                    )["event_data"][0]
                    for n in ordered
                ],
                "initiator_id": principal.user_id,
                "mailed_types": list(events.MAILED),
                "status": "COMPLETED" if completed else "FAILED",
                "batch": batch_id,
            },
        )
        marked = {r.id: r.completed_at for r in done}
        if lost or len(marked) < len(ordered):  # decided by another attempt meanwhile: as it recorded them
            again = [rows[n]["id"] for n in [*lost, *ordered] if rows[n]["id"] not in marked]  # type: ignore[index]
            reread = await load_transactions(conn, again)
            if len(reread) < len(again):  # the batch's record did not survive a crash or a failover: nothing happened
                raise errors.ServiceUnavailable(LOST)
            for n in [*lost, *ordered]:
                if rows[n]["id"] in reread:  # type: ignore[index]
                    ended[n] = reread[rows[n]["id"]]  # type: ignore[index]
    for n in ordered:
        if failed_rows[n]["id"] in marked:
            ended[n] = {**failed_rows[n], "completed_at": marked[failed_rows[n]["id"]]}
            metrics.money("TRANSFER", failures[n].code)
    return ended, completed


# ---- the operation ------------------------------------------------------------------------------------------------


async def transfer_batch(rt: Runtime, principal: Principal, mode: str, items: list[Item], key: str) -> BatchOutcome:
    """Execute a batch of transfers from the caller's wallets, idempotent per (caller, key). An atomic batch with a
    refused item raises BatchFailed (400) with each item's outcome; an independent one answers each item's."""
    digest = _hashed(mode, items)
    references = [i.reference for i in items]
    async with rt.session():
        found = await _existing(rt, principal, key)
        if found is not None and found.request_hash != digest:
            raise errors.IdempotencyMismatch()
        if found is not None and found.status != "PENDING":
            return await _replay(rt, principal, found)
        resolved = await _resolve(rt, principal, items)
        item_errors = [_error(f) if isinstance(f, errors.WalletError) else None for f in resolved]
        if mode == "atomic" and any(item_errors):
            aborted = _error(errors.BatchAborted())
            item_errors = [e or aborted for e in item_errors]
            raise _refuse(_answer(None, mode, references, [None] * len(items), item_errors, principal.user_id))
        _step_up(rt, principal, [f.op for f in resolved if isinstance(f, _Resolved)])
        recorded = await _record(rt, principal, key, digest, mode, items, resolved, item_errors)
        if recorded is None:  # the key's batch is another attempt's: finished, or still running (409)
            found = await _existing(rt, principal, key)
            if found.request_hash != digest:
                raise errors.IdempotencyMismatch()
            return await _replay(rt, principal, found)
        rows: list[Any] = recorded.rows
        if not recorded.fresh:  # an abandoned attempt's batch: finish the items it recorded
            found = await _existing(rt, principal, key)
            item_errors = found.item_errors
            async with rt.autocommit() as conn:
                loaded = await load_transactions(conn, [i for i in found.transaction_ids if i is not None])
            rows = [dict(loaded[i]) if i is not None else None for i in found.transaction_ids]
        try:
            ended, completed = await _execute(rt, principal, mode, recorded.batch_id, rows)
        except errors.ServiceUnavailable:
            await release(rt, B, recorded.batch_id)
            raise
    body = _answer(recorded.batch_id, mode, references, ended, item_errors, principal.user_id)
    if not completed:
        raise _refuse(body)
    return BatchOutcome(body, False)
