"""Marshmallow schemas: what every endpoint accepts and returns (the OpenAPI spec is built from these too)."""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import phonenumbers
from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, post_load, validate, validates_schema

from wallet import errors
from wallet.identity.identifiers import normalize_email
from wallet.identity.keys import LIFETIMES, SCOPES
from wallet.money import DECIMAL_TEXT, MAX_MAJOR_UNITS, normalize_currency, parse_decimal
from wallet.notify.events import TYPES as EVENT_TYPES
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


def _exactly_one(data: dict[str, Any], names: tuple[str, ...]) -> None:
    given = [n for n in names if data.get(n) is not None]
    if len(given) != 1:
        raise ValidationError(f"Give exactly one of {', '.join(names)}.", "_schema")


def one_of_required(names: tuple[str, ...]) -> dict[str, Any]:
    """_exactly_one as JSON Schema, for a schema's `json_schema` (which the OpenAPI spec merges in)."""
    return {"oneOf": [{"required": [name]} for name in names]}


# ---- requests -------------------------------------------------------------------------------------------

# The policy wallet/identity/accounts.py checks (JSON Schema cannot count UTF-8 bytes), for the OpenAPI spec.
NEW_PASSWORD = {"description": "8 to 72 bytes of UTF-8, not all digits, not the username."}


class RegisterSchema(Schema):
    username = Text(required=True, validate=validate.Regexp(USERNAME, error="3 to 32 of A-Z a-z 0-9 _ . -"))
    password = Text(required=True, validate=validate.Length(max=1024), metadata=NEW_PASSWORD)
    email = Email(load_default=None, allow_none=True, validate=validate.Length(max=254))
    phone = Phone(load_default=None, allow_none=True)
    currency = Currency(load_default=None, allow_none=True)


class LoginSchema(Schema):
    IDENTIFIERS = ("username", "email", "phone")
    json_schema = one_of_required(IDENTIFIERS)

    username = Text(validate=validate.Length(max=254))
    email = Text(validate=validate.Length(max=254))
    phone = Phone()
    password = Text(required=True, validate=validate.Length(max=1024))

    @validates_schema
    def one_identifier(self, data: dict[str, Any], **kwargs: Any) -> None:
        _exactly_one(data, self.IDENTIFIERS)


class RefreshSchema(Schema):
    refresh_token = Text(required=True, validate=validate.Length(max=4096))


class UserUpdateSchema(Schema):
    json_schema = {"minProperties": 1}

    email = Email(allow_none=True, validate=validate.Length(max=254))
    phone = Phone(allow_none=True)
    password = Text(validate=validate.Length(max=1024), metadata=NEW_PASSWORD)
    current_password = Text(
        validate=validate.Length(max=1024),
        metadata={"description": "Required with password, unless the account has none yet (made by Google)."},
    )

    @validates_schema
    def consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one of email, phone, password.", "_schema")


class WalletCreateSchema(Schema):
    currency = Currency(required=True)
    name = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))


class MoneySchema(Schema):
    amount = Amount(required=True)
    description = Text(load_default=None, allow_none=True, validate=validate.Length(max=255))


class OperationSchema(MoneySchema):
    operation_type = Text(required=True, validate=validate.OneOf(["DEPOSIT", "WITHDRAW"]))


class TransferSchema(MoneySchema):
    RECIPIENTS = ("to_wallet_id", "to_wallet_number", "to_username", "to_phone")
    WHAT = ("amount", "quote_id")
    json_schema = {"allOf": [one_of_required(RECIPIENTS), one_of_required(WHAT)]}

    amount = Amount(load_default=None, metadata={"description": "In the source currency; not with quote_id."})
    quote_id = fields.UUID(
        load_default=None,
        metadata={
            "description": "Execute this FX quote (POST /fx/quotes) instead of sending an amount: the recipient "
            "must be the quote's wallet, named by to_wallet_id or to_wallet_number."
        },
    )
    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = Text(validate=validate.Regexp(r"^[0-9]{10}$", error="Must be 10 digits."))
    to_username = Text(validate=validate.Regexp(USERNAME, error="Not a valid username."))
    to_phone = Phone()

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        _exactly_one(data, self.RECIPIENTS)
        if data.get("amount") is None and data.get("quote_id") is None:
            raise ValidationError("Missing data for required field (or give quote_id).", "amount")
        _exactly_one(data, self.WHAT)
        if data.get("quote_id") is not None and ("to_username" in data or "to_phone" in data):
            raise ValidationError("A quote names its recipient's wallet: give to_wallet_id or to_wallet_number.")


