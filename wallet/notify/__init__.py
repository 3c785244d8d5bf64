"""Telling the outside world about events: webhooks to clients and e-mail, both sent by wallet/notify/dispatch.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attempt:
    """How one try at a delivery went."""

    status_code: int | None = None  # the HTTP status, or the SMTP reply code
    error: str | None = None  # None: delivered
    permanent: bool = False  # retrying cannot help (the mail server refused it for good)
