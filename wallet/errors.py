"""Domain errors: one small hierarchy, each with a machine code; handlers map them to HTTP statuses."""

from __future__ import annotations

from typing import Any


class WalletError(Exception):
    code = "INTERNAL_ERROR"
    message = "An unexpected error occurred."
    # Seconds after which trying again makes sense (the Retry-After header), for errors that pass.
    retry_after: int | None = None

    def __init__(
        self, message: str | None = None, *, details: dict[str, Any] | None = None, transaction_id: str | None = None
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.transaction_id = transaction_id


class Interrupted(WalletError):
    """The operation was abandoned and failed by recovery, so no retry of it can run any more; nothing moved."""

    code = "INTERRUPTED"
    message = "The operation was interrupted before it completed and nothing moved; send it again as a new request."


# 400: invalid input or a business rule refused
class InvalidRequest(WalletError):
    code = "VALIDATION_ERROR"
    message = "The request is invalid."


class ValidationError(InvalidRequest):
    """Per-field problems: details maps a field name to a list of messages."""

    def __init__(self, details: dict[str, Any], message: str = "Some fields are invalid.") -> None:
        super().__init__(message, details=details)


class InvalidJson(InvalidRequest):
    code = "INVALID_JSON"
    message = "The request body is not valid JSON."


class BusinessRuleError(InvalidRequest):
    """Refusals of a money operation; recorded as FAILED when they happen during execution."""


class InsufficientFunds(BusinessRuleError):
    code = "INSUFFICIENT_FUNDS"
    message = "The wallet balance is too low for this operation."


class DailyLimitExceeded(BusinessRuleError):
    code = "DAILY_LIMIT_EXCEEDED"
    message = "This operation would exceed your daily limit."


class CurrencyMismatch(BusinessRuleError):
    code = "CURRENCY_MISMATCH"
    message = "The wallets do not share a currency."


class SameWallet(BusinessRuleError):
    code = "SAME_WALLET"
    message = "A wallet cannot transfer to itself."


class BatchFailed(BusinessRuleError):
    """An atomic batch of transfers was refused as a whole: details carries the batch with each item's outcome."""

    code = "BATCH_FAILED"
    message = "The atomic batch was refused: nothing moved."


class BatchAborted(BusinessRuleError):
    """An item of an atomic batch that was not refused itself, but did not move because another item was."""

    code = "BATCH_ABORTED"
    message = "Not executed: another item of this atomic batch was refused."


class BalanceLimitExceeded(BusinessRuleError):
    code = "BALANCE_LIMIT_EXCEEDED"
    message = "The resulting balance would exceed the maximum a wallet may hold."


class HoldExceeded(BusinessRuleError):
    code = "HOLD_EXCEEDED"
    message = "The capture is more than what remains of the hold."


class ReversalExceeded(BusinessRuleError):
    code = "REVERSAL_EXCEEDED"
    message = "The reversal is more than what remains of the transaction to reverse."


class HoldNotActive(WalletError):
    code = "HOLD_NOT_ACTIVE"
    message = "The hold is no longer active (captured, voided or expired)."


class RequestNotOpen(WalletError):
    code = "REQUEST_NOT_OPEN"
    message = "The payment request is no longer open (paid, declined, cancelled or expired)."


class ScheduleNotActive(WalletError):
    code = "SCHEDULE_NOT_ACTIVE"
    message = "The scheduled transfer is finished or cancelled."


class NotReversible(WalletError):
    code = "NOT_REVERSIBLE"
    message = "Only a COMPLETED deposit, withdrawal or transfer can be reversed."


class SameCurrency(InvalidRequest):
    code = "SAME_CURRENCY"
    message = "Both wallets hold the same currency; send an ordinary transfer instead."


class FxRateUnavailable(InvalidRequest):
    code = "FX_RATE_UNAVAILABLE"
    message = "No exchange rate is set for this currency pair."


class QuoteExpired(BusinessRuleError):
    code = "QUOTE_EXPIRED"
    message = "The quote has expired or was already used; ask for a new one."


class QuoteMismatch(InvalidRequest):
    code = "QUOTE_MISMATCH"
    message = "The quote was made for other wallets."


class CurrencyNotSupported(InvalidRequest):
    code = "CURRENCY_NOT_SUPPORTED"
    message = "The payment provider does not take this currency."


class PayoutAccountInvalid(InvalidRequest):
    code = "PAYOUT_ACCOUNT_INVALID"
    message = "The bank could not resolve this account: check the bank and the account number."


# 401
class InvalidSignature(WalletError):
    """An incoming webhook whose signature does not verify (not a Bearer credential, so no challenge)."""

    code = "INVALID_SIGNATURE"
    message = "The signature is missing or invalid."


class AuthError(WalletError):
    code = "AUTHENTICATION_REQUIRED"
    message = "Authentication is required."


class InvalidToken(AuthError):
    code = "INVALID_TOKEN"
    message = "The token is invalid."


class TokenExpired(AuthError):
    code = "TOKEN_EXPIRED"
    message = "The token has expired."


class TokenRevoked(AuthError):
    code = "TOKEN_REVOKED"
    message = "The token has been revoked."


class InvalidCredentials(AuthError):
    code = "INVALID_CREDENTIALS"
    message = "Invalid credentials."


class MfaRequired(AuthError):
    """The password (or Google) was right and the account has two-factor sign-in on: the login continues at
    POST /auth/login/mfa with this short-lived token and a code; no session exists yet."""

    code = "MFA_REQUIRED"
    message = "Enter the code from your authenticator app (or a recovery code) to finish signing in."

    def __init__(self, mfa_token: str, expires_in: int) -> None:
        super().__init__(details={"expires_in": expires_in, "methods": ["code", "recovery_code"]})
        self.mfa_token = mfa_token


class InvalidApiKey(AuthError):
    code = "INVALID_API_KEY"
    message = "The API key is unknown, expired or revoked."


# 403
class Forbidden(WalletError):
    code = "FORBIDDEN"
    message = "You are not allowed to do this."


class AccountFrozen(Forbidden):
    code = "ACCOUNT_FROZEN"
    message = "The account is frozen."


class AccountInactive(Forbidden):
    code = "ACCOUNT_INACTIVE"
    message = "The account is inactive."


class StepUpRequired(Forbidden):
    """The action needs an authentication of this login within the last `max_age` seconds (POST /auth/step-up)."""

    code = "STEP_UP_REQUIRED"
    message = "Confirm it is you: authenticate again (POST /api/v1/auth/step-up) and repeat the request."

    def __init__(self, max_age: int, message: str | None = None) -> None:
        super().__init__(message, details={"max_age": max_age})


class TwoFactorRequired(Forbidden):
    """ADMIN_REQUIRE_2FA: an admin's login must have used a second factor before any admin route answers."""

    code = "TWO_FACTOR_REQUIRED"
    message = (
        "Administrators must use two-factor authentication: turn it on (POST /api/v1/users/me/2fa), then sign in "
        "again or step up with a code."
    )


# 404
class NotFound(WalletError):
    code = "NOT_FOUND"
    message = "Not found."


# 409
class AlreadyExists(WalletError):
    code = "ALREADY_EXISTS"
    message = "Already exists."


class LimitReached(WalletError):
    code = "LIMIT_REACHED"
    message = "A limit has been reached."


class ApiKeyRevoked(WalletError):
    code = "API_KEY_REVOKED"
    message = "This API key is revoked or already rolled over."


class IdempotencyInProgress(WalletError):
    code = "IDEMPOTENCY_IN_PROGRESS"
    message = "A request with this Idempotency-Key is still being processed."


# 422
class IdempotencyMismatch(WalletError):
    code = "IDEMPOTENCY_MISMATCH"
    message = "This Idempotency-Key was used with different parameters."


# 429
class RateLimited(WalletError):
    code = "RATE_LIMITED"
    message = "Too many attempts; try again later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# 502
class ProviderError(WalletError):
    """The payment provider is down, timed out or refused; the operation was recorded as FAILED."""

    code = "PROVIDER_ERROR"
    message = "The payment provider did not accept the payment."


# 503
class ServiceUnavailable(WalletError):
    code = "SERVICE_UNAVAILABLE"
    message = "A dependency is unavailable."
    retry_after = 1


class ProviderNotConfigured(ServiceUnavailable):
    code = "PROVIDER_NOT_CONFIGURED"
    message = "The payment provider is not configured on this server."


def recorded_failure(code: str | None, reason: str | None, transaction_id: str) -> WalletError:
    """Rebuild the error of a transaction recorded as FAILED, so a replay answers exactly like the first time."""
    classes = [
        InsufficientFunds,
        DailyLimitExceeded,
        CurrencyMismatch,
        SameWallet,
        BalanceLimitExceeded,
        HoldExceeded,
        ReversalExceeded,
        HoldNotActive,
        RequestNotOpen,
        QuoteExpired,
        AccountFrozen,
        AccountInactive,
        Forbidden,
        NotFound,
        InvalidRequest,
        Interrupted,
        ProviderError,
        ServiceUnavailable,
    ]
    cls = next((c for c in classes if c.code == code), WalletError)
    error = cls(reason)
    error.code = code or WalletError.code
    error.transaction_id = transaction_id
    return error