class HoldCreateSchema(MoneySchema):
    RECIPIENTS = ("to_wallet_id", "to_wallet_number")
    json_schema = one_of_required(RECIPIENTS)

    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = Text(validate=validate.Regexp(r"^[0-9]{10}$", error="Must be 10 digits."))
    expires_in = fields.Integer(
        load_default=604800,
        strict=True,
        validate=validate.Range(min=60, max=604800),
        metadata={"description": "Seconds until the hold expires and its remaining amount is released."},
    )

    @validates_schema
    def one_recipient(self, data: dict[str, Any], **kwargs: Any) -> None:
        _exactly_one(data, self.RECIPIENTS)


class FxRateSetSchema(Schema):
    rate = FxRateValue(required=True)
    spread = FxSpread(
        load_default=None
    )  # 0 (wallet/operations/fx.py); a Decimal default would not serialise into the spec


class FxQuoteCreateSchema(Schema):
    RECIPIENTS = ("to_wallet_id", "to_wallet_number")
    AMOUNTS = ("source_amount", "destination_amount")
    json_schema = {"allOf": [one_of_required(RECIPIENTS), one_of_required(AMOUNTS)]}

    from_wallet_id = fields.UUID(required=True)
    to_wallet_id = fields.UUID()
    to_wallet_number = Text(validate=validate.Regexp(r"^[0-9]{10}$", error="Must be 10 digits."))
    source_amount = Amount(
        load_default=None, metadata={"description": "What the payer pays, in the source wallet's currency."}
    )
    destination_amount = Amount(
        load_default=None, metadata={"description": "What the payee receives, in the recipient wallet's currency."}
    )

    @validates_schema
    def one_recipient_one_amount(self, data: dict[str, Any], **kwargs: Any) -> None:
        _exactly_one(data, self.RECIPIENTS)
        _exactly_one(data, self.AMOUNTS)


class CaptureSchema(Schema):
    amount = Amount(load_default=None, metadata={"description": "Default: all that remains of the hold."})
    final = fields.Boolean(
        load_default=True, metadata={"description": "Release what remains after this capture (default true)."}
    )


class PaystackDepositSchema(Schema):
    amount = Amount(required=True)
    callback_url = fields.Url(
        load_default=None,
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=1024),
        metadata={"description": "Where Paystack sends the payer after paying (default: PAYSTACK_CALLBACK_URL)."},
    )


class KeyCreateSchema(Schema):
    name = Text(required=True, validate=validate.Length(min=1, max=64))
    # Each item checked on its own: apispec turns ContainsOnly on the list into an enum no array can satisfy.
    scopes = fields.List(Text(validate=validate.OneOf(SCOPES)), required=True, validate=validate.Length(min=1))
    expires_in = Text(required=True, validate=validate.OneOf(list(LIFETIMES)))


class KeyRolloverSchema(Schema):
    expires_in = Text(load_default=None, validate=validate.OneOf(list(LIFETIMES)))
    grace_seconds = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=86400))


class GoogleCallbackQuery(Schema):
    class Meta:
        unknown = EXCLUDE  # the provider adds parameters of its own (scope, authuser, prompt, ...)

    code = Text(load_default=None, validate=validate.Length(min=1, max=2048))
    state = Text(required=True, validate=validate.Length(min=1, max=256))
    error = Text(load_default=None, metadata={"description": "Sent by the provider instead of a code (401)."})


class GoogleCodeSchema(Schema):
    code = Text(required=True, validate=validate.Length(min=1, max=2048))
    state = Text(required=True, validate=validate.Length(min=1, max=256))


class PageQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Text(load_default=None, validate=validate.Length(max=200))


class HoldQuery(PageQuery):
    wallet_id = fields.UUID()
    status = Text(validate=validate.OneOf(HOLD_STATUSES))


