"""Google sign-in: the redirect to the provider, the callback that signs in, and linking Google to an account."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated
from handlers.field_types import (
    Text,
)
from handlers.schemas import (
    Output,
    TokenPairSchema,
    UserSchema,
)
from wallet.identity import google

TAG = "Google"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


# A PKCE-like pair (RFC 7636's verifier alphabet and lengths) binding a sign-in to the browser that started it.
BINDING_VERIFIER = r"^[A-Za-z0-9._~-]{43,128}\Z"
BINDING_CHALLENGE = r"^[A-Za-z0-9_-]{43}\Z"


class GoogleStartQuery(Schema):
    binding_challenge = Text(
        required=True,
        validate=validate.Regexp(BINDING_CHALLENGE, error="Must be the base64url SHA-256 (43 characters) of a secret."),
        metadata={
            "description": "base64url(SHA-256(binding_verifier)) of a secret the browser keeps for the callback."
        },
    )


class GoogleCallbackQuery(Schema):
    class Meta:
        unknown = EXCLUDE  # the provider adds parameters of its own (scope, authuser, prompt, ...)

    code = Text(load_default=None, validate=validate.Length(min=1, max=2048))
    state = Text(required=True, validate=validate.Length(min=1, max=256))
    binding_verifier = Text(
        required=True,
        validate=validate.Regexp(BINDING_VERIFIER, error="Must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~."),
        metadata={"description": "The secret whose SHA-256 was the flow's binding_challenge."},
    )
    error = Text(load_default=None, metadata={"description": "Sent by the provider instead of a code (401)."})


class GoogleCodeSchema(Schema):
    code = Text(required=True, validate=validate.Length(min=1, max=2048))
    state = Text(required=True, validate=validate.Length(min=1, max=256))


# ---- responses --------------------------------------------------------------------------------------------------


class AuthorizationUrlSchema(Output):
    authorization_url = fields.String()


class GoogleStartHandler(BaseHandler):
    @api("startGoogleSignIn", {302: None}, query=GoogleStartQuery, errors=(503,))
    async def get(self) -> None:
        """Sign in with Google: a redirect to the provider with state, nonce and PKCE (S256).

        The flow is bound to the browser that starts it: it keeps a random secret (`binding_verifier`) and sends its
        SHA-256 here; only a callback that brings the secret back signs in (a stranger's flow sent as a link cannot).
        """
        self.set_header("Location", await google.start_sign_in(self.rt, self.query()["binding_challenge"]))
        self.respond(None, 302)


class GoogleCallbackHandler(BaseHandler):
    @api("finishGoogleSignIn", {200: TokenPairSchema}, query=GoogleCallbackQuery, errors=(401, 403, 409, 503))
    async def get(self) -> None:
        """Where the provider sends the browser back: the token pair of the Google account's user. Only with the
        `binding_verifier` of the browser that started the flow (401 otherwise).

        The first sign-in creates the account (no password, a default wallet). An existing account with the
        same e-mail is 409: log in with its password and link Google from the account. An account with two-factor
        sign-in answers 401 MFA_REQUIRED, as a password login does.
        """
        query = self.query()
        flow = (query["code"], query["state"], query["binding_verifier"])
        self.respond(await google.sign_in(self.rt, *flow, self.device()), 200)


class GoogleLinkStartHandler(BaseHandler):
    @api("startGoogleLink", {200: AuthorizationUrlSchema}, errors=(503,))
    @authenticated
    async def post(self) -> None:
        """Start linking Google to this account: the provider URL of a flow bound to the caller."""
        self.respond({"authorization_url": await google.start_link(self.rt, self.principal)}, 200)


class GoogleLinkHandler(BaseHandler):
    @api("finishGoogleLink", {200: UserSchema}, body=GoogleCodeSchema, errors=(409, 503))
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
