"""The wallet domain, by capability; no module here knows HTTP (it imports neither tornado nor handlers/).

Each package may import only the packages below it (import-linter, `make lint`; the map is docs/architecture.md):

    operations   what is built on the ledger: holds, reversals, FX, Paystack deposits, statements, admin
    identity     who may call: accounts, passwords, logins and tokens, revocations, API keys, Google sign-in
    ledger       the money path and the books: record, execute, group commit, lifecycle, history, wallets, audit
    notify       the event outbox, and its deliveries: e-mail, webhooks (the live stream reads it too)
    providers    small clients of third parties: Paystack, Google's OpenID Connect
    platform     the database and its prepared statements, the shared store, the runtime, locks, paging, metrics,
                 logs, health, backups, the embedded PostgreSQL
    money.py, errors.py, principal.py
                 the shared kernel: amounts and currencies, the domain errors, who is calling
"""
