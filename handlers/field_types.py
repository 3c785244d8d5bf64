"""The field types the request and response schemas share: amounts, currencies, rates, e-mail addresses, phone
numbers, UTC datetimes, text PostgreSQL can store, and the constants their validators use."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import phonenumbers
from marshmallow import ValidationError, fields, validate

from wallet import errors
from wallet.identity.identifiers import email_key, normalize_email
from wallet.money import DECIMAL_TEXT, MAX_MAJOR_UNITS, normalize_currency, parse_decimal
from wallet.operations import fx
from wallet.platform.paging import utc_moment

TRANSACTION_TYPES = ("DEPOSIT", "WITHDRAWAL", "TRANSFER", "REVERSAL")
HOLD_STATUSES = ("ACTIVE", "CAPTURED", "VOIDED", "EXPIRED")
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}\Z")  # \Z: "$" would let a final newline in


class Text(fields.String):
    """A string PostgreSQL can store: no NUL characters."""

    json_schema = {"pattern": "^[^\\x00]*$"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        return text


class Username(Text):
    """A username as registration allows them (a recipient's, a lookup's)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(USERNAME, error="Not a valid username."), **kwargs)


class WalletNumber(Text):
    """A wallet's number: ten digits."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(r"^[0-9]{10}$", error="Must be 10 digits."), **kwargs)


class Metadata(fields.Dict):
    """A money operation's labels: a flat object of at most 20 string keys (1..40 characters) to string values (at
    most 500 characters)."""

    json_schema = {
        "type": "object",
        "maxProperties": 20,
        "propertyNames": {"minLength": 1, "maxLength": 40},
        "additionalProperties": {"type": "string", "maxLength": 500},
        "description": "Your own labels, returned on the transaction and filterable in history: at most 20 string "
        "keys (1..40 characters) to string values (at most 500).",
        "examples": [{"order_id": "123"}],
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            keys=Text(validate=validate.Length(min=1, max=40)),
            values=Text(validate=validate.Length(max=500)),
            validate=validate.Length(max=20, error="At most {max} keys."),
            **kwargs,
        )


def _domain(fn: Any, value: Any) -> Any:
    """Run a wallet.money parser, turning its error into a field error."""
    try:
        return fn(value, "value")
    except errors.ValidationError as error:
        raise ValidationError(error.details["value"]) from None


class Amount(fields.Field):
    """A positive decimal amount given as a string or JSON number, parsed exactly."""

    # What _deserialize accepts, for the OpenAPI spec (json_schema on a field class is merged into its property).
    json_schema = {
        "type": ["string", "number"],
        "pattern": f"^{DECIMAL_TEXT.pattern}$",
        "exclusiveMinimum": 0,
        "maximum": int(MAX_MAJOR_UNITS),
        "description": "A positive amount with at most the currency's minor digits; best sent as a string.",
        "examples": ["10.50"],
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return _domain(parse_decimal, value)


class FxRateValue(fields.Field):
    """An exchange rate: units of the quote currency per 1 base unit, at most fx.RATE_PLACES decimal places."""

    json_schema = {
        "type": ["string", "number"],
        "pattern": f"^{DECIMAL_TEXT.pattern}$",
        "exclusiveMinimum": 0,
        "maximum": int(fx.MAX_RATE),
        "description": f"Units of the quote currency per 1 base unit, at most {fx.RATE_PLACES} decimal places; "
        "best sent as a string.",
        "examples": ["151.2345"],
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return _domain(fx.parse_rate, value)


class FxSpread(fields.Field):
    """A spread: a fraction from 0 to 0.1 taken against the customer."""

    json_schema = {
        "type": ["string", "number"],
        "pattern": f"^{DECIMAL_TEXT.pattern}$",
        "minimum": 0,
        "maximum": 0.1,
        "description": f"A fraction (0.0025 is 0.25 %) from 0 to 0.1, at most {fx.SPREAD_PLACES} decimal places; "
        "default 0.",
        "examples": ["0.0025"],
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return _domain(fx.parse_spread, value)


class Currency(fields.Field):
    """An ISO 4217 currency code."""

    json_schema = {
        "type": "string",
        "pattern": r"^\s*[A-Za-z]{3}\s*$",
        "description": "An ISO 4217 currency code (any case).",
        "examples": ["USD"],
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _domain(normalize_currency, value)


class Email(Text):
    json_schema = {"format": "email"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _domain(normalize_email, super()._deserialize(value, attr, data, **kwargs))


class RecipientEmail(Email):
    """An e-mail address naming the recipient of a transfer or hold, loaded as the key addresses are compared by
    (identifiers.email_key): what the ledger's one resolving statement finds the user with."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return email_key(super()._deserialize(value, attr, data, **kwargs))


