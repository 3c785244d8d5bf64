"""The wallet domain: money, ledger, transaction lifecycle, auth rules, limits, idempotency, errors."""
