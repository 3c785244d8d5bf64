"""What is built on the ledger: holds, reversals, cross-currency transfers (FX), Paystack deposits, statements (and
their PDF, with its font under fonts/), and the admin's actions.

Each runs its money through the ledger's steps (wallet/ledger/record.py, execute.py, lifecycle.py). It may use
every package below it: identity, ledger, notify, providers, platform and the kernel.
"""
