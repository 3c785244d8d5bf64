"""Wallet endpoints: list and open wallets, read one, its balance and its history; the link that pays it in the web
wallet with its QR code."""

from __future__ import annotations

import datetime as dt

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated, parse_uuid, requires
from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    Currency,
    Text,
    UtcDateTime,
)
from handlers.schemas import (
    Output,
    PageLinkSchema,
    PageQuery,
    TransactionListSchema,
    WalletListSchema,
    WalletSchema,
)
from handlers.webapp import page_link
from wallet.ledger import history, wallets

TAG = "Wallets"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class WalletCreateSchema(Schema):
    currency = Currency(required=True)
    name = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))


class BalanceQuery(Schema):
    at = UtcDateTime(
        metadata={"description": "The balance as of this moment (RFC 3339, not in the future); now if absent."}
    )


class BalanceSeriesQuery(Schema):
    from_ = UtcDateTime(
        data_key="from", required=True, metadata={"description": "The first point (a date: 00:00 UTC)."}
    )
    to = UtcDateTime(
        load_default=None, metadata={"description": "The last point at most (not in the future); now if absent."}
    )
    interval = Text(load_default="day", validate=validate.OneOf(["day"]), metadata={"description": "Between points."})


# ---- responses --------------------------------------------------------------------------------------------------


class BalanceSchema(Output):
    wallet_id = fields.UUID()
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(validate=DECIMAL)
    available_balance = fields.String(
        validate=DECIMAL, allow_none=True, metadata={"description": "The balance minus active holds (null with `at`)."}
    )
    at = UtcDateTime(allow_none=True, metadata={"description": "The moment asked for (`at`); null for now."})


class BalancePointSchema(Output):
    at = UtcDateTime()
    balance = fields.String(validate=DECIMAL)


class BalanceSeriesSchema(Output):
    wallet_id = fields.UUID()
    currency = fields.String(validate=CURRENCY)
    items = fields.List(fields.Nested(BalancePointSchema))


class WalletListHandler(BaseHandler):
    @api("listWallets", {200: WalletListSchema})
    @requires("read")
    async def get(self) -> None:
        """Every wallet of the caller, and the total balance per currency."""
        self.respond(await wallets.list_wallets(self.rt, self.principal), 200)

    @api("createWallet", {201: WalletSchema}, body=WalletCreateSchema)
    @authenticated
    async def post(self) -> None:
        """Open a wallet in a currency."""
        data = self.load()
        self.respond(await wallets.create_wallet(self.rt, self.principal, data["currency"], data["name"]), 201)


class WalletHandler(BaseHandler):
    cacheable = True

    @api("getWallet", {200: WalletSchema})
    @requires("read")
    async def get(self, wallet_id: str) -> None:
        """One of the caller's wallets."""
        wallet = await wallets.get_wallet(self.rt, self.principal, parse_uuid(wallet_id, "wallet_id"))
        self.respond(wallet, 200)


class WalletLinkHandler(BaseHandler):
    @api("getWalletLink", {200: PageLinkSchema})
    @authenticated
    async def get(self, wallet_id: str) -> None:
        """The link that pays one of the caller's wallets in the web wallet (`/#/transfer?to_wallet_number=...`: the
        send form with this wallet's number filled in) and its QR code, to share. A login session only."""
        wallet = await wallets.get_wallet(self.rt, self.principal, parse_uuid(wallet_id, "wallet_id"))
        self.respond(page_link(self.request, f"/transfer?to_wallet_number={wallet['number']}"), 200)


class WalletBalanceHandler(BaseHandler):
    cacheable = True

    @api("getBalance", {200: BalanceSchema}, query=BalanceQuery)
    @requires("read")
    async def get(self, wallet_id: str) -> None:
        """A wallet's balance, now or as of a moment (`at`: from the running balance its ledger entries carry)."""
        # The hottest read: with no query string there is nothing to parse (a schema load costs more than the read).
        at = self.query().get("at") if self.request.query_arguments else None
        wallet = parse_uuid(wallet_id, "wallet_id")
        if at is None:
            balance = await wallets.get_balance(self.rt, self.principal, wallet)
        else:
            balance = await wallets.balance_at(self.rt, self.principal, wallet, at)
        self.respond(balance, 200)


class WalletBalancesHandler(BaseHandler):
    @api("listBalances", {200: BalanceSeriesSchema}, query=BalanceSeriesQuery)
    @requires("read")
    async def get(self, wallet_id: str) -> None:
        """A wallet's balance at `from` and each day after it up to `to`, for a chart (at most 366 points)."""
        query = self.query()
        until = query["to"] or dt.datetime.now(dt.UTC)
        series = await wallets.balance_series(
            self.rt, self.principal, parse_uuid(wallet_id, "wallet_id"), query["from_"], until
        )
        self.respond(series, 200)


class WalletTransactionsHandler(BaseHandler):
    cacheable = True

    @api("listWalletTransactions", {200: TransactionListSchema}, query=PageQuery)
    @requires("read")
    async def get(self, wallet_id: str) -> None:
        """The transactions touching a wallet, newest first, with their direction."""
        page = self.query()
        listing = await history.list_transactions(
            self.rt, self.principal.user_id, wallet_id=parse_uuid(wallet_id, "wallet_id"), **page
        )
        self.respond(listing, 200)


routes = [
    (r"/api/v1/wallets", WalletListHandler),
    (r"/api/v1/wallets/([^/]+)", WalletHandler),
    (r"/api/v1/wallets/([^/]+)/balance", WalletBalanceHandler),
    (r"/api/v1/wallets/([^/]+)/link", WalletLinkHandler),
    (r"/api/v1/wallets/([^/]+)/balances", WalletBalancesHandler),
    (r"/api/v1/wallets/([^/]+)/transactions", WalletTransactionsHandler),
]
