"""Who is calling: the one type every layer that acts for someone receives (handlers build it, services read it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from models.keys import SCOPES
from wallet.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through a login session (every scope) or through one of their API keys."""

    user_id: uuid.UUID
    session_id: uuid.UUID | None
    role: str
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] = frozenset(SCOPES)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.api_key_id is None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This API key lacks the '{scope}' scope.")
