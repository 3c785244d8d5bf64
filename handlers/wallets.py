"""Wallet endpoints: list and open wallets, read one, its balance and its history."""

from __future__ import annotations

from handlers.base import BaseHandler, authenticated, parse_uuid
from handlers.schemas import (
    BalanceSchema,
    PageQuery,
    TransactionListSchema,
    WalletCreateSchema,
    WalletListSchema,
    WalletSchema,
)
from wallet import history, wallets


class WalletListHandler(BaseHandler):
    @authenticated
    async def get(self) -> None:
        self.respond(await wallets.list_wallets(self.rt, self.principal), 200, WalletListSchema())

    @authenticated
    async def post(self) -> None:
        data = self.load(WalletCreateSchema())
        self.respond(
            await wallets.create_wallet(self.rt, self.principal, data["currency"], data["name"]), 201, WalletSchema()
        )


class WalletHandler(BaseHandler):
    @authenticated
    async def get(self, wallet_id: str) -> None:
        wallet = await wallets.get_wallet(self.rt, self.principal, parse_uuid(wallet_id, "wallet_id"))
        self.respond(wallet, 200, WalletSchema())


class WalletBalanceHandler(BaseHandler):
    @authenticated
    async def get(self, wallet_id: str) -> None:
        balance = await wallets.get_balance(self.rt, self.principal, parse_uuid(wallet_id, "wallet_id"))
        self.respond(balance, 200, BalanceSchema())


class WalletTransactionsHandler(BaseHandler):
    @authenticated
    async def get(self, wallet_id: str) -> None:
        page = self.query(PageQuery())
        listing = await history.list_transactions(
            self.rt, self.principal.user_id, wallet_id=parse_uuid(wallet_id, "wallet_id"), **page
        )
        self.respond(listing, 200, TransactionListSchema())


routes = [
    (r"/api/v1/wallets", WalletListHandler),
    (r"/api/v1/wallets/([^/]+)", WalletHandler),
    (r"/api/v1/wallets/([^/]+)/balance", WalletBalanceHandler),
    (r"/api/v1/wallets/([^/]+)/transactions", WalletTransactionsHandler),
]
