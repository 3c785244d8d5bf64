"""Group commit: step 2 of many money operations in one statement, one round trip and one commit.

Step 2 goes as a ledger_execute_batch() call (migrations/versions/0015_group_commit.py). While one batch is in
flight in this process, the operations that reach step 2 queue; when it finishes, the queued ones (up to MAX_BATCH)
go together as the next batch, sent by the first of them on the connection its request already holds. Each gets its
own outcome: done, or refused (that operation alone rolled back). An operation that finds nothing in flight goes at
once, a batch of one, so a quiet server adds no wait; under load the queue fills while the database works.

A batch never waits long: it waits for its wallets' row locks at most LOCK_WAIT, then defers the operations whose
wallets another transaction still holds, and those execute alone outside the queue (ledger_execute() waiting for its
locks as long as it must), as does every operation of a batch that failed as a whole (a deadlock or a timeout
committed nothing; a connection lost at the commit may have committed all of it, and then each operation finds its row
finished and is answered as the row says: lifecycle.py). So one slow wallet holds up only the operations on it. A
batch is one durable commit like a single step 2, and everything else about the money path (PENDING recorded first,
only a PENDING row completes) is unchanged.

A client's batch of transfers (bulk.py) has its own statement, execute_many(): it waits for its locks, and does each
of ledger_execute()'s steps once for all its items (migrations/versions/0025_transfer_batches.py says why).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import text

from wallet.notify import events
from wallet.platform import metrics
from wallet.platform.prepared import Prepared, Row, postgres_error
from wallet.platform.runtime import Runtime

log = logging.getLogger("wallet.ledger")

# At most this many operations in one batch: each runs in its own subtransaction, and PostgreSQL keeps up to 64 of
# them per transaction in shared memory before every snapshot gets slower.
MAX_BATCH = 32
# How long a batch waits for its wallets' row locks before it defers the operations on the ones still held: longer
# than another process's batch holds them, far shorter than a request may take.
LOCK_WAIT = "100ms"

# Step 2 of one operation: ledger_execute() (migrations/versions/0014_fast_path.py, as 0029 reorders it) locks the
# wallets in id order, checks status, funds, the balance ceiling and the daily limit (charged under its usage row's
# lock, so concurrent requests queue there and the limit holds), moves the balances, marks the row COMPLETED and
# appends the entries; the events CTEs then write the transaction's events with the completed_at it stamped into them,
# after its locks (wallet/notify/events.py). Sent outside an explicit transaction, the statement is one durable
# commit, no BEGIN/COMMIT round trips; a refusal RAISEs and rolls all of it back.
EXECUTE = text(f"""
WITH done AS MATERIALIZED (
    SELECT * FROM ledger_execute(CAST(:tx AS uuid), :type, CAST(:amount AS bigint), :currency,
        CAST(:source AS uuid), CAST(:destination AS uuid), CAST(:system AS uuid), CAST(:charged_user AS uuid),
        CAST(:limit AS bigint), CAST(:released AS bigint), CAST(:max_balance AS bigint), :source_role,
        :destination_role, CAST(:event_data AS text[]))
), {events.cte("(SELECT stamped_events FROM done)")}
SELECT done_at, source_balance, destination_balance, source_held, destination_held FROM done
""")
_EXECUTE = Prepared(EXECUTE)


def _batch_statement(function: str, last_argument: str, took: str, columns: str) -> Prepared:
    """A batch's step 2: `function` (ledger_execute_batch() or ledger_execute_many()) with ledger_execute()'s
    arguments as one array each, its events' and `last_argument`; then the events of the operations that took place
    (`took`, a condition on the function's row), in the batch's order, written after all of its locks."""
    return Prepared(
        text(f"""
WITH done AS MATERIALIZED (
    SELECT * FROM {function}(CAST(:tx AS uuid[]), CAST(:type AS text[]), CAST(:amount AS bigint[]),
        CAST(:currency AS text[]), CAST(:source AS uuid[]), CAST(:destination AS uuid[]), CAST(:system AS uuid[]),
        CAST(:charged_user AS uuid[]), CAST(:limit AS bigint[]), CAST(:max_balance AS bigint),
        CAST(:source_role AS text[]), CAST(:destination_role AS text[]), CAST(:event_counts AS int[]),
        CAST(:event_users AS uuid[]), CAST(:event_types AS text[]), CAST(:event_data AS text[]), {last_argument})
), taken AS MATERIALIZED (
    SELECT array_agg(e.user_id ORDER BY d.n, e.k) AS users, array_agg(e.type ORDER BY d.n, e.k) AS types,
        array_agg(e.data ORDER BY d.n, e.k) AS data
    FROM done d, unnest(d.event_users, d.event_types, d.stamped_events) WITH ORDINALITY AS e (user_id, type, data, k)
    WHERE {took}
), {events.cte("(SELECT data FROM taken)", users="(SELECT users FROM taken)", types="(SELECT types FROM taken)")}
SELECT {columns} FROM done ORDER BY n
""")
    )


# The group commit's.
_BATCH = _batch_statement(
    "ledger_execute_batch",
    ":lock_wait",
    "NOT d.deferred AND d.refused_state IS NULL",
    "deferred, done_at, source_balance, destination_balance, source_held, destination_held, refused_state, "
    "refused_message, refused_detail",
)
# The arguments of ledger_execute() that the batch takes as one array each.
_PER_OPERATION = (
    "tx",
    "type",
    "amount",
    "currency",
    "source",
    "destination",
    "system",
    "charged_user",
    "limit",
    "source_role",
    "destination_role",
)


class Refused(NamedTuple):
    """A refusal of ledger_execute() (SQLSTATE class WL): what it raised, for the ledger to name the API's error."""

    sqlstate: str
    message: str
    detail: str


Outcome = Row | Refused  # done: done_at, source_balance, destination_balance, source_held, destination_held


async def execute(rt: Runtime, values: dict[str, Any]) -> Outcome:
    """Step 2 of one operation (ledger_execute()'s arguments and its events' parameters), in a batch or alone."""
    return await _group.execute(rt, values)


def refusal(error: BaseException) -> Refused | None:
    """The refusal behind an error from either driver path, when ledger_execute() raised one."""
    found = postgres_error(error)
    if found is None or not found.sqlstate.startswith("WL"):
        return None
    return Refused(found.sqlstate, found.message, found.detail or "")


async def _alone(rt: Runtime, values: dict[str, Any]) -> Outcome:
    try:
        async with rt.autocommit() as conn:
            done: Outcome = await _EXECUTE.one(conn, values)
    except asyncpg.PostgresError as error:
        refused = refusal(error)
        if refused is None:
            raise
        done = refused
    metrics.ledger_statement(1)
    return done


def _batch_values(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """ledger_execute_batch()'s arguments (and its events') for these operations' ledger_execute() arguments."""
    values: dict[str, Any] = {name: [v[name] for v in batch] for name in _PER_OPERATION}
    values |= {
        "max_balance": batch[0]["max_balance"],
        "event_counts": [len(v["event_users"]) for v in batch],
        "event_users": [u for v in batch for u in v["event_users"]],
        "event_types": [t for v in batch for t in v["event_types"]],
        "event_data": [d for v in batch for d in v["event_data"]],
        "mailed_types": batch[0]["mailed_types"],
    }
    return values


async def _together(rt: Runtime, batch: list[dict[str, Any]]) -> list[Outcome | None]:
    """One ledger_execute_batch() statement: each operation's outcome, or None for one deferred to run alone."""
    async with rt.autocommit() as conn:
        rows = await _BATCH.all(conn, {**_batch_values(batch), "lock_wait": LOCK_WAIT})
    metrics.ledger_statement(sum(not r.deferred for r in rows))
    return [
        None
        if r.deferred
        else Refused(r.refused_state, r.refused_message, r.refused_detail or "")
        if r.refused_state
        else r
        for r in rows
    ]


# A client's batch of transfers (wallet/ledger/bulk.py): ledger_execute_many() (migrations/versions/
# 0025_transfer_batches.py), which waits for its wallets' locks and defers nothing.
_MANY = _batch_statement(
    "ledger_execute_many",
    "CAST(:atomic AS boolean)",
    "d.done_at IS NOT NULL",
    "done_at, source_balance, destination_balance, refused_state, refused_message, refused_detail",
)


async def execute_many(rt: Runtime, batch: list[dict[str, Any]], *, atomic: bool) -> list[Outcome | None]:
    """Step 2 of a client's batch of transfers in one statement and one durable commit: every wallet locked in id
    order (two batches cannot deadlock), the operations executed in order. Each one's outcome: done, or refused;
    atomic: at most one refusal, and then None for every other (nothing took place)."""
    async with rt.autocommit() as conn:
        rows = await _MANY.all(conn, {**_batch_values(batch), "atomic": atomic})
    outcomes: list[Outcome | None] = [
        Refused(r.refused_state, r.refused_message, r.refused_detail or "")
        if r.refused_state
        else (r if r.done_at is not None else None)
        for r in rows
    ]
    metrics.ledger_statement(sum(r.done_at is not None for r in rows))
    return outcomes


@dataclass
class _Queued:
    values: dict[str, Any]
    # ("lead", the batch to send, this one first) | ("done", its outcome) | ("alone", None)
    turn: asyncio.Future[tuple[str, Any]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _GroupCommit:
    """This process's queue of operations waiting for step 2 while a batch is in flight."""

    def __init__(self) -> None:
        self.busy = False
        self.queue: list[_Queued] = []

    async def execute(self, rt: Runtime, values: dict[str, Any]) -> Outcome:
        queued = _Queued(values)
        if not self.busy:
            self.busy = True
            return await self._lead(rt, [queued])
        self.queue.append(queued)
        try:
            role, given = await queued.turn
        except asyncio.CancelledError:
            if not queued.turn.done():
                self.queue.remove(queued)
            elif not queued.turn.cancelled() and queued.turn.result()[0] == "lead":
                self._release(queued.turn.result()[1])  # the others must not wait for a batch no one sends,
                self._hand_over()  # nor the queue behind it
            raise
        if role == "done":
            return given
        if role == "alone":
            return await _alone(rt, values)
        return await self._lead(rt, given)

    async def _lead(self, rt: Runtime, batch: list[_Queued]) -> Outcome:
        """Send the batch (this request's operation first), hand each other its outcome, and return this one's."""
        try:
            outcomes = await _together(rt, [q.values for q in batch])
        except Exception as error:  # each goes alone (one whose row the batch did commit is told so: lifecycle.py)
            log.warning("group commit of %d failed, executing each alone: %r", len(batch), error)
            metrics.ledger_batch_failed()
            outcomes = [None] * len(batch)
        except BaseException:
            self._release(batch)
            raise
        finally:
            self._hand_over()
        for queued, outcome in zip(batch[1:], outcomes[1:], strict=True):
            if not queued.turn.done():
                queued.turn.set_result(("alone", None) if outcome is None else ("done", outcome))
        return await _alone(rt, batch[0].values) if outcomes[0] is None else outcomes[0]

    def _release(self, batch: list[_Queued]) -> None:
        """The others of a batch that will not be sent execute alone."""
        for queued in batch[1:]:
            if not queued.turn.done():
                queued.turn.set_result(("alone", None))

    def _hand_over(self) -> None:
        """The batch in flight finished: the queued operations go next, sent by the first of them."""
        while self.queue:
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            live = [q for q in batch if not q.turn.done()]
            if live:
                live[0].turn.set_result(("lead", live))
                return  # still busy: the batch is on its way
        self.busy = False


_group = _GroupCommit()
