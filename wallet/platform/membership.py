"""The cluster's live server processes: each keeps its row in `instances` alive, and one whose JWT key differs from
the live ones' is refused at start (docs/operations.md#several-hosts)."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import uuid
from typing import Any

import psycopg2
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from models import Instance
from settings import StartupError
from wallet.platform import release
from wallet.platform.db import libpq_url
from wallet.platform.runtime import Runtime

# Seconds between a process's heartbeats, and after which a row without one is a dead process's.
HEARTBEAT = 5
EXPIRES = 20


def key_fingerprint(secret: str) -> str:
    """What tells two secrets (JWT keys, Paystack keys) apart without revealing either: an HMAC of a fixed label under
    the secret."""
    return hmac.new(secret.encode(), b"wallet instance fingerprint", hashlib.sha256).hexdigest()[:16]


def check_key(database_url: str, jwt_secret: str) -> None:
    """Start-up: refuse to join live instances that sign with another JWT key (each would reject the other's
    tokens), in one line naming JWT_SECRET."""
    conn = psycopg2.connect(libpq_url(database_url), connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM instances WHERE heartbeat_at > now() - make_interval(secs => %s) "
                "AND key_fingerprint <> %s",
                (EXPIRES, key_fingerprint(jwt_secret)),
            )
            (others,) = cursor.fetchone()
    finally:
        conn.close()
    if others:
        raise StartupError(
            f"JWT_SECRET differs from the key of the {others} live instance(s) on this database: every host must "
            "share one JWT_SECRET (see GET /api/v1/admin/instances)"
        )


class Membership:
    """This process's row: written at each heartbeat (with the jobs it leads), deleted when it stops."""

    def __init__(self, rt: Runtime, schema_revision: str) -> None:
        self.rt = rt
        self.id = uuid.uuid4()
        self.row = {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": release.version(),
            "revision": release.revision(),
            "schema_revision": schema_revision,
            "key_fingerprint": key_fingerprint(rt.settings.jwt_secret),
        }

    async def heartbeat(self, jobs: list[str]) -> None:
        """Alive, leading `jobs`; the rows of processes that stopped beating go (a process that was only slow, its
        row deleted meanwhile, writes it again)."""
        async with self.rt.autocommit() as conn:
            await conn.execute(
                insert(Instance)
                .values(**self.row, jobs=jobs)
                .on_conflict_do_update(index_elements=[Instance.id], set_={"jobs": jobs, "heartbeat_at": func.now()})
            )
            await conn.execute(delete(Instance).where(Instance.heartbeat_at < _expired()))

    async def leave(self) -> None:
        async with self.rt.autocommit() as conn:
            await conn.execute(delete(Instance).where(Instance.id == self.id))


def _expired() -> Any:
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, EXPIRES)


async def live_instances(rt: Runtime) -> dict[str, Any]:
    """The processes whose heartbeat is recent, oldest first."""
    async with rt.autocommit() as conn:
        rows = await conn.execute(
            select(Instance.__table__)
            .where(Instance.heartbeat_at >= _expired())
            .order_by(Instance.started_at, Instance.id)
        )
        return {"items": [dict(row._mapping) for row in rows]}
