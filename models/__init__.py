"""SQLAlchemy 2 declarative tables of the wallet server; nothing else lives here."""

from models.admin import AdminAction
from models.base import Base
from models.events import Event, EventHead
from models.fx import FxQuote, FxRate, FxRateChange
from models.holds import Hold
from models.instances import Instance
from models.keys import ApiKey
from models.ledger import DailyUsage, Entry, PendingTransaction, Transaction
from models.payment_requests import PaymentRequest
from models.payouts import PayoutAccount
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
    "PayoutAccount",
    "PendingTransaction",
    "ScheduledOccurrence",
    "ScheduledTransfer",
    "Session",
    "ThrottleCounter",
    "Transaction",
    "TwoFactor",
    "User",
    "UserIdentity",
    "Wallet",
    "WebhookEndpoint",
]
