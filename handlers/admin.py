"""Admin endpoints: find users, change their status, credit wallets, reverse transactions, read any history, audit,
the action log, the live server instances."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, admin_only, api, parse_uuid
from handlers.money import MoneyHandler
from handlers.schemas import (
    Amount,
    AmountSchema,
    Output,
    PageQuery,
    Text,
    TransactionListSchema,
    TransactionQuery,
    TransactionSchema,
    UserSchema,
    UtcDateTime,
    WalletListSchema,
)
from wallet.identity import accounts
from wallet.ledger import audit
from wallet.operations import admin, reversals
from wallet.platform import membership

TAG = "Admin"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class UserQuery(PageQuery):
    q = Text(load_default=None, validate=validate.Length(max=254))


class ActionQuery(PageQuery):
    target_user_id = fields.UUID()
    action = Text(validate=validate.OneOf(admin.ACTIONS))


class ReasonSchema(Schema):
    reason = Text(load_default=None, allow_none=True, validate=validate.Length(max=255))


class CreditSchema(AmountSchema, ReasonSchema):
    pass


class ReversalSchema(ReasonSchema):
    amount = Amount(load_default=None, metadata={"description": "Default: all of the transaction not yet reversed."})


# ---- responses --------------------------------------------------------------------------------------------------


class UserListSchema(Output):
    items = fields.List(fields.Nested(UserSchema))
    next_cursor = fields.String(allow_none=True)


class AdminActionSchema(Output):
    id = fields.UUID()
    admin_id = fields.UUID()
    admin_username = fields.String(allow_none=True, metadata={"description": "The admin who acted."})
    action = fields.String(validate=validate.OneOf(admin.ACTIONS))
    target_user_id = fields.UUID(allow_none=True)
    target_username = fields.String(allow_none=True, metadata={"description": "The user it was about, if any."})
    target_wallet_id = fields.UUID(allow_none=True)
    transaction_id = fields.UUID(allow_none=True)
    reason = fields.String(allow_none=True)
    details = fields.Dict()
    created_at = UtcDateTime()


class AdminActionListSchema(Output):
    items = fields.List(fields.Nested(AdminActionSchema))
    next_cursor = fields.String(allow_none=True)


class InstanceSchema(Output):
    id = fields.UUID()
    host = fields.String()
    pid = fields.Integer()
    version = fields.String()
    revision = fields.String()
    schema_revision = fields.String()
    key_fingerprint = fields.String(metadata={"description": "An HMAC under JWT_SECRET: equal keys, equal prints."})
    jobs = fields.List(
        fields.String(), metadata={"description": "The periodic jobs this process runs for the cluster."}
    )
    started_at = UtcDateTime()
    heartbeat_at = UtcDateTime()


class InstanceListSchema(Output):
    items = fields.List(fields.Nested(InstanceSchema))


class AuditSchema(Output):
    ok = fields.Boolean()
    wallets_checked = fields.Integer()
    transactions_checked = fields.Integer()
    mismatches = fields.List(fields.Dict())


# ---- handlers ------------------------------------------------------------------------------------------------


class AdminUserListHandler(BaseHandler):
    @api("listUsers", {200: UserListSchema}, query=UserQuery)
    @admin_only
    async def get(self) -> None:
        """Users, newest first; `q` finds a part of the username, e-mail or phone, ignoring case."""
        self.respond(await admin.list_users(self.rt, **self.query()), 200)


class AdminUserHandler(BaseHandler):
    @api("getUser", {200: UserSchema})
    @admin_only
    async def get(self, user_id: str) -> None:
        """Any user's account."""
        self.respond(await accounts.get_user(self.rt, parse_uuid(user_id, "user_id")), 200)


class AdminUserStatusHandler(BaseHandler):
    @api(
        "setUserStatus",
        {200: UserSchema},
        body=ReasonSchema,
        path={"action": {"type": "string", "enum": list(admin.TRANSITIONS)}},
    )
    @admin_only
    async def post(self, user_id: str, action: str) -> None:
        """Freeze, unfreeze, activate or deactivate a user (not oneself); logged with the optional reason.

        freeze: no deposits, withdrawals or transfers in or out (refusals are recorded FAILED, ACCOUNT_FROZEN).
        deactivate: every token of the user stops working and login answers 403 ACCOUNT_INACTIVE.
        A deactivated account comes back only with activate, a frozen one only with unfreeze.
        """
        data = self.load()
        user = await admin.change_status(
            self.rt, self.principal, parse_uuid(user_id, "user_id"), action, data["reason"]
        )
        self.respond(user, 200)


