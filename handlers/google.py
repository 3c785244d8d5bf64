"""Google sign-in: the redirect to the provider, the callback that signs in, and linking Google to an account."""

from __future__ import annotations

from handlers.base import BaseHandler, api, authenticated
from handlers.schemas import AuthorizationUrlSchema, GoogleCallbackQuery, GoogleCodeSchema, TokenPairSchema, UserSchema
from wallet.identity import google


class GoogleStartHandler(BaseHandler):
    @api({302: None}, errors=(503,))
    async def get(self) -> None:
        """Sign in with Google: a redirect to the provider with state, nonce and PKCE (S256)."""
        self.set_header("Location", await google.start(self.rt, None))
        self.respond(None, 302)


class GoogleCallbackHandler(BaseHandler):
    @api({200: TokenPairSchema}, query=GoogleCallbackQuery, errors=(401, 403, 409, 503))
    async def get(self) -> None:
        """Where the provider sends the browser back: the token pair of the Google account's user.

        The first sign-in creates the account (no password, a default wallet). An existing account with the
        same e-mail is 409: log in with its password and link Google from the account.
        """
        query = self.query()
        self.respond(await google.sign_in(self.rt, query["code"], query["state"]), 200)


class GoogleLinkStartHandler(BaseHandler):
    @api({200: AuthorizationUrlSchema}, errors=(503,))
    @authenticated
    async def post(self) -> None:
        """Start linking Google to this account: the provider URL of a flow bound to the caller."""
        self.respond({"authorization_url": await google.start(self.rt, self.principal)}, 200)


class GoogleLinkHandler(BaseHandler):
    @api({200: UserSchema}, body=GoogleCodeSchema, errors=(409, 503))
    @authenticated
    async def post(self) -> None:
        """Finish linking: the code and state the provider sent back for a flow this user started."""
        data = self.load()
        self.respond(await google.link(self.rt, self.principal, data["code"], data["state"]), 200)


routes = [
    (r"/api/v1/auth/google", GoogleStartHandler),
    (r"/api/v1/auth/google/callback", GoogleCallbackHandler),
    (r"/api/v1/users/me/google/start", GoogleLinkStartHandler),
    (r"/api/v1/users/me/google", GoogleLinkHandler),
]
