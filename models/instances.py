"""Who may serve the database: the running server processes of the cluster, each keeping its own row alive
(wallet/platform/membership.py), and the oldest release the schema still serves (wallet/platform/db.py)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ARRAY, CheckConstraint, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class Instance(Base):
    """One server process: what it runs, with which JWT key (a fingerprint, never the key), and when it last said it
    was alive; a row whose heartbeat is older than membership.EXPIRES is a dead process's, and is deleted."""

    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_heartbeat_at", "heartbeat_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    revision: Mapped[str] = mapped_column(String(64), nullable=False)
    schema_revision: Mapped[str] = mapped_column(String(64), nullable=False)
    key_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    jobs: Mapped[list[str]] = mapped_column(ARRAY(String), nullable=False, server_default="{}")
    started_at: Mapped[dt.datetime] = timestamp_now()
    heartbeat_at: Mapped[dt.datetime] = timestamp_now()


class SchemaPolicy(Base):
    """One row: the oldest release, by its last migration, that may serve this schema. A migration that contracts
    (drops what an older release still reads) raises it; a release whose head comes before it refuses to start."""

    __tablename__ = "schema_policy"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="1")
    oldest_code: Mapped[str] = mapped_column(String(64), nullable=False)
