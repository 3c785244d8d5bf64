"""The caller's own account: read, change, deactivate."""

from __future__ import annotations

from handlers.base import BaseHandler, authenticated
from handlers.schemas import UserSchema, UserUpdateSchema
from wallet import accounts


class MeHandler(BaseHandler):
    @authenticated
    async def get(self) -> None:
        self.respond(await accounts.get_me(self.rt, self.principal), 200, UserSchema())

    @authenticated
    async def patch(self) -> None:
        changes = self.load(UserUpdateSchema())
        self.respond(await accounts.update_me(self.rt, self.principal, changes), 200, UserSchema())

    @authenticated
    async def delete(self) -> None:
        await accounts.deactivate_me(self.rt, self.principal)
        self.respond(None, 204)


routes = [(r"/api/v1/users/me", MeHandler)]