class AdminUserWalletsHandler(BaseHandler):
    @api("listUserWallets", {200: WalletListSchema})
    @admin_only
    async def get(self, user_id: str) -> None:
        """Any user's wallets and their total per currency (to find the wallet to credit)."""
        self.respond(await admin.user_wallets(self.rt, parse_uuid(user_id, "user_id")), 200)


class AdminUserTransactionsHandler(BaseHandler):
    @api("listUserTransactions", {200: TransactionListSchema}, query=TransactionQuery)
    @admin_only
    async def get(self, user_id: str) -> None:
        """Any user's transactions as they see them, with the filters and paging of GET /transactions."""
        listing = await admin.user_transactions(self.rt, parse_uuid(user_id, "user_id"), **self.query())
        self.respond(listing, 200)


class AdminCreditHandler(MoneyHandler):
    @api("creditWallet", {201: TransactionSchema}, body=CreditSchema, idempotent=True)
    @admin_only
    async def post(self, wallet_id: str) -> None:
        """Credit any user's wallet: a DEPOSIT initiated by the admin, logged with the optional reason."""
        data = self.load()
        outcome = await admin.credit(
            self.rt,
            self.principal,
            parse_uuid(wallet_id, "wallet_id"),
            data["amount"],
            data["description"],
            data["reason"],
            self.idempotency_key(),
        )
        self.respond_outcome(outcome)


class AdminReversalHandler(MoneyHandler):
    @api("reverseTransaction", {201: TransactionSchema}, body=ReversalSchema, idempotent=True, errors=(409,))
    @admin_only
    async def post(self, transaction_id: str) -> None:
        """Give back all or part of a COMPLETED deposit, withdrawal or transfer: a new REVERSAL transaction with
        `reverses` = the original, logged with the optional reason. Reversals of one transaction never add up to more
        than it (400 REVERSAL_EXCEEDED); if the wallet the money comes back from no longer has it available, the
        reversal is recorded FAILED (400 INSUFFICIENT_FUNDS). Not reversible (PENDING, FAILED, a reversal): 409
        NOT_REVERSIBLE. Freezes and daily limits do not apply."""
        data = self.load()
        outcome = await reversals.reverse(
            self.rt,
            self.principal,
            parse_uuid(transaction_id, "transaction_id"),
            data["amount"],
            data["reason"],
            self.idempotency_key(),
        )
        self.respond_outcome(outcome)


class AdminAuditHandler(BaseHandler):
    @api("auditLedger", {200: AuditSchema})
    @admin_only
    async def get(self) -> None:
        """Verify the ledger: each wallet's balance equals the sum of its entries, each transaction sums to zero."""
        self.respond(await audit.audit(self.rt), 200)


class AdminActionListHandler(BaseHandler):
    @api("listAdminActions", {200: AdminActionListSchema}, query=ActionQuery)
    @admin_only
    async def get(self) -> None:
        """The admin action log (who changed what, when and why), newest first."""
        self.respond(await admin.list_actions(self.rt, **self.query()), 200)


class AdminInstanceListHandler(BaseHandler):
    @api("listInstances", {200: InstanceListSchema})
    @admin_only
    async def get(self) -> None:
        """The live server processes of the cluster (a heartbeat within the last 20 s), oldest first."""
        self.respond(await membership.live_instances(self.rt), 200)


routes = [
    (r"/api/v1/admin/users", AdminUserListHandler),
    (r"/api/v1/admin/users/([^/]+)", AdminUserHandler),
    (rf"/api/v1/admin/users/([^/]+)/({'|'.join(admin.TRANSITIONS)})", AdminUserStatusHandler),
    (r"/api/v1/admin/users/([^/]+)/wallets", AdminUserWalletsHandler),
    (r"/api/v1/admin/users/([^/]+)/transactions", AdminUserTransactionsHandler),
    (r"/api/v1/admin/wallets/([^/]+)/deposit", AdminCreditHandler),
    (r"/api/v1/admin/transactions/([^/]+)/reverse", AdminReversalHandler),
    (r"/api/v1/admin/audit", AdminAuditHandler),
    (r"/api/v1/admin/actions", AdminActionListHandler),
    (r"/api/v1/admin/instances", AdminInstanceListHandler),
]
