"""The ledger audit: recompute every user wallet's and FX account's balance, and each entry's running balance, from
its entries, check every transaction sums to zero per currency with the entries its status allows, check the holds'
reservations against the wallets and their captures, what each transaction says was reversed against its reversals,
and every cross-currency transfer against its quote, the pending list against the PENDING transactions, and each paid
payment request against its transfer, and each payout against its hold and its transactions.
`server.py audit` prints it; GET /admin/audit answers it; the test suite runs it after every test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, text

from models import Transaction, Wallet
from wallet.money import format_minor
from wallet.platform.runtime import Runtime

T = Transaction.__table__

# User wallets and the FX accounts keep a balance (an FX account's may be negative: the house's position); the
# outside world's system accounts keep none.
_AUDIT_WALLETS = text("""
    SELECT w.id, w.currency, w.balance, COALESCE(e.total, 0) AS entries_total
    FROM wallets w
    LEFT JOIN (SELECT wallet_id, SUM(amount) AS total FROM entries GROUP BY wallet_id) e ON e.wallet_id = w.id
    WHERE (NOT w.is_system OR w.is_fx) AND (w.balance <> COALESCE(e.total, 0) OR (w.balance < 0 AND NOT w.is_fx))
""")
# The running balance each entry carries (balances as of a moment read it, wallet/ledger/wallets.py) is the sum of its
# wallet's entries up to it, in the order the wallet's row lock let them in (their ids); the outside world's system
# accounts carry none.
_AUDIT_RUNNING = text("""
    SELECT wallet_id, id, balance_after, running FROM (
        SELECT e.wallet_id, e.id, e.balance_after, w.is_system AND NOT w.is_fx AS untracked,
               SUM(e.amount) OVER (PARTITION BY e.wallet_id ORDER BY e.id) AS running
        FROM entries e JOIN wallets w ON w.id = e.wallet_id
    ) r
    WHERE CASE WHEN untracked THEN balance_after IS NOT NULL ELSE balance_after IS DISTINCT FROM running END
    LIMIT 100
""")
# Entries sum to zero in each currency (a cross-currency transfer has two), and each entry is in its wallet's currency.
_AUDIT_TRANSACTIONS = text("""
    SELECT t.id, t.status, COALESCE(SUM(e.n), 0) AS entries, COALESCE(SUM(ABS(e.total)), 0) AS total
    FROM transactions t
    LEFT JOIN (SELECT e.transaction_id, e.currency, COUNT(*) AS n, SUM(e.amount) AS total,
                      bool_and(e.currency = w.currency) AS in_wallet_currency
               FROM entries e JOIN wallets w ON w.id = e.wallet_id GROUP BY e.transaction_id, e.currency) e
        ON e.transaction_id = t.id
    GROUP BY t.id, t.status
    HAVING COALESCE(SUM(ABS(e.total)), 0) <> 0
        OR NOT COALESCE(bool_and(e.in_wallet_currency), true)
        OR (t.status = 'COMPLETED' AND COALESCE(SUM(e.n), 0) < 2)
        OR (t.status <> 'COMPLETED' AND COUNT(e.transaction_id) > 0)
""")
# Cross-currency transfers (wallet/operations/fx.py): a COMPLETED one moved exactly its quote's amounts, payer to the
# source FX account and the destination FX account to the payee, and its quote is marked used.
_AUDIT_FX = text("""
    SELECT t.id FROM transactions t JOIN fx_quotes q ON q.id = t.fx_quote_id
    WHERE t.status <> 'COMPLETED' OR q.used_at IS NULL
        OR t.amount <> q.source_amount OR t.currency <> q.source_currency
        OR t.destination_amount <> q.destination_amount OR t.destination_currency <> q.destination_currency
        OR t.fx_rate <> q.rate OR t.source_wallet_id <> q.from_wallet_id OR t.destination_wallet_id <> q.to_wallet_id
        OR (SELECT array_agg(e.wallet_id::text || ':' || e.amount ORDER BY e.wallet_id::text || ':' || e.amount)
            FROM entries e WHERE e.transaction_id = t.id)
        <> (SELECT array_agg(l ORDER BY l) FROM unnest(ARRAY[
                q.from_wallet_id::text || ':' || -q.source_amount,
                (SELECT id::text FROM wallets WHERE is_fx AND currency = q.source_currency) || ':' || q.source_amount,
                (SELECT id::text FROM wallets WHERE is_fx AND currency = q.destination_currency)
                    || ':' || -q.destination_amount,
                q.to_wallet_id::text || ':' || q.destination_amount]) AS l)
    UNION ALL
    SELECT q.id FROM fx_quotes q WHERE q.used_at IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.fx_quote_id = q.id)
