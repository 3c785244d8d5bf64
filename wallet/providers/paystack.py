"""Paystack's HTTP API as far as the wallet needs it: initialize and verify a transaction (deposits), list banks,
resolve an account and register a transfer recipient (payout accounts), send and verify a transfer (payouts), and
webhook signatures."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import httpx

from settings import Settings
from wallet import errors

# What Paystack settles (https://paystack.com/docs/api/#supported-currency); each has two minor digits, as ours.
CURRENCIES = frozenset({"NGN", "GHS", "ZAR", "KES", "USD"})
# The longest one call may take, all told (connecting, sending, waiting for the answer).
TIMEOUT = 10.0
# The recipient type Paystack files a bank account under, per currency it pays out in.
RECIPIENT_TYPES = {"NGN": "nuban", "GHS": "ghipss", "ZAR": "basa", "KES": "kepss"}


class PaystackError(Exception):
    """Paystack could not be reached, timed out, or refused; the message says which (never the secret key)."""


class PaystackRefused(PaystackError):
    """Paystack answered with a refusal: with a 4xx `status` it did nothing (`duplicate` when it already knows the
    reference); a 5xx leaves that open."""

    def __init__(self, message: str, status: int, duplicate: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.duplicate = duplicate


@dataclass(frozen=True)
class Verified:
    """Paystack's word on one transaction: its status (success, failed, abandoned, ...) and what was paid."""

    status: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Transfer:
    """Paystack's word on one transfer: its status (pending, success, failed, reversed, ...), what it sends, and its
    code (TRF_...)."""

    status: str
    amount: int
    currency: str
    code: str | None


def parse_transfer(data: dict[str, Any]) -> Transfer:
    """A transfer as Paystack reports it (an answer's data, or a transfer.* webhook's)."""
    status, amount, currency, code = (data.get(k) for k in ("status", "amount", "currency", "transfer_code"))
    if not isinstance(status, str) or type(amount) is not int or not isinstance(currency, str):
        raise PaystackError("Paystack's transfer lacks a status, an amount or a currency.")
    return Transfer(status, amount, currency.upper(), code if isinstance(code, str) else None)


@dataclass(frozen=True)
class Recipient:
    """A transfer recipient Paystack registered: its code (RCP_...) and the bank's name for the bank."""

    code: str
    bank_name: str


def sign(secret_key: str, body: bytes) -> str:
    """The x-paystack-signature of a webhook body: hex HMAC-SHA512 of the raw bytes with the secret key."""
    return hmac.new(secret_key.encode(), body, hashlib.sha512).hexdigest()


def signature_valid(secret_key: str, body: bytes, signature: str | None) -> bool:
    return signature is not None and hmac.compare_digest(sign(secret_key, body), signature.strip().lower())


def configured(settings: Settings) -> bool:
    """Whether Paystack can be used here: the merchant's secret key (PAYSTACK_SECRET_KEY) is set."""
    return bool(settings.paystack_secret_key)


def client(settings: Settings) -> Paystack:
    """A client with the merchant's secret key (PAYSTACK_SECRET_KEY); 503 PROVIDER_NOT_CONFIGURED without one."""
    if not configured(settings):
        raise errors.ProviderNotConfigured()
    return Paystack(settings.paystack_secret_key, settings.paystack_base_url)


