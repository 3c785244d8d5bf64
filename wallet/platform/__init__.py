"""What every capability runs on: the database (engine, migrations, the driver's prepared statements, per-user locks,
keyset paging), the shared store (Redis or its in-process stand-in), the Runtime every service function receives,
metrics, structured logs, health, the release (version and revision), backups and the embedded PostgreSQL.

It may use the kernel (wallet.money, wallet.errors, wallet.principal), settings and models; nothing above it.
"""
