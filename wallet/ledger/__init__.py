"""The money path and the books: where a transfer's money moves.

record.py (step 1: the PENDING row and its idempotency key), execute.py (steps 2 and 3: one statement that moves the
balances and marks it COMPLETED, or the FAILED mark), batch.py (the group commit of step 2), lifecycle.py (the steps
in order, replays, the recovery sweep), wallets.py, history.py (what a transaction looks like and tells whom), audit.py.

It may use notify (events are written in the money's own commit), platform and the kernel; not identity or operations.
"""