class Paystack:
    def __init__(self, secret_key: str, base_url: str) -> None:
        self._headers = {"Authorization": f"Bearer {secret_key}"}
        self._base_url = base_url.rstrip("/")

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            async with (
                asyncio.timeout(TIMEOUT),
                httpx.AsyncClient(base_url=self._base_url, headers=self._headers, timeout=TIMEOUT) as client,
            ):
                return await client.request(method, path, json=body, params=params)
        except (TimeoutError, httpx.TimeoutException):
            raise PaystackError("Paystack did not answer in time.") from None
        except httpx.HTTPError as error:
            raise PaystackError(f"Paystack could not be reached ({type(error).__name__}).") from None

    @staticmethod
    def _data(response: httpx.Response, kind: type = dict) -> Any:
        """The `data` of a successful answer (an object, or a list when `kind` says so)."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise PaystackError(f"Paystack answered {response.status_code} without a JSON object.")
        refused = payload.get("status") is not True or not isinstance(payload.get("data"), kind)
        if response.status_code not in (200, 201) or refused:
            message = str(payload.get("message") or "no message")[:200]
            duplicate = "duplicate" in message.lower()
            raise PaystackRefused(
                f"Paystack refused ({response.status_code}): {message}", response.status_code, duplicate
            )
        return payload["data"]

    async def initialize(
        self, *, email: str, amount: int, currency: str, reference: str, callback_url: str | None
    ) -> str:
        """Start a checkout for `amount` minor units; returns the page where the payer pays."""
        body = {"email": email, "amount": amount, "currency": currency, "reference": reference}
        if callback_url:
            body["callback_url"] = callback_url
        url = self._data(await self._call("POST", "/transaction/initialize", body)).get("authorization_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise PaystackError("Paystack answered without an authorization_url.")
        return url

    async def verify(self, reference: str) -> Verified | None:
        """What Paystack knows of a transaction; None when it knows no transaction by that reference."""
        response = await self._call("GET", f"/transaction/verify/{reference}")
        if response.status_code in (400, 404) and "not found" in response.text.lower():
            return None
        data = self._data(response)
        status, amount, currency = data.get("status"), data.get("amount"), data.get("currency")
        if not isinstance(status, str) or type(amount) is not int or not isinstance(currency, str):
            raise PaystackError("Paystack's verification lacks a status, an amount or a currency.")
        return Verified(status, amount, currency.upper())

    async def banks(self, currency: str) -> list[tuple[str, str]]:
        """The banks Paystack pays out to in `currency`: (code, name) pairs."""
        data = self._data(await self._call("GET", "/bank", params={"currency": currency}), list)
        banks = [(b.get("code"), b.get("name")) for b in data if isinstance(b, dict)]
        return [(code, name) for code, name in banks if isinstance(code, str) and isinstance(name, str)]

    async def resolve(self, account_number: str, bank_code: str) -> str | None:
        """The holder's name of a bank account; None when Paystack cannot resolve it (no such account)."""
        params = {"account_number": account_number, "bank_code": bank_code}
        response = await self._call("GET", "/bank/resolve", params=params)
        if response.status_code in (400, 404, 422):  # Paystack's "Could not resolve account name"
            return None
        name = self._data(response).get("account_name")
        if not isinstance(name, str) or not name.strip():
            raise PaystackError("Paystack resolved the account without a name.")
        return name.strip()

    async def create_recipient(self, *, name: str, account_number: str, bank_code: str, currency: str) -> Recipient:
        """Register a bank account as a transfer recipient (Paystack answers an account it knows with its recipient)."""
        body = {
            "type": RECIPIENT_TYPES[currency],
            "name": name,
            "account_number": account_number,
            "bank_code": bank_code,
            "currency": currency,
        }
        data = self._data(await self._call("POST", "/transferrecipient", body))
        code, details = data.get("recipient_code"), data.get("details")
        bank_name = details.get("bank_name") if isinstance(details, dict) else None
        if not isinstance(code, str) or not code:
            raise PaystackError("Paystack answered without a recipient_code.")
        return Recipient(code, bank_name if isinstance(bank_name, str) else "")

    async def transfer(
        self, *, amount: int, currency: str, recipient: str, reference: str, reason: str | None
    ) -> Transfer:
        """Send `amount` minor units from the merchant's balance to a recipient (RCP_...), known by `reference`.
        Raises PaystackRefused when Paystack answered and did nothing (with `duplicate` for a reference it knows)."""
        body: dict[str, Any] = {
            "source": "balance",
            "amount": amount,
            "currency": currency,
            "recipient": recipient,
            "reference": reference,
        }
        if reason:
            body["reason"] = reason
        return parse_transfer(self._data(await self._call("POST", "/transfer", body)))

    async def verify_transfer(self, reference: str) -> Transfer | None:
        """What Paystack knows of a transfer; None when it knows no transfer by that reference."""
        response = await self._call("GET", f"/transfer/verify/{reference}")
        if response.status_code in (400, 404) and "not found" in response.text.lower():
            return None
        return parse_transfer(self._data(response))
