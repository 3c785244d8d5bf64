"""Payouts to bank accounts: the banks Paystack pays out to, the caller's payout accounts, and the payouts (the
caller's, and every payout for an admin)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import (
    BaseHandler,
    admin_only,
    api,
    authenticated,
    parse_uuid,
    recently_authenticated,
    requires,
)
from handlers.field_types import CURRENCY, DECIMAL, Currency, Metadata, Text, UtcDateTime
from handlers.money import MoneyHandler
from handlers.schemas import MoneySchema, Output, PageQuery
from wallet.operations import payouts

TAG = "Payouts"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class BankQuery(Schema):
    currency = Currency(required=True, metadata={"description": "NGN, GHS, ZAR or KES (what Paystack pays out in)."})


class PayoutAccountCreateSchema(Schema):
    bank_code = Text(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9]{1,16}\Z", error="A bank code from GET /banks."),
        metadata={"description": "A `code` from GET /banks for this currency."},
    )
    account_number = Text(
        required=True,
        validate=validate.Regexp(r"^[0-9]{6,20}\Z", error="6 to 20 digits."),
        metadata={"description": "The account number at that bank (NUBAN: 10 digits)."},
    )
    currency = Currency(required=True)


class PayoutCreateSchema(MoneySchema):
    payout_account_id = fields.UUID(required=True, metadata={"description": "One of the caller's payout accounts."})


class PayoutQuery(PageQuery):
    wallet_id = fields.UUID()
    status = Text(validate=validate.OneOf(payouts.STATUSES))


class AdminPayoutQuery(PayoutQuery):
    user_id = fields.UUID()


# ---- responses --------------------------------------------------------------------------------------------------


class BankSchema(Output):
    code = fields.String()
    name = fields.String()


class BankListSchema(Output):
    items = fields.List(fields.Nested(BankSchema))


class PayoutAccountSchema(Output):
    id = fields.UUID()
    bank_code = fields.String()
    bank_name = fields.String()
    account_number_masked = fields.String(metadata={"description": "The account number's last 4 digits."})
    account_name = fields.String(metadata={"description": "The holder's name, as the bank resolved it."})
    currency = fields.String(validate=CURRENCY)
    created_at = UtcDateTime()


class PayoutAccountListSchema(Output):
    items = fields.List(fields.Nested(PayoutAccountSchema))


class PayoutSchema(Output):
    id = fields.UUID()
    wallet_id = fields.UUID()
    payout_account_id = fields.UUID()
    status = fields.String(
        validate=validate.OneOf(payouts.STATUSES),
        metadata={
            "description": "PENDING until Paystack's word; COMPLETED (sent: the hold captured as a WITHDRAWAL), "
            "FAILED (nothing left: the hold released), REVERSED (sent, then returned: credited back as a REVERSAL)."
        },
    )
    amount = fields.String(validate=DECIMAL)
    currency = fields.String(validate=CURRENCY)
    description = fields.String(allow_none=True)
    metadata = Metadata()
    hold_id = fields.UUID(metadata={"description": "The hold that reserves the amount while PENDING."})
    transaction_id = fields.UUID(allow_none=True, metadata={"description": "The WITHDRAWAL, once sent."})
    reversal_transaction_id = fields.UUID(
        allow_none=True, metadata={"description": "The REVERSAL that credited a returned payout back."}
    )
    provider_reference = fields.String(metadata={"description": "The reference Paystack knows the transfer by."})
    failure_code = fields.String(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    created_at = UtcDateTime()
    updated_at = UtcDateTime()
    completed_at = UtcDateTime(allow_none=True)


class PayoutListSchema(Output):
    items = fields.List(fields.Nested(PayoutSchema))
    next_cursor = fields.String(allow_none=True)


class AdminPayoutSchema(PayoutSchema):
    user_id = fields.UUID()
    provider_status = fields.String(allow_none=True, metadata={"description": "Paystack's last word on the transfer."})
    transfer_code = fields.String(allow_none=True, metadata={"description": "Paystack's code for it (TRF_...)."})
    sent_at = UtcDateTime(allow_none=True, metadata={"description": "When Paystack acknowledged the transfer."})


class AdminPayoutListSchema(Output):
    items = fields.List(fields.Nested(AdminPayoutSchema))
    next_cursor = fields.String(allow_none=True)


class BanksHandler(BaseHandler):
    @api("listBanks", {200: BankListSchema}, query=BankQuery, errors=(502, 503))
    @requires("read")
    async def get(self) -> None:
        """The banks Paystack pays out to in a currency (kept an hour by each server process); 400
        CURRENCY_NOT_SUPPORTED for a currency Paystack does not pay out in."""
        self.respond(await payouts.list_banks(self.rt, self.query()["currency"]), 200)


class PayoutAccountListHandler(BaseHandler):
    @api("createPayoutAccount", {201: PayoutAccountSchema}, body=PayoutAccountCreateSchema, errors=(403, 409, 502, 503))
    @recently_authenticated
    async def post(self) -> None:
        """Add a bank account to pay out to: Paystack resolves the holder's name and registers it as a transfer
        recipient. 400 PAYOUT_ACCOUNT_INVALID when the bank cannot resolve it; a login that authenticated within
        STEP_UP_WINDOW only (money leaves to it). Adding the same account again answers the one there is."""
        data = self.load()
        account = await payouts.add_account(
            self.rt, self.principal, data["bank_code"], data["account_number"], data["currency"]
        )
        self.respond(account, 201)

    @api("listPayoutAccounts", {200: PayoutAccountListSchema})
    @requires("read")
    async def get(self) -> None:
        """The caller's payout accounts, oldest first."""
        self.respond(await payouts.list_accounts(self.rt, self.principal), 200)