class PeriodQuery(Schema):
    """`from` and `to`, loaded as `since` and `until` (exclusive)."""

    from_ = UtcDateTime(data_key="from", metadata={"description": "Created at or after (a date means its 00:00 UTC)."})
    to = UtcDateTimeUntil(metadata={"description": "Created before this time; a date includes that whole day."})

    @post_load
    def rename(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "from_" in data:
            data["since"] = data.pop("from_")
        if "to" in data:
            data["until"] = data.pop("to")
        return data


class TransactionQuery(PageQuery, PeriodQuery):
    wallet_id = fields.UUID()
    type = Text(validate=validate.OneOf(TRANSACTION_TYPES))
    status = Text(validate=validate.OneOf(["PENDING", "COMPLETED", "FAILED"]))


class EventQuery(PageQuery):
    after = fields.Integer(
        validate=validate.Range(min=0, max=2**63 - 1), metadata={"description": "Only events after this event id."}
    )


class StreamQuery(Schema):
    after = fields.Integer(
        validate=validate.Range(min=0, max=2**63 - 1),
        metadata={"description": "Replay the events after this id first."},
    )
    access_token = Text(metadata={"description": "The access token (or send it as the second WebSocket subprotocol)."})


class WebhookEndpointCreateSchema(Schema):
    url = Text(required=True, validate=validate.Length(min=1, max=2048))
    events = fields.List(
        Text(validate=validate.OneOf([*EVENT_TYPES, "*"])),
        required=True,
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        metadata={"description": 'Event types to send, or ["*"] for all.'},
    )
    description = Text(load_default=None, validate=validate.Length(max=255))


class RotateSecretSchema(Schema):
    grace_seconds = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=86400),
        metadata={"description": "How long the old secret keeps signing too (both signatures are sent)."},
    )


class StatementQuery(PeriodQuery):
    format = Text(
        load_default="json",
        validate=validate.OneOf(["json", "csv", "pdf"]),
        metadata={"description": "json (the default), csv or pdf; from defaults to the wallet's opening, to to now."},
    )

    @validates_schema
    def ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "from_" in data and "to" in data and data["from_"] >= data["to"]:
            raise ValidationError("Must be before `to`.", "from")


# ---- responses ------------------------------------------------------------------------------------------

DECIMAL = validate.Regexp(r"^[0-9]+(\.[0-9]+)?$")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$")


class Output(Schema):
    """A response body: every field is always rendered (the OpenAPI spec marks them all required).

    The fields declare the body (the OpenAPI spec is built from them) and say how each value is rendered, but
    marshmallow's `dump` does not render answers: `render` walks a plan compiled once per class from the same
    bound fields (`_plan`) and hands UUIDs and UTC datetimes to orjson, which writes them as str() and
    UtcDateTime would; every other leaf goes through its field's own `_serialize`. That is the only way an answer
    is rendered; tests/test_rendering.py holds it to marshmallow's dump, byte for byte, so the two cannot drift.
    """

    def render(self, obj: Any) -> bytes:
        """The JSON body for `obj` (a mapping, or an object with the fields as attributes)."""
        return orjson.dumps(_render_for(type(self))(obj), option=orjson.OPT_UTC_Z)


_plans: dict[type[Output], Callable[[Any], dict[str, Any]]] = {}


def _render_for(schema: type[Output]) -> Callable[[Any], dict[str, Any]]:
    """The plan of an Output class, compiled on first use."""
    render = _plans.get(schema)
    if render is None:
        render = _plans[schema] = _plan(schema)
    return render


def _text(value: Any) -> Any:
    return value if type(value) is str else str(value)


def _uuid(value: Any) -> Any:
    return value if type(value) is uuid.UUID else str(value)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)


def _converter(field: fields.Field) -> Callable[[Any], Any]:
    """How one bound field renders a value that is not None (None renders as None for every field here)."""
    if isinstance(field, fields.Nested) and isinstance(field.schema, Output):
        render = _render_for(type(field.schema))
        if field.many:
            return lambda items: [render(item) for item in items]
        return render
    if isinstance(field, fields.List):
        inner = _converter(field.inner)
        return lambda items: [None if item is None else inner(item) for item in items]
    special = {fields.String: _text, fields.UUID: _uuid, UtcDateTime: _utc}.get(type(field))
    if special is not None:
        return special
    serialize = field._serialize
    return lambda value: serialize(value, None, None)


