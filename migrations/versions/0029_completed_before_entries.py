"""ledger_execute() and ledger_execute_many() mark the transaction COMPLETED before they write its entries

Revision ID: 0029_completed_before_entries
Revises: 0028_partial_indexes

Each entry's foreign key to its transaction is checked as the entries are written: the check takes a key-share lock
on the transaction's row, which PostgreSQL writes to the row and to the WAL, unless this transaction has already
updated the row. The COMPLETED mark came after the entries, so every transfer locked its transaction's row for the
check (a WAL record, `Heap/LOCK`, for each entry) and then updated it; with the mark first the check finds the row
already updated here and writes nothing. Both are in the same statement and the same commit, so what is decided
and written is unchanged, and a row no longer PENDING is still refused before anything else is written (WL005).

Each function is the one its migration wrote, with that one block moved (`_moved`).
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0029_completed_before_entries"
down_revision = "0028_partial_indexes"
branch_labels = None
depends_on = None


def _function(migration: str) -> str:
    """The FUNCTION an earlier migration created, as CREATE OR REPLACE."""
    path = Path(__file__).with_name(f"{migration}.py")
    spec = importlib.util.spec_from_file_location(f"migration_{migration}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _moved(function: str, first: str, before: str) -> str:
    """`function` with its block that starts with the line `first` and ends at the next `    END IF;` (both there
    once) moved to just before the line `before` (there once)."""
    assert function.count(first) == 1 and function.count(before) == 1
    start = function.index(first)
    end = function.index("    END IF;\n", start) + len("    END IF;\n")
    block = function[start:end]
    return function.replace(block, "").replace(before, block + before)


ENTRIES = "    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)\n"
# ledger_execute()'s mark: the UPDATE, then WL005 when the row was no longer PENDING.
EXECUTE = _moved(_function("0014_fast_path"), "    UPDATE transactions SET status = 'COMPLETED'", ENTRIES)
# ledger_execute_many()'s: the UPDATE, then an exception unless it marked every item that took place.
EXECUTE_MANY = _moved(_function("0025_transfer_batches"), "    UPDATE transactions t SET status = 'COMPLETED'", ENTRIES)


def upgrade() -> None:
    op.execute(EXECUTE)
    op.execute(EXECUTE_MANY)


def downgrade() -> None:
    op.execute(_function("0014_fast_path"))
    op.execute(_function("0025_transfer_batches"))
