"""Access tokens this process has already verified: the signature check and claim parsing are done once per token.

Only the decode is remembered. Expiry is checked again on every use (an entry is dropped once its token expires),
and the revocation check (wallet/auth.authenticate) stays per request, so a revoked login is refused at once.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import NamedTuple


class Verified(NamedTuple):
    expires: float  # the token's exp, seconds since the epoch
    user_id: uuid.UUID
    session_id: uuid.UUID
    role: str
    auth_time: float  # when the login last authenticated (sign-in or step-up), seconds since the epoch
    amr: tuple[str, ...]  # how


class VerifiedTokens:
    """A bounded LRU of verified access tokens."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._entries: OrderedDict[str, Verified] = OrderedDict()

    def get(self, token: str) -> Verified | None:
        """The token's claims while it is unexpired; None when unknown or expired (the caller decodes it again, and
        that refuses an expired token as any other)."""
        found = self._entries.get(token)
        if found is None:
            return None
        if found.expires <= time.time():
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return found

    def add(self, token: str, verified: Verified) -> None:
        self._entries[token] = verified
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