def _plan(schema: type[Output]) -> Callable[[Any], dict[str, Any]]:
    """What marshmallow's Schema.dump does for a body of plain fields, without its per-field machinery: read
    each field's attribute (a key of a mapping, else an attribute), skip it when absent, render, name it."""
    bound = schema().dump_fields
    if any(f.dump_default is not missing or "." in (f.attribute or "") for f in bound.values()):
        raise TypeError(f"{schema.__name__}: the plan renders neither dump defaults nor dotted attributes")
    steps = [(field.attribute or name, field.data_key or name, _converter(field)) for name, field in bound.items()]

    def render(obj: Any) -> dict[str, Any]:
        get = obj.get if isinstance(obj, Mapping) else functools.partial(getattr, obj)
        body = {}
        for source, key, convert in steps:
            value = get(source, missing)
            if value is missing:
                continue
            body[key] = value if value is None else convert(value)
        return body

    return render


class UserSchema(Output):
    id = fields.UUID()
    username = fields.String()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    role = fields.String(validate=validate.OneOf(["user", "admin"]))
    status = fields.String(validate=validate.OneOf(["active", "frozen", "inactive"]))
    auth_providers = fields.List(fields.String(validate=validate.OneOf(["password", "google"])))
    created_at = UtcDateTime()


class WalletSchema(Output):
    id = fields.UUID()
    number = fields.String(validate=validate.Regexp(r"^[0-9]{10}$"))
    name = fields.String(allow_none=True)
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(validate=DECIMAL)
    available_balance = fields.String(validate=DECIMAL, metadata={"description": "The balance minus active holds."})
    status = fields.String()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class RegisteredSchema(Output):
    user = fields.Nested(UserSchema)
    wallet = fields.Nested(WalletSchema)


class TokenPairSchema(Output):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String(validate=validate.OneOf(["Bearer"]))
    expires_in = fields.Integer()


class TotalSchema(Output):
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(validate=DECIMAL)


class WalletListSchema(Output):
    items = fields.List(fields.Nested(WalletSchema))
    totals = fields.List(fields.Nested(TotalSchema))


class BalanceSchema(Output):
    wallet_id = fields.UUID()
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(validate=DECIMAL)
    available_balance = fields.String(validate=DECIMAL, metadata={"description": "The balance minus active holds."})


class CounterpartySchema(Output):
    username = fields.String()
    wallet_number = fields.String()


class FxConversionSchema(Output):
    quote_id = fields.UUID()
    rate = fields.String(validate=DECIMAL)
    source_amount = fields.String(validate=DECIMAL)
    source_currency = fields.String(validate=CURRENCY)
    destination_amount = fields.String(validate=DECIMAL)
    destination_currency = fields.String(validate=CURRENCY)


