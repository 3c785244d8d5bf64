"""API key management: create, list, revoke, roll over; only with a login session (a key cannot mint a key)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated, parse_uuid, recently_authenticated
from handlers.field_types import (
    Text,
    UtcDateTime,
)
from handlers.schemas import (
    Output,
    PageQuery,
)
from wallet.identity import keys
from wallet.identity.keys import LIFETIMES, SCOPES

TAG = "Keys"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class KeyCreateSchema(Schema):
    name = Text(required=True, validate=validate.Length(min=1, max=64))
    # Each item checked on its own: apispec turns ContainsOnly on the list into an enum no array can satisfy.
    scopes = fields.List(Text(validate=validate.OneOf(SCOPES)), required=True, validate=validate.Length(min=1))
    expires_in = Text(required=True, validate=validate.OneOf(list(LIFETIMES)))


class KeyRolloverSchema(Schema):
    expires_in = Text(load_default=None, validate=validate.OneOf(list(LIFETIMES)))
    grace_seconds = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=86400))


# ---- responses --------------------------------------------------------------------------------------------------


class ApiKeySchema(Output):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The secret's first characters, to recognise it by."})
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)))
    status = fields.String(validate=validate.OneOf(["active", "expired", "revoked"]))
    expires_at = UtcDateTime()
    last_used_at = UtcDateTime(allow_none=True, metadata={"description": "Updated at most once a minute."})
    created_at = UtcDateTime()
    revoked_at = UtcDateTime(
        allow_none=True, metadata={"description": "When it stopped, or (during a rollover's grace) will stop."}
    )


class NewApiKeySchema(ApiKeySchema):
    key = fields.String(metadata={"description": "The secret (`wk_...`), shown only in this answer."})


class ApiKeyListSchema(Output):
    items = fields.List(fields.Nested(ApiKeySchema))
    next_cursor = fields.String(allow_none=True)


class KeyListHandler(BaseHandler):
    @api("createApiKey", {201: NewApiKeySchema}, body=KeyCreateSchema, errors=(409,))
    @recently_authenticated
    async def post(self) -> None:
        """Create an API key with scopes and a lifetime; the secret is in this answer only. At most 5 active.

        Needs a recent authentication (step-up); the owner is told by e-mail (the api_key.created event)."""
        data = self.load()
        self.respond(await keys.create_key(self.rt, self.principal, **data), 201)

    @api("listApiKeys", {200: ApiKeyListSchema}, query=PageQuery)
    @authenticated
    async def get(self) -> None:
        """The caller's API keys, newest first, with their status and when each was last used."""
        self.respond(await keys.list_keys(self.rt, self.principal, **self.query()), 200)


class KeyRevokeHandler(BaseHandler):
    @api("revokeApiKey", {200: ApiKeySchema})
    @authenticated
    async def post(self, key_id: str) -> None:
        """Revoke a key at once (also one in its rollover grace); repeating it changes nothing."""
        self.respond(await keys.revoke_key(self.rt, self.principal, parse_uuid(key_id, "key_id")), 200)


class KeyRolloverHandler(BaseHandler):
    @api("rolloverApiKey", {201: NewApiKeySchema}, body=KeyRolloverSchema, errors=(409,))
    @recently_authenticated
    async def post(self, key_id: str) -> None:
        """A new secret with the same name and scopes; the old one stops after grace_seconds (at once by default).

        Without expires_in the new key gets the old one's lifetime. A revoked or already rolled-over key is a 409.
        A new secret is a new key: this needs a recent authentication (step-up) too.
        """
        data = self.load()
        rolled = await keys.rollover_key(self.rt, self.principal, parse_uuid(key_id, "key_id"), **data)
        self.respond(rolled, 201)


routes = [
    (r"/api/v1/keys", KeyListHandler),
    (r"/api/v1/keys/([^/]+)/revoke", KeyRevokeHandler),
    (r"/api/v1/keys/([^/]+)/rollover", KeyRolloverHandler),
]
