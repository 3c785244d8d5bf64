"""Payment request endpoints: ask someone for money, list and read requests, pay, decline or cancel one; the link
to a request's page in the web wallet with its QR code."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates_schema

from handlers.base import BaseHandler, api, authenticated, parse_uuid, requires
from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    Currency,
    Email,
    Metadata,
    Phone,
    Text,
    Username,
    UtcDateTime,
    WalletNumber,
    exactly_one,
    one_of_required,
)
from handlers.money import MoneyHandler
from handlers.schemas import AmountSchema, Output, PageLinkSchema, PageQuery, TransactionSchema
from handlers.webapp import page_link
from wallet.operations import payment_requests

TAG = "Payment requests"  # the OpenAPI tag of this module's operations

STATUSES = ("OPEN", "PAID", "DECLINED", "CANCELLED", "EXPIRED")

# ---- requests ---------------------------------------------------------------------------------------------------


class PaymentRequestCreateSchema(AmountSchema):
    RECIPIENTS = ("to_username", "to_phone", "to_email", "to_wallet_number")
    json_schema = one_of_required(RECIPIENTS)

    to_username = Username()
    to_phone = Phone()
    to_email = Email()
    to_wallet_number = WalletNumber()
    currency = Currency(required=True)
    expires_in = fields.Integer(
        load_default=604800,
        strict=True,
        validate=validate.Range(min=60, max=30 * 86400),
        metadata={"description": "Seconds until the request expires (default 7 days, at most 30)."},
    )

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.RECIPIENTS)


class PaySchema(Schema):
    from_wallet_id = fields.UUID(required=True, metadata={"description": "The payer's wallet, in the currency."})
    metadata = Metadata(load_default=None)


class PaymentRequestQuery(PageQuery):
    role = Text(
        validate=validate.OneOf(("payer", "payee")),
        metadata={"description": "payer: requests the caller is asked to pay; payee: the caller's own. Default both."},
    )
    status = Text(validate=validate.OneOf(STATUSES))


# ---- responses --------------------------------------------------------------------------------------------------


class PayeeSchema(Output):
    username = fields.String()
    wallet_number = fields.String()


class PayerSchema(Output):
    username = fields.String()


class PaymentRequestSchema(Output):
    id = fields.UUID()
    payee = fields.Nested(PayeeSchema, metadata={"description": "Who asks, and the wallet the money goes to."})
    payer = fields.Nested(PayerSchema, metadata={"description": "Who is asked to pay."})
    amount = fields.String(validate=DECIMAL)
    currency = fields.String(validate=CURRENCY)
    description = fields.String(allow_none=True)
    status = fields.String(
        validate=validate.OneOf(STATUSES), metadata={"description": "EXPIRED as soon as expires_at has passed."}
    )
    transaction_id = fields.UUID(allow_none=True, metadata={"description": "The transfer that paid it."})
    expires_at = UtcDateTime()
    created_at = UtcDateTime()


class PaymentRequestListSchema(Output):
    items = fields.List(fields.Nested(PaymentRequestSchema))
    next_cursor = fields.String(allow_none=True)


class PaymentRequestListHandler(BaseHandler):
    @api("createPaymentRequest", {201: PaymentRequestSchema}, body=PaymentRequestCreateSchema, errors=(404,))
    @requires("transfer")
    async def post(self) -> None:
        """Ask a user (by username, phone, e-mail or wallet number) for an amount, to be paid into the caller's
        oldest wallet in that currency (400 CURRENCY_MISMATCH if the caller has none)."""
        data = self.load()
        recipient = {k: v for k, v in data.items() if k.startswith("to_")}
        created = await payment_requests.create(
            self.rt,
            self.principal,
            recipient,
            data["amount"],
            data["currency"],
            data["description"],
            data["expires_in"],
        )
        self.respond(created, 201)

    @api("listPaymentRequests", {200: PaymentRequestListSchema}, query=PaymentRequestQuery)
    @requires("read")
    async def get(self) -> None:
        """The requests the caller is asked to pay or asked for, newest first, by role and status."""
        self.respond(await payment_requests.list_requests(self.rt, self.principal, **self.query()), 200)


class PaymentRequestHandler(BaseHandler):
    @api("getPaymentRequest", {200: PaymentRequestSchema})
    @requires("read")
    async def get(self, request_id: str) -> None:
        """One request the caller pays or asked for."""
        self.respond(
            await payment_requests.get_request(self.rt, self.principal, parse_uuid(request_id, "request_id")), 200
        )


class PaymentRequestLinkHandler(BaseHandler):
    @api("getPaymentRequestLink", {200: PageLinkSchema})
    @authenticated
    async def get(self, request_id: str) -> None:
        """The link to a request's page in the web wallet (`/#/pay/{id}`, where the payer pays it) and its QR code, for
        the payee to show; the payer may read it too. A login session only: it is for a person's screen."""
        found = await payment_requests.get_request(self.rt, self.principal, parse_uuid(request_id, "request_id"))
        self.respond(page_link(self.request, f"/pay/{found['id']}"), 200)


class PaymentRequestPayHandler(MoneyHandler):
    @api("payPaymentRequest", {201: TransactionSchema}, body=PaySchema, idempotent=True, errors=(403, 404, 409))
    @requires("transfer")
    async def post(self, request_id: str) -> None:
        """The payer pays an open request: a transfer of its amount to the payee, linked to the request. Exactly one
        pay ever completes; any other (a repeat with another key, a race) is recorded FAILED with REQUEST_NOT_OPEN."""
        data = self.load()
        outcome = await payment_requests.pay(
            self.rt,
            self.principal,
            parse_uuid(request_id, "request_id"),
            data["from_wallet_id"],
            self.idempotency_key(),
            data["metadata"],
        )
        self.respond_outcome(outcome)


class PaymentRequestDeclineHandler(BaseHandler):
    @api("declinePaymentRequest", {200: PaymentRequestSchema}, errors=(403, 409))
    @requires("transfer")
    async def post(self, request_id: str) -> None:
        """The payer refuses an open request."""
        self.respond(await payment_requests.decline(self.rt, self.principal, parse_uuid(request_id, "request_id")), 200)


class PaymentRequestCancelHandler(BaseHandler):
    @api("cancelPaymentRequest", {200: PaymentRequestSchema}, errors=(403, 409))
    @requires("transfer")
    async def post(self, request_id: str) -> None:
        """The payee withdraws an open request."""
        self.respond(await payment_requests.cancel(self.rt, self.principal, parse_uuid(request_id, "request_id")), 200)


routes = [
    (r"/api/v1/payment-requests", PaymentRequestListHandler),
    (r"/api/v1/payment-requests/([^/]+)", PaymentRequestHandler),
    (r"/api/v1/payment-requests/([^/]+)/link", PaymentRequestLinkHandler),
    (r"/api/v1/payment-requests/([^/]+)/pay", PaymentRequestPayHandler),
    (r"/api/v1/payment-requests/([^/]+)/decline", PaymentRequestDeclineHandler),
    (r"/api/v1/payment-requests/([^/]+)/cancel", PaymentRequestCancelHandler),
]
