"""Auth endpoints: register, login (and its two-factor step), refresh, step-up, logout."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates_schema

from handlers.base import BaseHandler, api, authenticated
from handlers.field_types import (
    NEW_PASSWORD,
    USERNAME,
    Currency,
    Email,
    Phone,
    Text,
    TotpCode,
    exactly_one,
    one_of_required,
)
from handlers.schemas import (
    AccessTokenSchema,
    Output,
    SecondFactorSchema,
    TokenPairSchema,
    UserSchema,
    WalletSchema,
)
from wallet.identity import accounts, auth, twofactor

TAG = "Auth"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class RegisterSchema(Schema):
    username = Text(required=True, validate=validate.Regexp(USERNAME, error="3 to 32 of A-Z a-z 0-9 _ . -"))
    password = Text(required=True, validate=validate.Length(max=1024), metadata=NEW_PASSWORD)
    email = Email(load_default=None, allow_none=True, validate=validate.Length(max=254))
    phone = Phone(load_default=None, allow_none=True)
    currency = Currency(load_default=None, allow_none=True)


class LoginSchema(Schema):
    IDENTIFIERS = ("username", "email", "phone")
    json_schema = {
        **one_of_required(IDENTIFIERS),
        "description": "The password and exactly one of username, email, phone.",
    }

    username = Text(validate=validate.Length(max=254))
    email = Text(validate=validate.Length(max=254))
    phone = Phone()
    password = Text(required=True, validate=validate.Length(max=1024))

    @validates_schema
    def one_identifier(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.IDENTIFIERS)


class LoginMfaSchema(SecondFactorSchema):
    mfa_token = Text(required=True, validate=validate.Length(max=4096))


class StepUpSchema(Schema):
    PROOFS = ("password", "code")
    json_schema = one_of_required(PROOFS)

    password = Text(
        load_default=None,
        validate=validate.Length(max=1024),
        metadata={"description": "When two-factor sign-in is off."},
    )
    code = TotpCode(load_default=None)

    @validates_schema
    def one_proof(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.PROOFS)


class RefreshSchema(Schema):
    refresh_token = Text(required=True, validate=validate.Length(max=4096))


# ---- responses --------------------------------------------------------------------------------------------------


class RegisteredSchema(Output):
    user = fields.Nested(UserSchema)
    wallet = fields.Nested(WalletSchema)


class RegisterHandler(BaseHandler):
    @api("register", {201: RegisteredSchema}, body=RegisterSchema, errors=(409,))
    async def post(self) -> None:
        """Create an account; every new user gets a default wallet."""
        data = self.load()
        self.respond(await accounts.register(self.rt, **data), 201)


class LoginHandler(BaseHandler):
    @api("login", {200: TokenPairSchema}, body=LoginSchema, errors=(401, 403, 429))
    async def post(self) -> None:
        """Log in with exactly one of username, email or phone, and the password.

        An account with two-factor sign-in answers 401 MFA_REQUIRED with an `mfa_token` (valid 5 minutes) and no
        tokens: finish at POST /auth/login/mfa with a code."""
        data = self.load()
        field = next(f for f in ("username", "email", "phone") if f in data)
        tokens = await auth.login(
            self.rt, field=field, identifier=data[field], password=data["password"], device=self.device()
        )
        self.respond(tokens, 200)


class LoginMfaHandler(BaseHandler):
    @api("loginWithCode", {200: TokenPairSchema}, body=LoginMfaSchema, errors=(401, 403, 429))
    async def post(self) -> None:
        """The second step of a two-factor sign-in: the `mfa_token` of MFA_REQUIRED and a code from the app (or a
        recovery code). A wrong, expired or already used code is 401 INVALID_CREDENTIALS; tries are throttled like
        passwords (429); an mfa_token works for one sign-in."""
        self.respond(await twofactor.login_mfa(self.rt, **self.load(), device=self.device()), 200)


class StepUpHandler(BaseHandler):
    @api("stepUp", {200: AccessTokenSchema}, body=StepUpSchema, errors=(401, 429))
    @authenticated
    async def post(self) -> None:
        """Authenticate this login again, with a code when two-factor sign-in is on and the password otherwise: a
        new access token with a fresh `auth_time`, for what answers 403 STEP_UP_REQUIRED (the refresh token stays)."""
        tokens = await twofactor.step_up(self.rt, self.principal, **self.load(), ip=self.request.remote_ip or "")
        self.respond(tokens, 200)


class RefreshHandler(BaseHandler):
    @api("refreshToken", {200: TokenPairSchema}, body=RefreshSchema, errors=(401, 403))
    async def post(self) -> None:
        """Trade a refresh token for a new pair; each refresh token works once."""
        data = self.load()
        self.respond(await auth.refresh(self.rt, data["refresh_token"]), 200)


class LogoutHandler(BaseHandler):
    @api("logout", {204: None})
    @authenticated
    async def post(self) -> None:
        """End this login: its access and refresh tokens stop working at once."""
        await auth.logout(self.rt, self.principal)
        self.respond(None, 204)


routes = [
    (r"/api/v1/auth/register", RegisterHandler),
    (r"/api/v1/auth/login", LoginHandler),
    (r"/api/v1/auth/login/mfa", LoginMfaHandler),
    (r"/api/v1/auth/step-up", StepUpHandler),
    (r"/api/v1/auth/refresh", RefreshHandler),
    (r"/api/v1/auth/logout", LogoutHandler),
]
