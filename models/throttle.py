"""Throttling counters kept in PostgreSQL while Redis does not answer (wallet/platform/store.py)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class ThrottleCounter(Base):
    """One counting window (a login's failures by address, account, ...): Redis's key, value and expiry."""

    __tablename__ = "throttle_counters"
    # UNLOGGED: short-lived counts need no WAL; a crash empties the table, as a restart empties Redis.
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
