"""Money endpoints: deposit, withdraw, the compatibility operation, transfers, and the caller's transactions."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from handlers.base import BaseHandler, api, parse_uuid, requires
from handlers.field_types import USERNAME, Amount, Phone, Text, exactly_one, one_of_required
from handlers.schemas import MoneySchema, TransactionListSchema, TransactionQuery, TransactionSchema, WalletSchema
from wallet.ledger import history, lifecycle
from wallet.operations import fx

TAG = "Transactions"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class OperationSchema(MoneySchema):
    operation_type = Text(required=True, validate=validate.OneOf(["DEPOSIT", "WITHDRAW"]))


class TransferSchema(MoneySchema):
    RECIPIENTS = ("to_wallet_id", "to_wallet_number", "to_username", "to_phone")
    WHAT = ("amount", "quote_id")
    json_schema = one_of_required(RECIPIENTS, WHAT)

    amount = Amount(load_default=None, metadata={"description": "In the source currency; not with quote_id."})
    quote_id = fields.UUID(
        load_default=None,
        metadata={
            "description": "Execute this FX quote (POST /fx/quotes) instead of sending an amount: the recipient "
            "must be the quote's wallet, named by to_wallet_id or to_wallet_number."
        },
    )
    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = Text(validate=validate.Regexp(r"^[0-9]{10}$", error="Must be 10 digits."))
    to_username = Text(validate=validate.Regexp(USERNAME, error="Not a valid username."))
    to_phone = Phone()

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.RECIPIENTS)
        if data.get("amount") is None and data.get("quote_id") is None:
            raise ValidationError("Missing data for required field (or give quote_id).", "amount")
        exactly_one(data, self.WHAT)
        if data.get("quote_id") is not None and ("to_username" in data or "to_phone" in data):
            raise ValidationError("A quote names its recipient's wallet: give to_wallet_id or to_wallet_number.")
        if data.get("quote_id") is not None and data.get("metadata") is not None:
            raise ValidationError("Not (yet) with quote_id: a cross-currency transfer keeps no metadata.", "metadata")


class MoneyHandler(BaseHandler):
    def respond_outcome(self, outcome: lifecycle.Outcome) -> None:
        if outcome.replayed:
            self.set_header("Idempotent-Replayed", "true")
        self.respond(outcome.transaction, 201)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if getattr(kwargs.get("exc_info", (None, None))[1], "replayed", False):
            self.set_header("Idempotent-Replayed", "true")
        super().write_error(status_code, **kwargs)


class OwnWalletMoneyHandler(MoneyHandler):
    kind: str  # DEPOSIT or WITHDRAWAL

    async def move(self, wallet_id: str) -> None:
        data = self.load()
        if self.kind == "WITHDRAWAL":
            self.step_up_above(data["amount"])
        outcome = await lifecycle.own_wallet_operation(
            self.rt,
            self.principal,
            parse_uuid(wallet_id, "wallet_id"),
            self.kind,
            data["amount"],
            data["description"],
            self.idempotency_key(),
            data["metadata"],
        )
        self.respond_outcome(outcome)


class DepositHandler(OwnWalletMoneyHandler):
    kind = "DEPOSIT"

    @api("deposit", {201: TransactionSchema}, body=MoneySchema, idempotent=True, errors=(403,))
    @requires("deposit")
    async def post(self, wallet_id: str) -> None:
        """Deposit into one of the caller's wallets (when the server allows self-service deposits)."""
        await self.move(wallet_id)


class WithdrawHandler(OwnWalletMoneyHandler):
    kind = "WITHDRAWAL"

    @api("withdraw", {201: TransactionSchema}, body=MoneySchema, idempotent=True, errors=(403,))
    @requires("withdraw")
    async def post(self, wallet_id: str) -> None:
        """Withdraw from one of the caller's wallets, within the daily limit."""
        await self.move(wallet_id)


class OperationHandler(MoneyHandler):
    @api("depositOrWithdraw", {200: WalletSchema}, body=OperationSchema, idempotent=True, errors=(403,))
    @requires("deposit", "withdraw")
    async def post(self, wallet_id: str) -> None:
        """Deposit or withdraw and answer with the updated wallet (a common wallet-service API).

        An API key needs the scope of the operation_type: deposit or withdraw.
        """
        data = self.load()
        self.principal.require("deposit" if data["operation_type"] == "DEPOSIT" else "withdraw")
        if data["operation_type"] == "WITHDRAW":
            self.step_up_above(data["amount"])
        result = await lifecycle.operation(
            self.rt,
            self.principal,
            parse_uuid(wallet_id, "wallet_id"),
            data["operation_type"],
            data["amount"],
            data["description"],
            self.idempotency_key(),
            data["metadata"],
        )
        if result["replayed"]:
            self.set_header("Idempotent-Replayed", "true")
        self.respond(result["wallet"], 200)


class TransferHandler(MoneyHandler):
    @api("transfer", {201: TransactionSchema}, body=TransferSchema, idempotent=True, errors=(403, 404))
    @requires("transfer")
    async def post(self) -> None:
        """Send money to a wallet (by id or number), a username or a phone, in the source currency; or, with
        quote_id, execute an FX quote (POST /fx/quotes) to its wallet in another currency."""
        data = self.load()
        recipient = {k: v for k, v in data.items() if k.startswith("to_")}
        parties = (self.rt, self.principal, data["from_wallet_id"], recipient)
        if data["quote_id"] is not None:  # its amount was judged when it was quoted
            outcome = await fx.transfer(*parties, data["quote_id"], data["description"], self.idempotency_key())
        else:
            self.step_up_above(data["amount"])
            outcome = await lifecycle.transfer(
                *parties, data["amount"], data["description"], self.idempotency_key(), data["metadata"]
            )
        self.respond_outcome(outcome)


class TransactionListHandler(BaseHandler):
    cacheable = True

    @api("listTransactions", {200: TransactionListSchema}, query=TransactionQuery, errors=(404,))
    @requires("read")
    async def get(self) -> None:
        """The caller's transactions, newest first, filtered by wallet (404 if not yours), type, status, time."""
        filters = self.query()
        self.respond(await history.list_transactions(self.rt, self.principal.user_id, **filters), 200)


class TransactionHandler(BaseHandler):
    @api("getTransaction", {200: TransactionSchema})
    @requires("read")
    async def get(self, transaction_id: str) -> None:
        """One transaction touching the caller's wallets."""
        transaction = await history.get_transaction(
            self.rt, self.principal, parse_uuid(transaction_id, "transaction_id")
        )
        self.respond(transaction, 200)


routes = [
    (r"/api/v1/wallets/([^/]+)/deposit", DepositHandler),
    (r"/api/v1/wallets/([^/]+)/withdraw", WithdrawHandler),
    (r"/api/v1/wallets/([^/]+)/operation", OperationHandler),
    (r"/api/v1/transfers", TransferHandler),
    (r"/api/v1/transactions", TransactionListHandler),
    (r"/api/v1/transactions/([^/]+)", TransactionHandler),
]