""")

# Holds (wallet/operations/holds.py): a wallet's held total is what its ACTIVE holds have not captured, and what a hold
# says it captured is what its COMPLETED transfers moved.
_AUDIT_HELD = text("""
    SELECT w.id, w.currency, w.held, COALESCE(h.total, 0) AS holds_total
    FROM wallets w
    LEFT JOIN (SELECT from_wallet_id, SUM(amount - captured_amount) AS total FROM holds WHERE status = 'ACTIVE'
               GROUP BY from_wallet_id) h ON h.from_wallet_id = w.id
    WHERE w.held <> COALESCE(h.total, 0)
""")
_AUDIT_CAPTURED = text("""
    SELECT h.id, h.captured_amount, COALESCE(SUM(t.amount), 0) AS transfers_total
    FROM holds h LEFT JOIN transactions t ON t.hold_id = h.id AND t.status = 'COMPLETED'
    GROUP BY h.id HAVING h.captured_amount <> COALESCE(SUM(t.amount), 0)
""")

# Reversals (wallet/operations/reversals.py): what a transaction says was reversed is what its COMPLETED reversals gave
# back, and never more than its amount.
_AUDIT_REVERSED = text("""
    SELECT t.id, t.amount, t.reversed_amount, COALESCE(r.total, 0) AS reversals_total
    FROM transactions t
    LEFT JOIN (SELECT reverses, SUM(amount) AS total FROM transactions WHERE reverses IS NOT NULL
               AND status = 'COMPLETED' GROUP BY reverses) r ON r.reverses = t.id
    WHERE t.reversed_amount <> COALESCE(r.total, 0) OR t.reversed_amount > t.amount
""")

# Payment requests (wallet/operations/payment_requests.py): a PAID request names its one transfer, COMPLETED, of its
# amount, from a wallet of its payer into its payee's wallet, which names it back; no other status names one, and no
# other transaction names a request.
_AUDIT_REQUESTS = text("""
    SELECT r.id FROM payment_requests r LEFT JOIN transactions t ON t.id = r.transaction_id
    WHERE (r.status = 'PAID') <> (t.id IS NOT NULL)
        OR (t.id IS NOT NULL AND (t.status <> 'COMPLETED' OR t.type <> 'TRANSFER' OR t.amount <> r.amount
            OR t.currency <> r.currency OR t.source_user_id <> r.payer_id
            OR t.destination_wallet_id <> r.payee_wallet_id OR t.payment_request_id IS DISTINCT FROM r.id))
    UNION
    SELECT t.payment_request_id FROM transactions t LEFT JOIN payment_requests r ON r.transaction_id = t.id
    WHERE t.payment_request_id IS NOT NULL AND r.id IS DISTINCT FROM t.payment_request_id
""")

# Payouts (wallet/operations/payouts.py): a PENDING payout's hold is ACTIVE and whole, a FAILED one's VOIDED; a sent
# one's (COMPLETED or REVERSED) is CAPTURED in full by its WITHDRAWAL, COMPLETED, of its amount from its wallet, which
# a REVERSED one's COMPLETED REVERSAL gave back in full.
_AUDIT_PAYOUTS = text("""
    SELECT p.id FROM payouts p JOIN holds h ON h.id = p.hold_id
    LEFT JOIN transactions t ON t.id = p.transaction_id LEFT JOIN transactions r ON r.id = p.reversal_id
    WHERE h.amount <> p.amount OR h.from_wallet_id <> p.wallet_id
        OR h.status <> CASE p.status WHEN 'PENDING' THEN 'ACTIVE' WHEN 'FAILED' THEN 'VOIDED' ELSE 'CAPTURED' END
        OR h.captured_amount <> CASE WHEN p.status IN ('COMPLETED', 'REVERSED') THEN p.amount ELSE 0 END
        OR (t.id IS NOT NULL AND (t.type <> 'WITHDRAWAL' OR t.status <> 'COMPLETED' OR t.amount <> p.amount
            OR t.source_wallet_id <> p.wallet_id OR t.hold_id IS DISTINCT FROM p.hold_id
            OR t.reversed_amount <> CASE p.status WHEN 'REVERSED' THEN p.amount ELSE 0 END))
        OR (r.id IS NOT NULL AND (r.type <> 'REVERSAL' OR r.status <> 'COMPLETED' OR r.amount <> p.amount
            OR r.destination_wallet_id <> p.wallet_id OR r.reverses IS DISTINCT FROM p.transaction_id))