class TransactionSchema(Output):
    id = fields.UUID()
    reference = fields.String()
    type = fields.String(validate=validate.OneOf(TRANSACTION_TYPES))
    status = fields.String(validate=validate.OneOf(["PENDING", "COMPLETED", "FAILED"]))
    amount = fields.String(validate=DECIMAL)
    currency = fields.String(validate=CURRENCY)
    source_wallet_id = fields.UUID(allow_none=True)
    destination_wallet_id = fields.UUID(allow_none=True)
    direction = fields.String(validate=validate.OneOf(["in", "out", "internal"]))
    counterparty = fields.Nested(CounterpartySchema, allow_none=True)
    description = fields.String(allow_none=True)
    failure_code = fields.String(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    provider = fields.String(allow_none=True, validate=validate.OneOf(["paystack"]))
    provider_reference = fields.String(allow_none=True)
    hold_id = fields.UUID(allow_none=True, metadata={"description": "The hold this transfer captured from."})
    reverses = fields.UUID(allow_none=True, metadata={"description": "The transaction this REVERSAL gives back."})
    reversed_amount = fields.String(
        validate=DECIMAL, metadata={"description": "How much of this transaction COMPLETED reversals gave back."}
    )
    fx = fields.Nested(
        FxConversionSchema,
        allow_none=True,
        metadata={"description": "A completed cross-currency transfer's conversion; amount/currency are the payer's."},
    )
    api_key_id = fields.UUID(allow_none=True, metadata={"description": "The caller's API key that initiated it."})
    created_at = UtcDateTime()
    completed_at = UtcDateTime(allow_none=True)


class FxRateSchema(Output):
    base = fields.String(validate=CURRENCY)
    quote = fields.String(validate=CURRENCY)
    rate = fields.String(validate=DECIMAL, metadata={"description": "Units of quote per 1 base, 10 decimal places."})
    spread = fields.String(validate=DECIMAL, metadata={"description": "The fraction taken against the customer."})
    updated_by = fields.UUID(metadata={"description": "The admin who set it."})
    updated_at = UtcDateTime()


class FxRateListSchema(Output):
    items = fields.List(fields.Nested(FxRateSchema))


class FxRateChangeSchema(Output):
    id = fields.UUID()
    base = fields.String(validate=CURRENCY)
    quote = fields.String(validate=CURRENCY)
    rate = fields.String(validate=DECIMAL)
    spread = fields.String(validate=DECIMAL)
    set_by = fields.UUID(metadata={"description": "The admin who set it."})
    created_at = UtcDateTime()


class FxRateChangeListSchema(Output):
    items = fields.List(fields.Nested(FxRateChangeSchema))
    next_cursor = fields.String(allow_none=True)


class FxRoundingSchema(Output):
    source = fields.String(validate=validate.OneOf(["up"]), metadata={"description": "The source amount rounds up."})
    destination = fields.String(
        validate=validate.OneOf(["down"]), metadata={"description": "The destination amount rounds down."}
    )
    unrounded_source_amount = fields.String(
        validate=DECIMAL, metadata={"description": "Before rounding, cut to 20 decimal places."}
    )
    unrounded_destination_amount = fields.String(
        validate=DECIMAL, metadata={"description": "Before rounding, cut to 20 decimal places."}
    )


class FxQuoteSchema(Output):
    id = fields.UUID()
    from_wallet_id = fields.UUID()
    to_wallet_id = fields.UUID()
    rate = fields.String(
        validate=DECIMAL, metadata={"description": "The customer's rate: market_rate * (1 - spread), rounded down."}
    )
    market_rate = fields.String(validate=DECIMAL)
    spread = fields.String(validate=DECIMAL)
    source_amount = fields.String(validate=DECIMAL)
    source_currency = fields.String(validate=CURRENCY)
    destination_amount = fields.String(validate=DECIMAL)
    destination_currency = fields.String(validate=CURRENCY)
    fixed = fields.String(
        validate=validate.OneOf(["source", "destination"]),
        metadata={"description": "The amount the caller gave; the other one was computed and rounded."},
    )
    rounding = fields.Nested(FxRoundingSchema)
    expires_at = UtcDateTime()
    created_at = UtcDateTime()


class FxPositionSchema(Output):
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(
        validate=validate.Regexp(r"^-?[0-9]+(\.[0-9]+)?$"),
        metadata={"description": "The FX account's balance: negative when the house paid out more than it took in."},
    )
    wallet_id = fields.UUID()
    wallet_number = fields.String()


class FxPositionListSchema(Output):
    items = fields.List(fields.Nested(FxPositionSchema))


class HoldSchema(Output):
    id = fields.UUID()
    from_wallet_id = fields.UUID()
    to_wallet_id = fields.UUID()
    amount = fields.String(validate=DECIMAL)
    captured_amount = fields.String(validate=DECIMAL)
    remaining_amount = fields.String(validate=DECIMAL, metadata={"description": "Still reserved (0 unless ACTIVE)."})
    currency = fields.String(validate=CURRENCY)
    status = fields.String(validate=validate.OneOf(HOLD_STATUSES))
    description = fields.String(allow_none=True)
    expires_at = UtcDateTime()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class HoldListSchema(Output):
    items = fields.List(fields.Nested(HoldSchema))
    next_cursor = fields.String(allow_none=True)


class ApiKeySchema(Output):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The secret's first characters, to recognise it by."})
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)))
    status = fields.String(validate=validate.OneOf(["active", "expired", "revoked"]))
    expires_at = UtcDateTime()
    last_used_at = UtcDateTime(allow_none=True, metadata={"description": "Updated at most once a minute."})
    created_at = UtcDateTime()
    revoked_at = UtcDateTime(
        allow_none=True, metadata={"description": "When it stopped, or (during a rollover's grace) will stop."}
    )


