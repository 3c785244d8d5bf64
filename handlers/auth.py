"""Auth endpoints: register, login, refresh, logout."""

from __future__ import annotations

from handlers.base import BaseHandler, authenticated
from handlers.schemas import LoginSchema, RefreshSchema, RegisteredSchema, RegisterSchema, TokenPairSchema
from wallet import accounts, auth


class RegisterHandler(BaseHandler):
    async def post(self) -> None:
        data = self.load(RegisterSchema())
        self.respond(await accounts.register(self.rt, **data), 201, RegisteredSchema())


class LoginHandler(BaseHandler):
    async def post(self) -> None:
        data = self.load(LoginSchema())
        field = next(f for f in ("username", "email", "phone") if f in data)
        tokens = await auth.login(
            self.rt,
            field=field,
            identifier=data[field],
            password=data["password"],
            client_ip=self.request.remote_ip or "",
        )
        self.respond(tokens, 200, TokenPairSchema())


class RefreshHandler(BaseHandler):
    async def post(self) -> None:
        data = self.load(RefreshSchema())
        self.respond(await auth.refresh(self.rt, data["refresh_token"]), 200, TokenPairSchema())


class LogoutHandler(BaseHandler):
    @authenticated
    async def post(self) -> None:
        await auth.logout(self.rt, self.principal)
        self.respond(None, 204)


routes = [
    (r"/api/v1/auth/register", RegisterHandler),
    (r"/api/v1/auth/login", LoginHandler),
    (r"/api/v1/auth/refresh", RefreshHandler),
    (r"/api/v1/auth/logout", LogoutHandler),
]
