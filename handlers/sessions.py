"""The caller's sessions (logins): list them, sign one out, sign out everywhere else."""

from __future__ import annotations

from marshmallow import fields

from handlers.base import BaseHandler, api, authenticated, parse_uuid
from handlers.field_types import UtcDateTime
from handlers.schemas import Output, PageQuery
from wallet.identity import sessions

TAG = "Users"  # the OpenAPI tag of this module's operations

# ---- responses --------------------------------------------------------------------------------------------------


class SessionSchema(Output):
    id = fields.UUID()
    created_at = UtcDateTime(metadata={"description": "When it signed in."})
    last_used_at = UtcDateTime(
        metadata={
            "description": "When it last signed in, renewed its access token or stepped up: an active client renews "
            "every ACCESS_TOKEN_TTL, so this is that coarse (requests themselves write nothing)."
        }
    )
    user_agent = fields.String(allow_none=True, metadata={"description": "The User-Agent it signed in with."})
    ip = fields.String(allow_none=True, metadata={"description": "The address it signed in from."})
    current = fields.Boolean(metadata={"description": "Whether this is the session asking."})


class SessionListSchema(Output):
    items = fields.List(fields.Nested(SessionSchema))
    next_cursor = fields.String(allow_none=True)


class SessionListHandler(BaseHandler):
    @api("listSessions", {200: SessionListSchema}, query=PageQuery)
    @authenticated
    async def get(self) -> None:
        """The caller's sessions that can still be used (not signed out, not expired), newest first."""
        self.respond(await sessions.list_sessions(self.rt, self.principal, **self.query()), 200)


class SessionHandler(BaseHandler):
    @api("revokeSession", {204: None})
    @authenticated
    async def delete(self, session_id: str) -> None:
        """Sign one of the caller's sessions out at once (its tokens stop working everywhere)."""
        await sessions.revoke(self.rt, self.principal, parse_uuid(session_id, "session_id"))
        self.respond(None, 204)


class RevokeOthersHandler(BaseHandler):
    @api("revokeOtherSessions", {204: None})
    @authenticated
    async def post(self) -> None:
        """Sign out everywhere else: every session of the caller but this one."""
        await sessions.revoke_others(self.rt, self.principal)
        self.respond(None, 204)


routes = [
    (r"/api/v1/users/me/sessions", SessionListHandler),
    (r"/api/v1/users/me/sessions/revoke-others", RevokeOthersHandler),
    (r"/api/v1/users/me/sessions/([^/]+)", SessionHandler),
]
