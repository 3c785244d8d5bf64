"""Auth endpoints: register, login, refresh, logout."""

from __future__ import annotations

from handlers.base import BaseHandler, api, authenticated
from handlers.schemas import LoginSchema, RefreshSchema, RegisteredSchema, RegisterSchema, TokenPairSchema
from wallet.identity import accounts, auth


class RegisterHandler(BaseHandler):
    @api({201: RegisteredSchema}, body=RegisterSchema, errors=(409,))
    async def post(self) -> None:
        """Create an account; every new user gets a default wallet."""
        data = self.load()
        self.respond(await accounts.register(self.rt, **data), 201)


class LoginHandler(BaseHandler):
    @api({200: TokenPairSchema}, body=LoginSchema, errors=(401, 403, 429))
    async def post(self) -> None:
        """Log in with exactly one of username, email or phone, and the password."""
        data = self.load()
        field = next(f for f in ("username", "email", "phone") if f in data)
        tokens = await auth.login(
            self.rt,
            field=field,
            identifier=data[field],
            password=data["password"],
            client_ip=self.request.remote_ip or "",
        )
        self.respond(tokens, 200)


class RefreshHandler(BaseHandler):
    @api({200: TokenPairSchema}, body=RefreshSchema, errors=(401, 403))
    async def post(self) -> None:
        """Trade a refresh token for a new pair; each refresh token works once."""
        data = self.load()
        self.respond(await auth.refresh(self.rt, data["refresh_token"]), 200)


class LogoutHandler(BaseHandler):
    @api({204: None})
    @authenticated
    async def post(self) -> None:
        """End this login: its access and refresh tokens stop working at once."""
        await auth.logout(self.rt, self.principal)
        self.respond(None, 204)


routes = [
    (r"/api/v1/auth/register", RegisterHandler),
    (r"/api/v1/auth/login", LoginHandler),
    (r"/api/v1/auth/refresh", RefreshHandler),
    (r"/api/v1/auth/logout", LogoutHandler),
]