""")

# The pending list (0016_pending_list) names exactly the PENDING transactions: the recovery sweeps find them there.
_AUDIT_PENDING = text("""
    SELECT coalesce(t.id, p.transaction_id) AS id FROM transactions t
    FULL JOIN pending_transactions p ON p.transaction_id = t.id
    WHERE (t.status = 'PENDING') IS DISTINCT FROM (p.transaction_id IS NOT NULL)
""")


async def audit(rt: Runtime) -> dict[str, Any]:
    """Recompute every user wallet's balance from its entries and check every transaction balances."""
    async with rt.transaction() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        wallets_checked = (
            await conn.execute(select(func.count()).where(~Wallet.is_system | Wallet.is_fx))
        ).scalar_one()
        transactions_checked = (await conn.execute(select(func.count()).select_from(T))).scalar_one()
        bad_wallets = (await conn.execute(_AUDIT_WALLETS)).all()
        bad_transactions = (await conn.execute(_AUDIT_TRANSACTIONS)).all()
        bad_running = (await conn.execute(_AUDIT_RUNNING)).all()
        bad_held = (await conn.execute(_AUDIT_HELD)).all()
        bad_captured = (await conn.execute(_AUDIT_CAPTURED)).all()
        bad_reversed = (await conn.execute(_AUDIT_REVERSED)).all()
        bad_fx = (await conn.execute(_AUDIT_FX)).all()
        bad_pending = (await conn.execute(_AUDIT_PENDING)).all()
        bad_requests = (await conn.execute(_AUDIT_REQUESTS)).all()
        bad_payouts = (await conn.execute(_AUDIT_PAYOUTS)).all()
    mismatches = [
        {
            "kind": "wallet_balance",
            "wallet_id": str(r.id),
            "currency": r.currency,
            "balance": format_minor(r.balance, r.currency),
            "entries_total": format_minor(int(r.entries_total), r.currency),
        }
        for r in bad_wallets
    ] + [
        {
            "kind": "transaction_entries",
            "transaction_id": str(r.id),
            "status": r.status,
            "entries": r.entries,
            "entries_total_minor": int(r.total),
        }
        for r in bad_transactions
    ]
    mismatches += [
        {
            "kind": "entry_running_balance",
            "wallet_id": str(r.wallet_id),
            "entry_id": r.id,
            "balance_after_minor": r.balance_after,
            "entries_total_minor": None if r.running is None else int(r.running),
        }
        for r in bad_running
    ]
    mismatches += [
        {"kind": "wallet_held", "wallet_id": str(r.id), "held_minor": r.held, "holds_total_minor": int(r.holds_total)}
        for r in bad_held
    ] + [
        {
            "kind": "hold_captured",
            "hold_id": str(r.id),
            "captured_minor": r.captured_amount,
            "transfers_total_minor": int(r.transfers_total),
        }
        for r in bad_captured
    ]
    mismatches += [
        {
            "kind": "transaction_reversed",
            "transaction_id": str(r.id),
            "amount_minor": r.amount,
            "reversed_minor": r.reversed_amount,
            "reversals_total_minor": int(r.reversals_total),
        }
        for r in bad_reversed
    ]
    mismatches += [{"kind": "fx_transfer", "id": str(r.id)} for r in bad_fx]
    mismatches += [{"kind": "pending_list", "transaction_id": str(r.id)} for r in bad_pending]
    mismatches += [{"kind": "payment_request", "payment_request_id": str(r.id)} for r in bad_requests]
    mismatches += [{"kind": "payout", "payout_id": str(r.id)} for r in bad_payouts]
    return {
        "ok": not mismatches,
        "wallets_checked": wallets_checked,
        "transactions_checked": transactions_checked,
        "mismatches": mismatches,
    }


def format_audit(report: Mapping[str, Any]) -> str:
    lines = [
        f"ledger audit: {'OK' if report['ok'] else 'MISMATCHES FOUND'}",
        f"  wallets checked:      {report['wallets_checked']}",
        f"  transactions checked: {report['transactions_checked']}",
    ]
    for m in report["mismatches"]:
        lines.append("  MISMATCH " + ", ".join(f"{k}={v}" for k, v in m.items()))
    return "\n".join(lines)