class PayoutAccountHandler(BaseHandler):
    @api("deletePayoutAccount", {204: None}, errors=(403,))
    @authenticated
    async def delete(self, account_id: str) -> None:
        """Stop paying out to one of the caller's accounts."""
        await payouts.delete_account(self.rt, self.principal, parse_uuid(account_id, "payout_account_id"))
        self.respond(None, 204)


class WalletPayoutHandler(MoneyHandler):
    @api("createPayout", {201: PayoutSchema}, body=PayoutCreateSchema, idempotent=True, errors=(403, 404, 409, 503))
    @requires("withdraw")
    async def post(self, wallet_id: str) -> None:
        """Pay out to one of the caller's bank accounts: the amount is held at once (within the daily withdrawal
        limit), and Paystack is asked to send it; the payout stays PENDING until Paystack's word captures the hold
        (COMPLETED) or releases it (FAILED). 201 also when Paystack refused at once (FAILED, PROVIDER_REFUSED)."""
        data = self.load()
        self.step_up_above(data["amount"])
        payout, replayed = await payouts.create(
            self.rt,
            self.principal,
            parse_uuid(wallet_id, "wallet_id"),
            data["payout_account_id"],
            data["amount"],
            data["description"],
            data["metadata"],
            self.idempotency_key(),
        )
        if replayed:
            self.set_header("Idempotent-Replayed", "true")
        self.respond(payout, 201)


class PayoutListHandler(BaseHandler):
    @api("listPayouts", {200: PayoutListSchema}, query=PayoutQuery)
    @requires("read")
    async def get(self) -> None:
        """The caller's payouts, newest first, filtered by wallet and status."""
        self.respond(await payouts.list_payouts(self.rt, self.principal, **self.query()), 200)


class PayoutHandler(BaseHandler):
    @api("getPayout", {200: PayoutSchema})
    @requires("read")
    async def get(self, payout_id: str) -> None:
        """One of the caller's payouts."""
        self.respond(await payouts.get_payout(self.rt, self.principal, parse_uuid(payout_id, "payout_id")), 200)


class AdminPayoutListHandler(BaseHandler):
    @api("listAllPayouts", {200: AdminPayoutListSchema}, query=AdminPayoutQuery)
    @admin_only
    async def get(self) -> None:
        """Every payout (or one user's), newest first, with Paystack's status of its transfer."""
        self.respond(await payouts.list_payouts(self.rt, None, **self.query()), 200)


routes = [
    (r"/api/v1/wallets/([^/]+)/payouts", WalletPayoutHandler),
    (r"/api/v1/payouts", PayoutListHandler),
    (r"/api/v1/payouts/([^/]+)", PayoutHandler),
    (r"/api/v1/admin/payouts", AdminPayoutListHandler),
    (r"/api/v1/banks", BanksHandler),
    (r"/api/v1/payout-accounts", PayoutAccountListHandler),
    (r"/api/v1/payout-accounts/([^/]+)", PayoutAccountHandler),
]
