"""Cross-currency endpoints: admins set exchange rates and see their history and the FX position; users read rates
and ask for quotes (a transfer executes a quote through POST /transfers with quote_id, handlers/money.py)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates_schema

from handlers.base import BaseHandler, admin_only, api, requires
from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    Amount,
    FxRateValue,
    FxSpread,
    UtcDateTime,
    WalletNumber,
    exactly_one,
    one_of_required,
)
from handlers.schemas import Output, PageQuery
from wallet.operations import fx

TAG = "FX"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class FxRateSetSchema(Schema):
    rate = FxRateValue(required=True)
    # None means 0 (wallet/operations/fx.py): a Decimal default would not serialise into the spec.
    spread = FxSpread(load_default=None)


class FxQuoteCreateSchema(Schema):
    RECIPIENTS = ("to_wallet_id", "to_wallet_number")
    AMOUNTS = ("source_amount", "destination_amount")
    json_schema = one_of_required(RECIPIENTS, AMOUNTS)

    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = WalletNumber()
    source_amount = Amount(
        load_default=None, metadata={"description": "What the payer pays, in the source wallet's currency."}
    )
    destination_amount = Amount(
        load_default=None, metadata={"description": "What the payee receives, in the recipient wallet's currency."}
    )

    @validates_schema
    def one_recipient_one_amount(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.RECIPIENTS)
        exactly_one(data, self.AMOUNTS)


# ---- responses --------------------------------------------------------------------------------------------------


class FxRateSchema(Output):
    base = fields.String(validate=CURRENCY)
    quote = fields.String(validate=CURRENCY)
    rate = fields.String(validate=DECIMAL, metadata={"description": "Units of quote per 1 base, 10 decimal places."})
    spread = fields.String(validate=DECIMAL, metadata={"description": "The fraction taken against the customer."})
    updated_by = fields.UUID(metadata={"description": "The admin who set it."})
    updated_at = UtcDateTime()


class FxRateListSchema(Output):
    items = fields.List(fields.Nested(FxRateSchema))


class FxRateChangeSchema(Output):
    id = fields.UUID()
    base = fields.String(validate=CURRENCY)
    quote = fields.String(validate=CURRENCY)
    rate = fields.String(validate=DECIMAL)
    spread = fields.String(validate=DECIMAL)
    set_by = fields.UUID(metadata={"description": "The admin who set it."})
    created_at = UtcDateTime()


class FxRateChangeListSchema(Output):
    items = fields.List(fields.Nested(FxRateChangeSchema))
    next_cursor = fields.String(allow_none=True)


class FxRoundingSchema(Output):
    source = fields.String(validate=validate.OneOf(["up"]), metadata={"description": "The source amount rounds up."})
    destination = fields.String(
        validate=validate.OneOf(["down"]), metadata={"description": "The destination amount rounds down."}
    )
    unrounded_source_amount = fields.String(
        validate=DECIMAL, metadata={"description": "Before rounding, cut to 20 decimal places."}
    )
    unrounded_destination_amount = fields.String(
        validate=DECIMAL, metadata={"description": "Before rounding, cut to 20 decimal places."}
    )


class FxQuoteSchema(Output):
    id = fields.UUID()
    from_wallet_id = fields.UUID()
    to_wallet_id = fields.UUID()
    rate = fields.String(
        validate=DECIMAL, metadata={"description": "The customer's rate: market_rate * (1 - spread), rounded down."}
    )
    market_rate = fields.String(validate=DECIMAL)
    spread = fields.String(validate=DECIMAL)
    source_amount = fields.String(validate=DECIMAL)
    source_currency = fields.String(validate=CURRENCY)
    destination_amount = fields.String(validate=DECIMAL)
    destination_currency = fields.String(validate=CURRENCY)
    fixed = fields.String(
        validate=validate.OneOf(["source", "destination"]),
        metadata={"description": "The amount the caller gave; the other one was computed and rounded."},
    )
    rounding = fields.Nested(FxRoundingSchema)
    expires_at = UtcDateTime()
    created_at = UtcDateTime()


class FxPositionSchema(Output):
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(
        validate=validate.Regexp(r"^-?[0-9]+(\.[0-9]+)?$"),
        metadata={"description": "The FX account's balance: negative when the house paid out more than it took in."},
    )
    wallet_id = fields.UUID()
    wallet_number = fields.String()


class FxPositionListSchema(Output):
    items = fields.List(fields.Nested(FxPositionSchema))


CURRENCY_PATH = {"type": "string", "pattern": "^[A-Z]{3}$", "description": "An ISO 4217 code in capitals."}
PAIR = {"base": CURRENCY_PATH, "quote": CURRENCY_PATH}


class AdminFxRateHandler(BaseHandler):
    @api("setFxRate", {200: FxRateSchema}, body=FxRateSetSchema, path=PAIR)
    @admin_only
    async def put(self, base: str, quote: str) -> None:
        """Set the rate of base -> quote (units of quote per 1 base) and its spread; every change is kept with its
        time and author, and logged in the admin action log. The inverse direction is a rate of its own."""
        data = self.load()
        self.respond(await fx.set_rate(self.rt, self.principal, base, quote, data["rate"], data["spread"]), 200)


class AdminFxRateHistoryHandler(BaseHandler):
    @api("listFxRateHistory", {200: FxRateChangeListSchema}, query=PageQuery, path=PAIR)
    @admin_only
    async def get(self, base: str, quote: str) -> None:
        """Every rate set for base -> quote, newest first, with who set it."""
        self.respond(await fx.rate_history(self.rt, base, quote, **self.query()), 200)


class AdminFxPositionHandler(BaseHandler):
    @api("getFxPosition", {200: FxPositionListSchema})
    @admin_only
    async def get(self) -> None:
        """The house's FX position: each currency's FX account balance (negative: more paid out than taken in)."""
        self.respond(await fx.position(self.rt), 200)


class FxRateListHandler(BaseHandler):
    @api("listFxRates", {200: FxRateListSchema})
    @requires("read")
    async def get(self) -> None:
        """The current exchange rates."""
        self.respond(await fx.list_rates(self.rt), 200)


class FxQuoteHandler(BaseHandler):
    @api("createFxQuote", {201: FxQuoteSchema}, body=FxQuoteCreateSchema, errors=(404,))
    @requires("transfer")
    async def post(self) -> None:
        """A quote for a transfer between two of different currencies: the rate and both amounts (the one given, the
        other rounded in the house's favour), valid for FX_QUOTE_TTL seconds; POST /transfers with quote_id uses it."""
        data = self.load()
        recipient = {k: v for k, v in data.items() if k.startswith("to_")}
        quote = await fx.create_quote(
            self.rt,
            self.principal,
            data["from_wallet_id"],
            recipient,
            data["source_amount"],
            data["destination_amount"],
        )
        self.respond(quote, 201)


routes = [
    (r"/api/v1/admin/fx-rates/([^/]+)/([^/]+)", AdminFxRateHandler),
    (r"/api/v1/admin/fx-rates/([^/]+)/([^/]+)/history", AdminFxRateHistoryHandler),
    (r"/api/v1/admin/fx/position", AdminFxPositionHandler),
    (r"/api/v1/fx-rates", FxRateListHandler),
    (r"/api/v1/fx/quotes", FxQuoteHandler),
]