class Phone(Text):
    """A phone number in E.164 form, such as +15551234567."""

    json_schema = {
        "pattern": r"^\+",
        "maxLength": 20,
        "description": "E.164, such as +15551234567 (spaces and dashes are ignored).",
        "examples": ["+15551234567"],
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            number = phonenumbers.parse(text, None) if text.startswith("+") and len(text) <= 20 else None
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_possible_number(number):
            raise ValidationError("Must be a valid phone number in E.164 form, such as +15551234567.")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class TotpCode(Text):
    """The 6-digit code an authenticator app shows now."""

    json_schema = {"pattern": "^[0-9]{6}$", "description": "The 6-digit code the authenticator app shows now."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(r"[0-9]{6}", text):
            raise ValidationError("Must be the 6 digits the app shows.")
        return text


class RecoveryCode(Text):
    """One of the recovery codes given when two-factor sign-in was turned on (dashes and case do not matter)."""

    json_schema = {
        "pattern": "^[A-Za-z0-9 -]{10,20}$",
        "description": "A recovery code such as abcde-fghjk (given when two-factor sign-in was turned on); each works "
        "once.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(r"[A-Za-z0-9 -]{10,20}", text):
            raise ValidationError("Must be a recovery code such as abcde-fghjk.")
        return text


class UtcDateTime(fields.DateTime):
    """ISO 8601 in UTC with a Z; on input a date means its midnight UTC."""

    def _serialize(self, value: dt.datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str) or len(value) > 40:
            raise ValidationError("Must be an ISO 8601 date or date-time.")
        try:
            return utc_moment(value, self._shift(value))
        except ValueError:
            raise ValidationError("Must be an ISO 8601 date or date-time between the years 1 and 9999.") from None

    def _shift(self, value: str) -> dt.timedelta:
        return dt.timedelta()


class UtcDateTimeUntil(UtcDateTime):
    """An exclusive upper bound; a bare date includes that whole day (to=2024-01-31 covers January 31)."""

    def _shift(self, value: str) -> dt.timedelta:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            return dt.timedelta()
        return dt.timedelta(days=1)


def exactly_one(data: dict[str, Any], names: tuple[str, ...]) -> None:
    given = [n for n in names if data.get(n) is not None]
    if len(given) != 1:
        raise ValidationError(f"Give exactly one of {', '.join(names)}.", "_schema")


def one_of_required(*groups: tuple[str, ...]) -> dict[str, Any]:
    """exactly_one of each group as JSON Schema, for a schema's `json_schema` (which the OpenAPI spec merges in).

    The rules stand under allOf: a oneOf at the top of the schema would read to a client generator as a choice
    between shapes without properties (an untyped body) instead of one model with optional fields."""
    return {"allOf": [{"oneOf": [{"required": [name]} for name in names]} for names in groups]}


# The policy wallet/identity/accounts.py checks (JSON Schema cannot count UTF-8 bytes), for the OpenAPI spec.
NEW_PASSWORD = {"description": "8 to 72 bytes of UTF-8, not all digits, not the username."}
# What a response's amount and currency look like, for the OpenAPI spec.
DECIMAL = validate.Regexp(r"^[0-9]+(\.[0-9]+)?$")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$")
