"""A fake Paystack: a real local HTTP server speaking the part of Paystack's API the wallet uses, for tests and demos.

    python -m scripts.fake_paystack --port 8100 --secret-key sk_test_local \\
        --webhook-url http://127.0.0.1:8000/api/v1/webhooks/paystack

Paystack's side: POST /transaction/initialize and GET /transaction/verify/{reference} (Bearer secret key), and the
checkout page GET /pay/{reference} whose "Pay" button (POST /pay/{reference}) marks the payment successful and sends
the signed `charge.success` webhook. GET /_fake/transactions/{reference} shows a payment as the fake holds it, with
how many times it was verified (`verify_calls`).

Transfers (payouts), the same Bearer key: GET /bank?currency= lists the banks (a fixed few per currency);
GET /bank/resolve?account_number=&bank_code= names an account (any 10 digits except 0000000000, which no bank
knows); POST /transferrecipient makes a recipient (RCP_...); POST /transfer {amount, recipient, reference, currency,
reason} queues a transfer (a reference seen before is refused: "Duplicate Transfer Reference") that then ends as
`transfer_outcome` says, with its signed `transfer.success` / `transfer.failed` / `transfer.reversed` webhook;
GET /transfer/verify/{reference} tells its status. POST /_fake/transfers/{reference}?outcome=success|failed|reversed
ends (or reverses) a transfer by hand and sends its webhook; GET /_fake/transfers/{reference} shows one with how
many times it was sent (`transfer_calls`) and verified (`verify_calls`). GET /_fake/calls counts the API calls per
path.

Switches, to simulate what goes wrong: GET /_fake/config shows them and POST /_fake/config {...} sets them (every
switch not named goes back to its default):

    initialize_status  answer initialize with this HTTP status and {"status": false} (0: work normally)
    verify_status      the same for verify (of payments and of transfers)
    transfer_status    the same for POST /transfer (nothing is queued)
    recipient_status   the same for POST /transferrecipient (nothing is registered)
    delay              seconds to wait before answering any API call (longer than the client's timeout simulates a
                       timeout; a transfer is still queued once the wait is over, as at a real provider)
    transfer_outcome   how a queued transfer ends: success, failed, reversed, or pending (until ended by hand)
    webhook            send the webhook when paid or a transfer ends (false: it is lost; verify still tells the truth)
    duplicates         how many copies of the webhook to send, all at once
    webhook_delay      seconds between the payment and the webhook
    amount_delta       added to the amount Paystack reports (webhook and verify): a wrong amount
    currency           a currency to report instead of the one asked for
    webhook_url        where webhooks go
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import secrets
import signal
from collections import Counter
from typing import Any

from tornado import httpclient, web
from tornado.httpserver import HTTPServer

from wallet.providers.paystack import sign

DEFAULTS: dict[str, Any] = {
    "initialize_status": 0,
    "verify_status": 0,
    "delay": 0.0,
    "webhook": True,
    "duplicates": 1,
    "webhook_delay": 0.0,
    "amount_delta": 0,
    "currency": None,
    "webhook_url": None,
    "transfer_status": 0,
    "recipient_status": 0,
    "transfer_outcome": "success",
}
TRANSFER_OUTCOMES = frozenset({"success", "failed", "reversed", "pending"})
# The banks the fake knows per currency: (code, name).
BANKS = {
    "NGN": [("044", "Access Bank"), ("058", "Guaranty Trust Bank"), ("057", "Zenith Bank")],
    "GHS": [("280100", "Access Bank Ghana"), ("300304", "GCB Bank")],
    "KES": [("68", "Equity Bank Kenya"), ("01", "Kenya Commercial Bank")],
    "ZAR": [("632005", "Absa Bank"), ("470010", "Capitec Bank")],
    "USD": [],
}
BANK_NAMES = {code: name for banks in BANKS.values() for code, name in banks}
UNKNOWN_ACCOUNT = "0000000000"


class State:
    def __init__(self, secret_key: str, webhook_url: str | None) -> None:
        self.secret_key = secret_key
        self.config = {**DEFAULTS, "webhook_url": webhook_url}
        self.transactions: dict[str, dict[str, Any]] = {}
        self.recipients: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()

    def reported(self, tx: dict[str, Any]) -> dict[str, Any]:
        """A transaction as Paystack reports it in verify and webhooks (with the configured distortions)."""
        return {
            "id": tx["id"],
            "domain": "test",
            "status": tx["status"],
            "reference": tx["reference"],
            "amount": tx["amount"] + self.config["amount_delta"],
            "currency": self.config["currency"] or tx["currency"],
            "gateway_response": "Successful" if tx["status"] == "success" else "The transaction was not completed",
            "paid_at": tx.get("paid_at"),
            "channel": "card",
            "customer": {"email": tx["email"]},
        }


class Handler(web.RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def refuse(self, status: int, message: str) -> None:
        self.answer(status, {"status": False, "message": message})

    async def deliver(self, body: bytes) -> int:
        request = httpclient.HTTPRequest(
            self.state.config["webhook_url"],
            method="POST",
            body=body,
            headers={"Content-Type": "application/json", "x-paystack-signature": sign(self.state.secret_key, body)},
            request_timeout=30,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError):  # the wallet is down or silent: lost, as at Paystack
            return 599
        return response.code

    async def notify(self, event: str, data: dict[str, Any]) -> list[int]:
        """Send a signed webhook (`duplicates` copies at once, after `webhook_delay`) unless webhooks are off;
        answers what each delivery got back (599: no answer)."""
        if not (self.state.config["webhook"] and self.state.config["webhook_url"]):
            return []
        await asyncio.sleep(self.state.config["webhook_delay"])
        body = json.dumps({"event": event, "data": data}).encode()
        return list(await asyncio.gather(*(self.deliver(body) for _ in range(self.state.config["duplicates"]))))

    async def authorized(self) -> bool:
        if self.request.headers.get("Authorization") != f"Bearer {self.state.secret_key}":
            self.refuse(401, "Invalid key")
            return False
        self.state.calls[self.request.path] += 1
        await asyncio.sleep(self.state.config["delay"])
        return True

    async def admitted(self, failure: str) -> bool:
        """authorized(), and the switch `failure` (an HTTP status, 0 for none) does not make this call fail."""
        if not await self.authorized():
            return False
        if self.state.config[failure]:
            self.refuse(self.state.config[failure], "Simulated failure")
            return False
        return True


class InitializeHandler(Handler):
    async def post(self) -> None:
        if not await self.admitted("initialize_status"):
            return
        try:
            body = json.loads(self.request.body)
            amount, email, reference = int(body["amount"]), str(body["email"]), str(body["reference"])
        except (ValueError, KeyError, TypeError):
            self.refuse(400, "amount, email and reference are required")
            return
        if reference in self.state.transactions:
            self.refuse(400, "Duplicate Transaction Reference")
            return
        self.state.transactions[reference] = {
            "id": len(self.state.transactions) + 1,
            "reference": reference,
            "amount": amount,
            "currency": body.get("currency", "NGN"),
            "email": email,
            "callback_url": body.get("callback_url"),
            "status": "abandoned",  # what Paystack reports until the customer pays
            "verify_calls": 0,
        }
        access_code = secrets.token_hex(8)
        url = f"{self.request.protocol}://{self.request.host}/pay/{reference}"
        self.answer(
            200,
            {
                "status": True,
                "message": "Authorization URL created",
                "data": {"authorization_url": url, "access_code": access_code, "reference": reference},
            },
        )


class VerifyHandler(Handler):
    async def get(self, reference: str) -> None:
        if not await self.admitted("verify_status"):
            return
        tx = self.state.transactions.get(reference)
        if tx is None:
            self.refuse(400, "Transaction reference not found")
            return
        tx["verify_calls"] += 1
        self.answer(200, {"status": True, "message": "Verification successful", "data": self.state.reported(tx)})


class PayHandler(Handler):
    def get(self, reference: str) -> None:
        tx = self.state.transactions.get(reference)
        if tx is None:
            raise web.HTTPError(404)
        ref = html.escape(reference)
        self.finish(
            f"<!doctype html><title>Fake Paystack</title><h1>Pay {tx['amount']} (minor units) {tx['currency']}</h1>"
            f'<form method="post" action="/pay/{ref}"><button>Pay</button></form>'
            f'<form method="post" action="/pay/{ref}?outcome=failed"><button>Decline</button></form>'
        )

    async def post(self, reference: str) -> None:
        """Pay (or with ?outcome=failed, decline); answers what the webhook deliveries got back."""
        tx = self.state.transactions.get(reference)
        if tx is None:
            self.refuse(404, "Transaction reference not found")
            return
        tx["status"] = self.get_query_argument("outcome", "success")
        tx["paid_at"] = "2026-01-01T00:00:00.000Z"
        deliveries: list[int] = []
        if tx["status"] == "success":
            deliveries = await self.notify("charge.success", self.state.reported(tx))
        if tx.get("callback_url") and "text/html" in self.request.headers.get("Accept", ""):
            self.redirect(f"{tx['callback_url']}?reference={reference}")
            return
        self.answer(200, {"status": tx["status"], "reference": reference, "webhook_statuses": deliveries})


class TransactionHandler(Handler):
    def get(self, reference: str) -> None:
        tx = self.state.transactions.get(reference)
        if tx is None:
            self.refuse(404, "Transaction reference not found")
            return
        self.answer(200, tx)


class BanksHandler(Handler):
    async def get(self) -> None:
        if not await self.authorized():
            return
        currency = self.get_query_argument("currency", "NGN").upper()
        banks = [
            {"id": i, "name": name, "slug": name.lower().replace(" ", "-"), "code": code, "active": True,
             "currency": currency, "type": "nuban"}
            for i, (code, name) in enumerate(BANKS.get(currency, []), 1)
        ]  # fmt: skip
        self.answer(200, {"status": True, "message": "Banks retrieved", "data": banks})


class ResolveHandler(Handler):
    async def get(self) -> None:
        if not await self.authorized():
            return
        number = self.get_query_argument("account_number", "")
        bank = self.get_query_argument("bank_code", "")
        if bank not in BANK_NAMES or len(number) != 10 or not number.isdigit() or number == UNKNOWN_ACCOUNT:
            self.refuse(422, "Could not resolve account name. Check parameters or try again.")
            return
        name = f"TEST ACCOUNT {number[-4:]}"
        self.answer(
            200,
            {
                "status": True,
                "message": "Account number resolved",
                "data": {"account_number": number, "account_name": name},
            },
        )


class RecipientHandler(Handler):
    async def post(self) -> None:
        if not await self.admitted("recipient_status"):
            return
        try:
            body = json.loads(self.request.body)
            details = {
                "account_number": str(body["account_number"]),
                "account_name": str(body["name"]),
                "bank_code": str(body["bank_code"]),
                "bank_name": BANK_NAMES[str(body["bank_code"])],
            }
        except (ValueError, KeyError, TypeError):
            self.refuse(400, "name, account_number and a known bank_code are required")
            return
        # Paystack answers an account it knows with its existing recipient.
        for recipient in self.state.recipients.values():
            if (
                recipient["details"]["account_number"] == details["account_number"]
                and recipient["details"]["bank_code"] == details["bank_code"]
            ):
                self.answer(200, {"status": True, "message": "Transfer recipient created", "data": recipient})
                return
        code = f"RCP_{secrets.token_hex(8)}"
        recipient = {
            "id": len(self.state.recipients) + 1,
            "recipient_code": code,
            "type": body.get("type", "nuban"),
            "name": details["account_name"],
            "currency": body.get("currency", "NGN"),
            "active": True,
            "details": details,
        }
        self.state.recipients[code] = recipient
        self.answer(201, {"status": True, "message": "Transfer recipient created successfully", "data": recipient})


class Transfers(Handler):
    """What every transfer handler shares: a transfer as Paystack reports it, and ending one with its webhook."""

    def reported(self, transfer: dict[str, Any]) -> dict[str, Any]:
        """A transfer as Paystack reports it (the fake's counters left out)."""
        return {k: v for k, v in transfer.items() if k not in ("transfer_calls", "verify_calls")}

    async def end(self, transfer: dict[str, Any], outcome: str) -> list[int]:
        transfer["status"] = outcome
        return await self.notify(f"transfer.{outcome}", self.reported(transfer))


class TransferHandler(Transfers):
    async def post(self) -> None:
        if not await self.admitted("transfer_status"):
            return
        try:
            body = json.loads(self.request.body)
            amount, recipient, reference = int(body["amount"]), str(body["recipient"]), str(body["reference"])
        except (ValueError, KeyError, TypeError):
            self.refuse(400, "amount, recipient and reference are required")
            return
        known = self.state.transfers.get(reference)
        if known is not None:
            known["transfer_calls"] += 1
            self.refuse(400, "Duplicate Transfer Reference")
            return
        if recipient not in self.state.recipients:
            self.refuse(400, "Recipient specified is invalid")
            return
        transfer = {
            "id": len(self.state.transfers) + 1,
            "transfer_code": f"TRF_{secrets.token_hex(8)}",
            "reference": reference,
            "amount": amount,
            "currency": body.get("currency", "NGN"),
            "reason": body.get("reason"),
            "recipient": recipient,
            "source": "balance",
            "status": "pending",
            "transfer_calls": 1,
            "verify_calls": 0,
        }
        self.state.transfers[reference] = transfer
        self.answer(200, {"status": True, "message": "Transfer has been queued", "data": self.reported(transfer)})
        if self.state.config["transfer_outcome"] != "pending":
            await self.end(transfer, self.state.config["transfer_outcome"])


class TransferVerifyHandler(Transfers):
    async def get(self, reference: str) -> None:
        if not await self.admitted("verify_status"):
            return
        transfer = self.state.transfers.get(reference)
        if transfer is None:
            self.refuse(404, "Transfer not found")
            return
        transfer["verify_calls"] += 1
        self.answer(200, {"status": True, "message": "Transfer retrieved", "data": self.reported(transfer)})


class FakeTransferHandler(Transfers):
    def get(self, reference: str) -> None:
        transfer = self.state.transfers.get(reference)
        if transfer is None:
            self.refuse(404, "Transfer not found")
            return
        self.answer(200, transfer)

    async def post(self, reference: str) -> None:
        """End (or reverse) a transfer by hand; answers what the webhook deliveries got back."""
        transfer = self.state.transfers.get(reference)
        outcome = self.get_query_argument("outcome", "success")
        if transfer is None or outcome not in TRANSFER_OUTCOMES - {"pending"}:
            self.refuse(404, "Transfer not found, or an outcome that is not success, failed or reversed")
            return
        deliveries = await self.end(transfer, outcome)
        self.answer(200, {"status": outcome, "reference": reference, "webhook_statuses": deliveries})


class CallsHandler(Handler):
    def get(self) -> None:
        self.answer(200, dict(self.state.calls))


class ConfigHandler(Handler):
    def get(self) -> None:
        self.answer(200, self.state.config)

    def post(self) -> None:
        changes = json.loads(self.request.body or b"{}")
        unknown = set(changes) - set(DEFAULTS)
        if unknown:
            self.refuse(400, f"unknown switches: {', '.join(sorted(unknown))}")
            return
        if changes.get("transfer_outcome", "success") not in TRANSFER_OUTCOMES:
            self.refuse(400, f"transfer_outcome is one of {', '.join(sorted(TRANSFER_OUTCOMES))}")
            return
        self.state.config = {**DEFAULTS, "webhook_url": self.state.config["webhook_url"], **changes}
        self.answer(200, self.state.config)


def make_app(state: State) -> web.Application:
    args = {"state": state}
    return web.Application(
        [
            (r"/transaction/initialize", InitializeHandler, args),
            (r"/transaction/verify/([^/]+)", VerifyHandler, args),
            (r"/pay/([^/]+)", PayHandler, args),
            (r"/bank", BanksHandler, args),
            (r"/bank/resolve", ResolveHandler, args),
            (r"/transferrecipient", RecipientHandler, args),
            (r"/transfer", TransferHandler, args),
            (r"/transfer/verify/([^/]+)", TransferVerifyHandler, args),
            (r"/_fake/transfers/([^/]+)", FakeTransferHandler, args),
            (r"/_fake/calls", CallsHandler, args),
            (r"/_fake/config", ConfigHandler, args),
            (r"/_fake/transactions/([^/]+)", TransactionHandler, args),
        ]
    )


async def serve(host: str, port: int, state: State) -> None:
    server = HTTPServer(make_app(state))
    server.listen(port, host)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"fake Paystack on http://{host}:{port}", flush=True)
    await stop.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--secret-key", default="sk_test_local", help="the key the wallet sends and signs with")
    parser.add_argument("--webhook-url", help="where to send webhooks (the wallet's /api/v1/webhooks/paystack)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, State(args.secret_key, args.webhook_url)))


if __name__ == "__main__":
    main()
