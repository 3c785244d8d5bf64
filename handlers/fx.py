"""Cross-currency endpoints: admins set exchange rates and see their history and the FX position; users read rates
and ask for quotes (a transfer executes a quote through POST /transfers with quote_id, handlers/money.py)."""

from __future__ import annotations

from handlers.base import BaseHandler, admin_only, api, requires
from handlers.schemas import (
    FxPositionListSchema,
    FxQuoteCreateSchema,
    FxQuoteSchema,
    FxRateChangeListSchema,
    FxRateListSchema,
    FxRateSchema,
    FxRateSetSchema,
    PageQuery,
)
from wallet.operations import fx

CURRENCY_PATH = {"type": "string", "pattern": "^[A-Z]{3}$", "description": "An ISO 4217 code in capitals."}
PAIR = {"base": CURRENCY_PATH, "quote": CURRENCY_PATH}


class AdminFxRateHandler(BaseHandler):
    @api({200: FxRateSchema}, body=FxRateSetSchema, path=PAIR)
    @admin_only
    async def put(self, base: str, quote: str) -> None:
        """Set the rate of base -> quote (units of quote per 1 base) and its spread; every change is kept with its
        time and author, and logged in the admin action log. The inverse direction is a rate of its own."""
        data = self.load()
        self.respond(await fx.set_rate(self.rt, self.principal, base, quote, data["rate"], data["spread"]), 200)


class AdminFxRateHistoryHandler(BaseHandler):
    @api({200: FxRateChangeListSchema}, query=PageQuery, path=PAIR)
    @admin_only
    async def get(self, base: str, quote: str) -> None:
        """Every rate set for base -> quote, newest first, with who set it."""
        self.respond(await fx.rate_history(self.rt, base, quote, **self.query()), 200)


class AdminFxPositionHandler(BaseHandler):
    @api({200: FxPositionListSchema})
    @admin_only
    async def get(self) -> None:
        """The house's FX position: each currency's FX account balance (negative: more paid out than taken in)."""
        self.respond(await fx.position(self.rt), 200)


class FxRateListHandler(BaseHandler):
    @api({200: FxRateListSchema})
    @requires("read")
    async def get(self) -> None:
        """The current exchange rates."""
        self.respond(await fx.list_rates(self.rt), 200)


class FxQuoteHandler(BaseHandler):
    @api({201: FxQuoteSchema}, body=FxQuoteCreateSchema, errors=(404,))
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
