"""E-mail for the events people expect in their inbox: plain text and HTML, by SMTP (aiosmtplib) or into var/mail/."""

from __future__ import annotations

import asyncio
import html
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

from wallet.notify import Attempt
from wallet.platform.runtime import Runtime


def _money(amount: str, currency: str) -> str:
    """'1234.50', 'USD' -> '1,234.50 USD': the API's exact digits for the currency, grouped for reading."""
    return f"{Decimal(amount):,} {currency}"


def _lines(row: Any) -> tuple[str, list[str]]:
    """The subject and the paragraphs of the mail for one event (the types in events.MAILED)."""
    data = row.data
    if row.type == "transfer.received":
        amount = _money(data["amount"], data["currency"])
        sender = data["counterparty"]
        lines = [f"{sender['username']} (wallet {sender['wallet_number']}) sent you {amount}."]
        if data.get("description"):
            lines.append(f"Description: {data['description']}")
        return f"You received {amount}", [*lines, f"Reference: {data['reference']}"]
    if row.type == "deposit.completed":
        amount = _money(data["amount"], data["currency"])
        return f"{amount} was deposited", [f"{amount} was added to your wallet.", f"Reference: {data['reference']}"]
    if row.type == "payment_request.created":
        amount = _money(data["amount"], data["currency"])
        payer, payee = data["payer"]["username"], data["payee"]["username"]
        if row.username != payer:  # the payee's copy: what they asked for
            return f"You asked {payer} for {amount}", [f"Your request is open until {data['expires_at']}."]
        lines = [f"{payee} (wallet {data['payee']['wallet_number']}) asks you for {amount}."]
        if data.get("description"):
            lines.append(f"Description: {data['description']}")
        return f"{payee} asks you for {amount}", [
            *lines,
            f"Pay or decline it under Payment requests before {data['expires_at']}.",
        ]
    if row.type.startswith("payout."):
        amount = _money(data["amount"], data["currency"])
        said = {
            "payout.completed": (f"Your payout of {amount} was sent", "Paystack sent it to your bank account."),
            "payout.failed": (
                f"Your payout of {amount} failed",
                f"It was not sent ({data['failure_reason']}); the amount is available in your wallet again.",
            ),
            "payout.reversed": (
                f"Your payout of {amount} came back",
                "The bank returned it; the amount is back in your wallet.",
            ),
        }
        subject, line = said[row.type]
        return subject, [line, f"Reference: {data['provider_reference']}"]
    if row.type == "account.frozen":
        return "Your account is frozen", [
            "An administrator froze your account: you can neither send nor receive money until it is unfrozen."
        ]
    if row.type == "account.unfrozen":
        return "Your account is active again", ["An administrator unfroze your account: you can use it again."]
    if row.type == "api_key.created":
        return f"A new API key: {data['name']}", [
            f"An API key named '{data['name']}' (starting {data['prefix']}) was made for your account. It may "
            f"{', '.join(data['scopes'])} until {data['expires_at']}.",
            "If you did not make it, revoke it under API keys and change your password at once.",
        ]
    assert row.type == "account.deactivated", row.type
    return "Your account is deactivated", [
        "Your account was deactivated: you are logged out everywhere and cannot log in until it is activated again."
    ]


def compose(rt: Runtime, row: Any) -> EmailMessage:
    subject, lines = _lines(row)
    greeting = f"Hello {row.username},"
    sender = rt.settings.mail_from
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.email
    message["Subject"] = subject
    message["Date"] = format_datetime(row.event_created_at)
    # One id per event: a retried send is the same message to the receiving servers, not a new one.
    message["Message-ID"] = f"<event-{row.event_id}@{parseaddr(sender)[1].rpartition('@')[2] or 'localhost'}>"
    message.set_content("\n\n".join([greeting, *lines, "-- Your wallet"]) + "\n")
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in [greeting, *lines])
    message.add_alternative(f"<html><body>{paragraphs}<p>&mdash; Your wallet</p></body></html>\n", subtype="html")
    return message


def _write_file(rt: Runtime, row: Any, message: EmailMessage) -> None:
    folder = rt.settings.var_dir / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    draft = folder / f".event-{row.event_id}.eml.tmp"
    draft.write_bytes(bytes(message))
    draft.replace(folder / f"event-{row.event_id}.eml")  # whole or not at all; a resend replaces it


async def send(rt: Runtime, row: Any, timeout: float) -> Attempt:
    """Send one claimed e-mail delivery (a row of dispatch.CLAIM)."""
    if not row.email:
        return Attempt(error="The user has no e-mail address any more.", permanent=True)
    message = compose(rt, row)
    if rt.settings.smtp_url is None:
        await asyncio.to_thread(_write_file, rt, row, message)
        return Attempt()
    url = urlsplit(rt.settings.smtp_url)
    implicit_tls = url.scheme == "smtps"
    try:
        await aiosmtplib.send(
            message,
            hostname=url.hostname,
            port=url.port or (465 if implicit_tls else 25),
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            use_tls=implicit_tls,
            start_tls=False if implicit_tls else None,  # None: STARTTLS whenever the server offers it
            timeout=timeout,  # each step; the dispatcher bounds the whole send
        )
    except aiosmtplib.SMTPRecipientsRefused as refused:
        return Attempt(refused.recipients[0].code, f"Recipient refused: {refused.recipients[0].message}", True)
    except aiosmtplib.SMTPResponseException as error:
        return Attempt(error.code, f"SMTP {error.code}: {error.message}", permanent=500 <= error.code < 600)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        return Attempt(None, f"{type(error).__name__}: {error}")
    return Attempt(250)