class NewApiKeySchema(ApiKeySchema):
    key = fields.String(metadata={"description": "The secret (`wk_...`), shown only in this answer."})


class ApiKeyListSchema(Output):
    items = fields.List(fields.Nested(ApiKeySchema))
    next_cursor = fields.String(allow_none=True)


class TransactionListSchema(Output):
    items = fields.List(fields.Nested(TransactionSchema))
    next_cursor = fields.String(allow_none=True)


class StatementWalletSchema(Output):
    id = fields.UUID()
    number = fields.String(validate=validate.Regexp(r"^[0-9]{10}$"))
    name = fields.String(allow_none=True)
    currency = fields.String(validate=CURRENCY)


class StatementEntrySchema(Output):
    transaction_id = fields.UUID()
    reference = fields.String()
    type = fields.String(validate=validate.OneOf(TRANSACTION_TYPES))
    description = fields.String(allow_none=True)
    counterparty = fields.Nested(CounterpartySchema, allow_none=True)
    direction = fields.String(validate=validate.OneOf(["in", "out"]))
    amount = fields.String(validate=DECIMAL)
    balance = fields.String(validate=DECIMAL, metadata={"description": "The wallet's balance after this entry."})
    created_at = UtcDateTime()


class StatementSchema(Output):
    wallet = fields.Nested(StatementWalletSchema)
    from_ = UtcDateTime(data_key="from", attribute="since")
    to = UtcDateTime(attribute="until", metadata={"description": "The end of the period, excluded."})
    opening_balance = fields.String(validate=DECIMAL)
    closing_balance = fields.String(validate=DECIMAL)
    total_in = fields.String(validate=DECIMAL)
    total_out = fields.String(validate=DECIMAL)
    entry_count = fields.Integer()
    entries = fields.List(fields.Nested(StatementEntrySchema), metadata={"description": "Oldest first."})


class CheckoutSchema(Output):
    transaction = fields.Nested(TransactionSchema)
    reference = fields.String(metadata={"description": "The deposit's reference at Paystack (ours)."})
    authorization_url = fields.String(metadata={"description": "Paystack's page where the payer pays."})


class AuthorizationUrlSchema(Output):
    authorization_url = fields.String()


class EventSchema(Output):
    id = fields.Integer(metadata={"description": "Increases in commit order for each user."})
    type = fields.String()
    created_at = UtcDateTime()
    data = fields.Dict(metadata={"description": "The Transaction (as the receiver sees it) or the change reported."})


class EventListSchema(Output):
    items = fields.List(fields.Nested(EventSchema))
    next_cursor = fields.String(allow_none=True)


class WebhookEndpointSchema(Output):
    id = fields.UUID()
    url = fields.String()
    events = fields.List(fields.String())
    description = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(["active", "failing"]))
    created_at = UtcDateTime()


class WebhookEndpointSecretSchema(WebhookEndpointSchema):
    secret = fields.String(metadata={"description": "whsec_ and the base64 signing key; shown only here."})


class WebhookEndpointListSchema(Output):
    items = fields.List(fields.Nested(WebhookEndpointSchema))
    next_cursor = fields.String(allow_none=True)


class WebhookDeliverySchema(Output):
    id = fields.UUID()
    event_id = fields.Integer()
    event_type = fields.String()
    status = fields.String(validate=validate.OneOf(["pending", "succeeded", "failed"]))
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    next_attempt_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    delivered_at = UtcDateTime(allow_none=True)


class WebhookDeliveryListSchema(Output):
    items = fields.List(fields.Nested(WebhookDeliverySchema))
    next_cursor = fields.String(allow_none=True)


class HealthSchema(Output):
    status = fields.String(validate=validate.OneOf(["ok"]))


class ErrorSchema(Schema):
    error = fields.String(required=True)
    code = fields.String(required=True)
    details = fields.Dict()
    transaction_id = fields.UUID()
