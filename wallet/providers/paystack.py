"""Paystack's HTTP API as far as deposits need it: initialize and verify a transaction, and webhook signatures."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import httpx

# What Paystack settles (https://paystack.com/docs/api/#supported-currency); each has two minor digits, as ours.
CURRENCIES = frozenset({"NGN", "GHS", "ZAR", "KES", "USD"})
# The longest one call may take, all told (connecting, sending, waiting for the answer).
TIMEOUT = 10.0


class PaystackError(Exception):
    """Paystack could not be reached, timed out, or refused; the message says which (never the secret key)."""


@dataclass(frozen=True)
class Verified:
    """Paystack's word on one transaction: its status (success, failed, abandoned, ...) and what was paid."""

    status: str
    amount: int
    currency: str


def sign(secret_key: str, body: bytes) -> str:
    """The x-paystack-signature of a webhook body: hex HMAC-SHA512 of the raw bytes with the secret key."""
    return hmac.new(secret_key.encode(), body, hashlib.sha512).hexdigest()


def signature_valid(secret_key: str, body: bytes, signature: str | None) -> bool:
    return signature is not None and hmac.compare_digest(sign(secret_key, body), signature.strip().lower())


class Paystack:
    def __init__(self, secret_key: str, base_url: str) -> None:
        self._headers = {"Authorization": f"Bearer {secret_key}"}
        self._base_url = base_url.rstrip("/")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            async with (
                asyncio.timeout(TIMEOUT),
                httpx.AsyncClient(base_url=self._base_url, headers=self._headers, timeout=TIMEOUT) as client,
            ):
                return await client.request(method, path, json=body)
        except (TimeoutError, httpx.TimeoutException):
            raise PaystackError("Paystack did not answer in time.") from None
        except httpx.HTTPError as error:
            raise PaystackError(f"Paystack could not be reached ({type(error).__name__}).") from None

    @staticmethod
    def _data(response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise PaystackError(f"Paystack answered {response.status_code} without a JSON object.")
        refused = payload.get("status") is not True or not isinstance(payload.get("data"), dict)
        if response.status_code != 200 or refused:
            message = str(payload.get("message") or "no message")[:200]
            raise PaystackError(f"Paystack refused ({response.status_code}): {message}")
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
