"""Wallet endpoints: list and open wallets, read one, its balance and its history."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated, parse_uuid, requires
from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    Currency,
    Text,
)
from handlers.schemas import (
    Output,
    PageQuery,
    TransactionListSchema,
    WalletListSchema,
    WalletSchema,
)
from wallet.ledger import history, wallets

TAG = "Wallets"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class WalletCreateSchema(Schema):
    currency = Currency(required=True)
    name = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))


# ---- responses --------------------------------------------------------------------------------------------------


class BalanceSchema(Output):
    wallet_id = fields.UUID()
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(validate=DECIMAL)
    available_balance = fields.String(validate=DECIMAL, metadata={"description": "The balance minus active holds."})


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


class WalletBalanceHandler(BaseHandler):
    cacheable = True

    @api("getBalance", {200: BalanceSchema})
    @requires("read")
    async def get(self, wallet_id: str) -> None:
        """A wallet's balance."""
        balance = await wallets.get_balance(self.rt, self.principal, parse_uuid(wallet_id, "wallet_id"))
        self.respond(balance, 200)


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
    (r"/api/v1/wallets/([^/]+)/transactions", WalletTransactionsHandler),
]
