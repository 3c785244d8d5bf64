"""Payouts to bank accounts: the banks Paystack pays out to, and the caller's payout accounts."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated, parse_uuid, recently_authenticated, requires
from handlers.field_types import CURRENCY, Currency, Text, UtcDateTime
from handlers.schemas import Output
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


routes = [
    (r"/api/v1/banks", BanksHandler),
    (r"/api/v1/payout-accounts", PayoutAccountListHandler),
    (r"/api/v1/payout-accounts/([^/]+)", PayoutAccountHandler),
]
