"""Who is calling: the one type every layer that acts for someone receives (handlers build it, services read it)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

from models.keys import SCOPES
from wallet.errors import Forbidden, StepUpRequired


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through a login session (every scope) or through one of their API keys.

    A login's access token also says when its user last proved who they are (`auth_time`, seconds since the epoch:
    the sign-in, or the latest step-up) and how (`amr`: "pwd", "google", "otp", "recovery", and "mfa" once a second
    factor was used); an API key proves nothing of the kind, so it has neither.
    """

    user_id: uuid.UUID
    session_id: uuid.UUID | None
    role: str
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] = frozenset(SCOPES)
    auth_time: float | None = None
    amr: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.api_key_id is None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This API key lacks the '{scope}' scope.")

    def require_recent_authentication(self, max_age: int) -> None:
        """Refuse unless this login authenticated within `max_age` seconds (an API key never has)."""
        if self.api_key_id is not None:
            raise StepUpRequired(max_age, "An API key cannot do this: use a login that has just authenticated.")
        if self.auth_time is None or time.time() - self.auth_time > max_age:
            raise StepUpRequired(max_age)

    def require_recent_authentication_above(self, amount: Decimal, threshold: Decimal, max_age: int) -> None:
        """Moving more than `threshold` (major units of the currency moved; 0 = never) needs a recent
        authentication: decided by the amount and the token alone, without a query."""
        if threshold and amount > threshold:
            self.require_recent_authentication(max_age)
