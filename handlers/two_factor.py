"""Two-factor sign-in of the caller's account: enrol (a secret and its QR code), confirm with a first code, turn off."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated, recently_authenticated
from handlers.field_types import Text, TotpCode
from handlers.schemas import Output, SecondFactorSchema
from wallet.identity import twofactor

TAG = "Users"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class ConfirmSchema(Schema):
    code = TotpCode(required=True)


class DisableSchema(SecondFactorSchema):
    password = Text(
        load_default=None,
        validate=validate.Length(max=1024),
        metadata={"description": "Required unless the account has no password (then a recent authentication is)."},
    )


# ---- responses --------------------------------------------------------------------------------------------------


class EnrolmentSchema(Output):
    secret = fields.String(metadata={"description": "Base32, for typing into an app that cannot scan."})
    otpauth_uri = fields.String(metadata={"description": "otpauth://totp/...: what the QR code holds."})
    qr_code = fields.String(metadata={"description": "The QR code of otpauth_uri, an SVG as a data: URI for <img>."})


class RecoveryCodesSchema(Output):
    recovery_codes = fields.List(
        fields.String(), metadata={"description": "10 one-time codes for when the app is lost; shown only here."}
    )


class TwoFactorHandler(BaseHandler):
    @api("startTwoFactor", {201: EnrolmentSchema}, errors=(409,))
    @recently_authenticated
    async def post(self) -> None:
        """Start enrolling an authenticator app (TOTP, 6 digits, 30 s): a new secret, pending until confirmed (a
        pending one is replaced). 409 when two-factor sign-in is already on. Needs a recent authentication."""
        self.respond(await twofactor.enrol(self.rt, self.principal), 201)

    @api("disableTwoFactor", {204: None}, body=DisableSchema, errors=(401, 429))
    @authenticated
    async def delete(self) -> None:
        """Turn two-factor sign-in off with the password and a code (or a recovery code); 404 when it is off."""
        data = self.load()
        await twofactor.disable(self.rt, self.principal, **data, ip=self.request.remote_ip or "")
        self.respond(None, 204)


class TwoFactorConfirmHandler(BaseHandler):
    @api("confirmTwoFactor", {200: RecoveryCodesSchema}, body=ConfirmSchema, errors=(401, 409, 429))
    @authenticated
    async def post(self) -> None:
        """Turn two-factor sign-in on with the first code the app shows; the answer holds the recovery codes,
        shown only here. 404 when no enrolment is pending, 409 when it is already on."""
        self.respond(await twofactor.confirm(self.rt, self.principal, self.load()["code"]), 200)


routes = [
    (r"/api/v1/users/me/2fa", TwoFactorHandler),
    (r"/api/v1/users/me/2fa/confirm", TwoFactorConfirmHandler),
]
