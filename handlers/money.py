"""Money endpoints: deposit, withdraw, the compatibility operation, transfers, looking up their recipient, and the
caller's transactions."""

from __future__ import annotations

from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from handlers.base import BaseHandler, api, parse_uuid, requires
from handlers.field_types import (
    CURRENCY,
    Amount,
    Currency,
    Email,
    Phone,
    RecipientEmail,
    Text,
    Username,
    WalletNumber,
    exactly_one,
    one_of_required,
)
from handlers.schemas import (
    MoneySchema,
    Output,
    TransactionListSchema,
    TransactionQuery,
    TransactionSchema,
    WalletSchema,
)
from wallet import errors
from wallet.identity import recipients
from wallet.ledger import bulk, history, lifecycle
from wallet.operations import fx

TAG = "Transactions"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class OperationSchema(MoneySchema):
    operation_type = Text(required=True, validate=validate.OneOf(["DEPOSIT", "WITHDRAW"]))


class PayToSchema(MoneySchema):
    """Money from one of the caller's wallets to one recipient: a transfer, an item of a batch."""

    RECIPIENTS = ("to_wallet_id", "to_wallet_number", "to_username", "to_phone", "to_email")
    json_schema = one_of_required(RECIPIENTS)

    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = WalletNumber()
    to_username = Username()
    to_phone = Phone()
    to_email = RecipientEmail(metadata={"description": "The recipient's e-mail: their wallet in the source currency."})

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.RECIPIENTS)


class TransferSchema(PayToSchema):
    WHAT = ("amount", "quote_id")
    json_schema = one_of_required(PayToSchema.RECIPIENTS, WHAT)

    amount = Amount(load_default=None, metadata={"description": "In the source currency; not with quote_id."})
    quote_id = fields.UUID(
        load_default=None,
        metadata={
            "description": "Execute this FX quote (POST /fx/quotes) instead of sending an amount: the recipient "
            "must be the quote's wallet, named by to_wallet_id or to_wallet_number."
        },
    )

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.RECIPIENTS)
        if data.get("amount") is None and data.get("quote_id") is None:
            raise ValidationError("Missing data for required field (or give quote_id).", "amount")
        exactly_one(data, self.WHAT)
        if data.get("quote_id") is not None and any(f in data for f in ("to_username", "to_phone", "to_email")):
            raise ValidationError("A quote names its recipient's wallet: give to_wallet_id or to_wallet_number.")
        if data.get("quote_id") is not None and data.get("metadata") is not None:
            raise ValidationError("Not (yet) with quote_id: a cross-currency transfer keeps no metadata.", "metadata")


class RecipientQuery(Schema):
    FIELDS = ("username", "phone", "email", "wallet_number")
    json_schema = one_of_required(FIELDS)

    username = Username()
    phone = Phone()
    email = Email()
    wallet_number = WalletNumber()
    currency = Currency(
        metadata={"description": "The wallet a transfer from this currency would reach (not with wallet_number)."}
    )

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.FIELDS)


class BatchItemSchema(PayToSchema):
    reference = Text(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "The client's name for this item, unique within the batch; its result carries it."},
    )


class TransferBatchRequestSchema(Schema):
    mode = Text(
        required=True,
        validate=validate.OneOf(bulk.MODES),
        metadata={"description": "atomic: all items complete or none does; independent: each item stands alone."},
    )
    items = fields.List(
        fields.Nested(BatchItemSchema), required=True, validate=validate.Length(min=1, max=bulk.MAX_ITEMS)
    )

    @validates_schema
    def unique_references(self, data: dict[str, Any], **kwargs: Any) -> None:
        seen: set[str] = set()
        for item in data.get("items") or ():
            if item["reference"] in seen:
                raise ValidationError(f"The reference {item['reference']!r} is used more than once.", "items")
            seen.add(item["reference"])


# ---- responses --------------------------------------------------------------------------------------------------


class RecipientSchema(Output):
    display_name = fields.String(metadata={"description": "The username, masked: bo•••h."})
    wallet_number_masked = fields.String(metadata={"description": "The last four digits: ••••2061."})
    currency = fields.String(validate=CURRENCY)


