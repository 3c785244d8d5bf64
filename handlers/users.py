"""The caller's own account: read, change, deactivate."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from handlers.base import BaseHandler, api, authenticated
from handlers.field_types import (
    NEW_PASSWORD,
    Email,
    Phone,
    Text,
)
from handlers.schemas import (
    UserSchema,
)
from wallet.identity import accounts

TAG = "Users"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class UserUpdateSchema(Schema):
    json_schema = {"minProperties": 1}

    email = Email(allow_none=True, validate=validate.Length(max=254))
    phone = Phone(allow_none=True)
    password = Text(validate=validate.Length(max=1024), metadata=NEW_PASSWORD)
    current_password = Text(
        validate=validate.Length(max=1024),
        metadata={"description": "Required with password, unless the account has none yet (made by Google)."},
    )
    revoke_api_keys = fields.Boolean(
        metadata={"description": "With password: whether the change revokes every API key too (default true)."}
    )

    @validates_schema
    def consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one of email, phone, password.", "_schema")
        if "revoke_api_keys" in data and "password" not in data:
            raise ValidationError("Only with a new password.", "revoke_api_keys")


class MeHandler(BaseHandler):
    @api("getMe", {200: UserSchema})
    @authenticated
    async def get(self) -> None:
        """The caller's account."""
        self.respond(await accounts.get_me(self.rt, self.principal), 200)

    @api("updateMe", {200: UserSchema}, body=UserUpdateSchema, errors=(401, 409, 429))
    @authenticated
    async def patch(self) -> None:
        """Change email, phone, or the password (with current_password).

        A new e-mail or password needs a recent authentication (403 STEP_UP_REQUIRED otherwise). A new password
        ends the other sessions and revokes every API key, unless `revoke_api_keys` is false."""
        changes = self.load()
        self.respond(await accounts.update_me(self.rt, self.principal, changes, self.request.remote_ip or ""), 200)

    @api("deleteMe", {204: None})
    @authenticated
    async def delete(self) -> None:
        """Deactivate the account: its tokens stop working and login is refused; the ledger stays."""
        await accounts.deactivate_me(self.rt, self.principal)
        self.respond(None, 204)


routes = [(r"/api/v1/users/me", MeHandler)]
