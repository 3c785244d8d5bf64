"""Provider deposits: start a Paystack checkout, read a deposit by its reference, and Paystack's webhook."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, parse_uuid, requires
from handlers.field_types import (
    Amount,
)
from handlers.money import MoneyHandler
from handlers.schemas import (
    HealthSchema,
    Output,
    TransactionSchema,
)
from wallet.operations import deposits, payouts

TAG = "Paystack"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class PaystackDepositSchema(Schema):
    amount = Amount(required=True)
    callback_url = fields.Url(
        load_default=None,
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=1024),
        metadata={"description": "Where Paystack sends the payer after paying (default: PAYSTACK_CALLBACK_URL)."},
    )


# ---- responses --------------------------------------------------------------------------------------------------


class CheckoutSchema(Output):
    transaction = fields.Nested(TransactionSchema)
    reference = fields.String(metadata={"description": "The deposit's reference at Paystack (ours)."})
    authorization_url = fields.String(metadata={"description": "Paystack's page where the payer pays."})


REFERENCE = {"type": "string", "maxLength": 64, "description": "The `reference` its checkout answered."}


class PaystackDepositHandler(MoneyHandler):
    @api(
        "createPaystackDeposit",
        {201: CheckoutSchema},
        body=PaystackDepositSchema,
        idempotent=True,
        errors=(403, 502, 503),
    )
    @requires("deposit")
    async def post(self, wallet_id: str) -> None:
        """Start a deposit paid through Paystack: answers the checkout page to send the payer to.

        The deposit stays PENDING until Paystack confirms the payment (webhook, or a verify); 503
        PROVIDER_NOT_CONFIGURED without PAYSTACK_SECRET_KEY, 502 PROVIDER_ERROR (the deposit FAILED) when Paystack
        is down or refuses, 400 CURRENCY_NOT_SUPPORTED for a currency Paystack does not take.
        """
        data = self.load()
        checkout = await deposits.initialize(
            self.rt,
            self.principal,
            parse_uuid(wallet_id, "wallet_id"),
            data["amount"],
            data["callback_url"],
            self.idempotency_key(),
        )
        if checkout["replayed"]:
            self.set_header("Idempotent-Replayed", "true")
        self.respond(checkout, 201)


class ProviderDepositHandler(BaseHandler):
    @api("getProviderDeposit", {200: TransactionSchema}, path={"reference": REFERENCE})
    @requires("read")
    async def get(self, reference: str) -> None:
        """One of the caller's provider deposits; while PENDING, Paystack is asked first and its answer applied."""
        self.respond(await deposits.get_deposit(self.rt, self.principal, reference), 200)


class PaystackWebhookHandler(BaseHandler):
    @api("receivePaystackWebhook", {200: HealthSchema}, errors=(400, 401, 413, 503))
    async def post(self) -> None:
        """Paystack's events, authenticated by `x-paystack-signature` (HMAC-SHA512 of the raw body) alone.

        Any correctly signed event answers 200 {"status": "ok"}; `charge.success` for a PENDING deposit with the same
        amount and currency credits it once; `transfer.success`, `transfer.failed` and `transfer.reversed` settle the
        payout with that reference once (docs/payouts.md). 401 INVALID_SIGNATURE when the signature is missing or
        wrong, 400 when a signed body is not a JSON object or a `charge.success` or `transfer.*` event lacks its
        reference, amount or currency.
        """
        event = deposits.signed_event(self.rt, self.raw_body(), self.request.headers.get("x-paystack-signature"))
        if event.get("event") == "charge.success":
            await deposits.receive_charge(self.rt, event)
        elif event.get("event") in payouts.TRANSFER_EVENTS:
            await payouts.receive_event(self.rt, event)
        self.respond({"status": "ok"}, 200)


routes = [
    (r"/api/v1/wallets/([^/]+)/deposits/paystack", PaystackDepositHandler),
    (r"/api/v1/deposits/([^/]+)", ProviderDepositHandler),
    (r"/api/v1/webhooks/paystack", PaystackWebhookHandler),
]
