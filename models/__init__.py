"""SQLAlchemy 2 declarative tables of the wallet server; nothing else lives here."""

from models.admin import AdminAction
from models.base import Base
from models.batches import TransferBatch
from models.events import Event, EventHead
from models.fx import FxQuote, FxRate, FxRateChange
from models.holds import Hold
from models.instances import Instance, SchemaPolicy
from models.keys import ApiKey
from models.ledger import DailyUsage, Entry, PendingTransaction, Transaction
from models.payment_requests import PaymentRequest
from models.payouts import Payout, PayoutAccount
from models.schedules import ScheduledOccurrence, ScheduledTransfer
from models.throttle import ThrottleCounter
from models.users import Session, TwoFactor, User, UserIdentity
from models.wallets import Wallet
from models.webhooks import Delivery, WebhookEndpoint

__all__ = [
    "AdminAction",
    "ApiKey",
    "Base",
    "DailyUsage",
    "Delivery",
    "Entry",
    "Event",
    "EventHead",
    "FxQuote",
    "FxRate",
    "FxRateChange",
    "Hold",
    "Instance",
    "PaymentRequest",
    "Payout",
    "PayoutAccount",
    "PendingTransaction",
    "ScheduledOccurrence",
    "ScheduledTransfer",
    "SchemaPolicy",
    "Session",
    "ThrottleCounter",
    "Transaction",
    "TransferBatch",
    "TwoFactor",
    "User",
    "UserIdentity",
    "Wallet",
    "WebhookEndpoint",
]