class ItemErrorSchema(Output):
    """An item's error, in the shape of every error."""

    error = fields.String()
    code = fields.String()
    details = fields.Dict(metadata={"description": "Per field, for VALIDATION_ERROR."})
    transaction_id = fields.UUID(metadata={"description": "The item's FAILED transaction, when it was recorded."})


class BatchItemResultSchema(Output):
    reference = fields.String()
    status = fields.String(validate=validate.OneOf(["COMPLETED", "FAILED"]))
    transaction = fields.Nested(TransactionSchema, allow_none=True)
    error = fields.Nested(ItemErrorSchema, allow_none=True)


class TransferBatchSchema(Output):
    id = fields.UUID(allow_none=True, metadata={"description": "null when an atomic batch was refused unrecorded."})
    mode = fields.String(validate=validate.OneOf(bulk.MODES))
    items = fields.List(fields.Nested(BatchItemResultSchema))


# ---- handlers ---------------------------------------------------------------------------------------------------


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
        """Send money to a wallet (by id or number), a username, a phone or an e-mail, in the source currency; or, with
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


class TransferBatchHandler(MoneyHandler):
    def body_limit(self) -> int:
        return self.rt.settings.max_batch_body_size

    @api(
        "createTransferBatch",
        {201: TransferBatchSchema},
        body=TransferBatchRequestSchema,
        idempotent=True,
        errors=(403,),
    )
    @requires("transfer")
    async def post(self) -> None:
        """Send up to 1,000 transfers from the caller's wallets under one Idempotency-Key (required).

        atomic: all complete or none does; a refused item fails the batch with 400 BATCH_FAILED, whose details is
        the batch with each item's error (BATCH_ABORTED for those refused only because another was). independent:
        201 with each item COMPLETED or FAILED on its own. Step-up applies to each currency's total of the batch.
        The body may be up to MAX_BATCH_BODY_SIZE.
        """
        data = self.load()
        key = self.idempotency_key()
        if key is None:
            raise errors.ValidationError({"Idempotency-Key": ["Required for a batch."]})
        items = [
            bulk.Item(
                i["reference"],
                i["from_wallet_id"],
                {k: v for k, v in i.items() if k.startswith("to_")},
                i["amount"],
                i["description"],
                i["metadata"],
            )
            for i in data["items"]
        ]
        try:
            outcome = await bulk.transfer_batch(self.rt, self.principal, data["mode"], items, key)
        except errors.BatchFailed as error:
            error.details = orjson.loads(TransferBatchSchema().render(error.details))
            raise
        if outcome.replayed:
            self.set_header("Idempotent-Replayed", "true")
        self.respond(outcome.body, 201)


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


class RecipientHandler(BaseHandler):
    @api("lookUpRecipient", {200: RecipientSchema}, query=RecipientQuery, errors=(404, 429))
    @requires("transfer")
    async def get(self) -> None:
        """Who a transfer would reach, before it is sent: an active user by username, phone, e-mail or wallet number
        (their oldest wallet in `currency`, or in any currency), with a masked name and wallet number; 404 for
        anyone else. At most 30 lookups per caller in 10 minutes (429 RATE_LIMITED with Retry-After), found or not."""
        query = self.query()
        field = next(name for name in RecipientQuery.FIELDS if name in query)
        found = await recipients.look_up(self.rt, self.principal, field, query[field], query.get("currency"))
        self.respond(found, 200)


routes = [
    (r"/api/v1/recipients", RecipientHandler),
    (r"/api/v1/wallets/([^/]+)/deposit", DepositHandler),
    (r"/api/v1/wallets/([^/]+)/withdraw", WithdrawHandler),
    (r"/api/v1/wallets/([^/]+)/operation", OperationHandler),
    (r"/api/v1/transfers", TransferHandler),
    (r"/api/v1/transfers/batch", TransferBatchHandler),
    (r"/api/v1/transactions", TransactionListHandler),
    (r"/api/v1/transactions/([^/]+)", TransactionHandler),
]
