"""Telling the world about changes: the event outbox (events.py: written in the change's own commit, read in order by
the live stream and the events API), and its deliveries, webhooks to clients and e-mail, sent by dispatch.py.

It may use platform and the kernel; the ledger and identity write into it, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attempt:
    """How one try at a delivery went."""

    status_code: int | None = None  # the HTTP status, or the SMTP reply code
    error: str | None = None  # None: delivered
    permanent: bool = False  # retrying cannot help (the mail server refused it for good)
