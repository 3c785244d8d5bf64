"""Hold endpoints: reserve an amount for a payee, list and read holds, capture (a transfer) or void them."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates_schema

from handlers.base import BaseHandler, api, parse_uuid, requires
from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    HOLD_STATUSES,
    Amount,
    RecipientEmail,
    Text,
    UtcDateTime,
    WalletNumber,
    exactly_one,
    one_of_required,
)
from handlers.money import MoneyHandler
from handlers.schemas import (
    AmountSchema,
    Output,
    PageQuery,
    TransactionSchema,
)
from wallet.operations import holds

TAG = "Holds"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class HoldCreateSchema(AmountSchema):
    RECIPIENTS = ("to_wallet_id", "to_wallet_number", "to_email")
    json_schema = one_of_required(RECIPIENTS)

    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = WalletNumber()
    to_email = RecipientEmail(metadata={"description": "The payee's e-mail: their wallet in the source currency."})
    expires_in = fields.Integer(
        load_default=604800,
        strict=True,
        validate=validate.Range(min=60, max=604800),
        metadata={"description": "Seconds until the hold expires and its remaining amount is released."},
    )

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.RECIPIENTS)


class CaptureSchema(Schema):
    amount = Amount(load_default=None, metadata={"description": "Default: all that remains of the hold."})
    final = fields.Boolean(
        load_default=True, metadata={"description": "Release what remains after this capture (default true)."}
    )


class HoldQuery(PageQuery):
    wallet_id = fields.UUID()
    status = Text(validate=validate.OneOf(HOLD_STATUSES))


# ---- responses --------------------------------------------------------------------------------------------------


class HoldSchema(Output):
    id = fields.UUID()
    from_wallet_id = fields.UUID()
    to_wallet_id = fields.UUID()
    amount = fields.String(validate=DECIMAL)
    captured_amount = fields.String(validate=DECIMAL)
    remaining_amount = fields.String(validate=DECIMAL, metadata={"description": "Still reserved (0 unless ACTIVE)."})
    currency = fields.String(validate=CURRENCY)
    status = fields.String(validate=validate.OneOf(HOLD_STATUSES))
    description = fields.String(allow_none=True)
    expires_at = UtcDateTime()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class HoldListSchema(Output):
    items = fields.List(fields.Nested(HoldSchema))
    next_cursor = fields.String(allow_none=True)


class HoldListHandler(MoneyHandler):
    @api("createHold", {201: HoldSchema}, body=HoldCreateSchema, idempotent=True, errors=(403, 404))
    @requires("transfer")
    async def post(self) -> None:
        """Reserve an amount of the caller's wallet for a payee: it leaves the available balance at once and stays
        in the balance until captured, voided or expired."""
        data = self.load()
        self.step_up_above(data["amount"])
        recipient = {k: v for k, v in data.items() if k.startswith("to_")}
        hold, replayed = await holds.place(
            self.rt,
            self.principal,
            data["from_wallet_id"],
            recipient,
            data["amount"],
            data["expires_in"],
            data["description"],
            self.idempotency_key(),
        )
        if replayed:
            self.set_header("Idempotent-Replayed", "true")
        self.respond(hold, 201)

    @api("listHolds", {200: HoldListSchema}, query=HoldQuery, errors=(404,))
    @requires("read")
    async def get(self) -> None:
        """The holds the caller pays or receives, newest first, filtered by wallet (404 if not yours) and status."""
        self.respond(await holds.list_holds(self.rt, self.principal, **self.query()), 200)


class HoldHandler(BaseHandler):
    @api("getHold", {200: HoldSchema})
    @requires("read")
    async def get(self, hold_id: str) -> None:
        """One hold the caller pays or receives."""
        self.respond(await holds.get_hold(self.rt, self.principal, parse_uuid(hold_id, "hold_id")), 200)


class HoldCaptureHandler(MoneyHandler):
    @api("captureHold", {201: TransactionSchema}, body=CaptureSchema, idempotent=True, errors=(403, 409))
    @requires("transfer")
    async def post(self, hold_id: str) -> None:
        """Transfer all or part of what remains of a hold to its payee (the payer or the payee asks); the final
        capture (the default) releases the rest."""
        data = self.load()
        outcome = await holds.capture(
            self.rt,
            self.principal,
            parse_uuid(hold_id, "hold_id"),
            data["amount"],
            data["final"],
            self.idempotency_key(),
        )
        self.respond_outcome(outcome)


class HoldVoidHandler(BaseHandler):
    @api("voidHold", {200: HoldSchema}, errors=(409,))
    @requires("transfer")
    async def post(self, hold_id: str) -> None:
        """Release what remains of an active hold (the payer or the payee asks)."""
        self.respond(await holds.void(self.rt, self.principal, parse_uuid(hold_id, "hold_id")), 200)


routes = [
    (r"/api/v1/holds", HoldListHandler),
    (r"/api/v1/holds/([^/]+)", HoldHandler),
    (r"/api/v1/holds/([^/]+)/capture", HoldCaptureHandler),
    (r"/api/v1/holds/([^/]+)/void", HoldVoidHandler),
]
