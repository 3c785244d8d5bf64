"""The schemas several resources share (pages and periods, money requests, transactions, users, wallets, tokens,
health, errors) and Output, the base of every response schema, which renders an answer. A resource's own schemas
stand beside its handlers, in its module; the field types are handlers/field_types.py."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from marshmallow import Schema, fields, missing, post_load, pre_load, validate, validates_schema

from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    TRANSACTION_TYPES,
    Amount,
    Metadata,
    RecoveryCode,
    Text,
    TotpCode,
    UtcDateTime,
    UtcDateTimeUntil,
    exactly_one,
    one_of_required,
)

# ---- requests ---------------------------------------------------------------------------------------------------


class AmountSchema(Schema):
    amount = Amount(required=True)
    description = Text(load_default=None, allow_none=True, validate=validate.Length(max=255))


class MoneySchema(AmountSchema):
    """A request that records a transaction, which keeps the client's metadata."""

    metadata = Metadata(load_default=None)


class SecondFactorSchema(Schema):
    """Exactly one of a code from the authenticator app and a recovery code."""

    CODES = ("code", "recovery_code")
    json_schema = one_of_required(CODES)

    code = TotpCode(load_default=None)
    recovery_code = RecoveryCode(load_default=None)

    @validates_schema
    def one_code(self, data: dict[str, Any], **kwargs: Any) -> None:
        exactly_one(data, self.CODES)


class PageQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Text(load_default=None, validate=validate.Length(max=200))


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
    metadata = Metadata(
        metadata={
            "description": "Only transactions whose metadata has these keys with these values, each given as "
            "`metadata[KEY]=VALUE` (such as `metadata[order_id]=123`)."
        }
    )

    @pre_load
    def gather_metadata(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The `metadata[KEY]=VALUE` parameters as one `metadata` object."""
        others = {k: v for k, v in data.items() if not (k.startswith("metadata[") and k.endswith("]"))}
        gathered = {k[len("metadata[") : -1]: v for k, v in data.items() if k not in others}
        return {**others, "metadata": gathered} if gathered else data


# ---- responses --------------------------------------------------------------------------------------------------


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
    two_factor = fields.Boolean(metadata={"description": "Whether sign-in needs a code from an authenticator app."})
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


class AccessTokenSchema(Output):
    access_token = fields.String(
        metadata={"description": "A JWT; its auth_time and amr claims say when and how the login last authenticated."}
    )
    token_type = fields.String(validate=validate.OneOf(["Bearer"]))
    expires_in = fields.Integer()


class TokenPairSchema(AccessTokenSchema):
    refresh_token = fields.String()


class TotalSchema(Output):
    currency = fields.String(validate=CURRENCY)
    balance = fields.String(validate=DECIMAL)


class WalletListSchema(Output):
    items = fields.List(fields.Nested(WalletSchema))
    totals = fields.List(fields.Nested(TotalSchema))


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
    payment_request_id = fields.UUID(allow_none=True, metadata={"description": "The payment request it paid."})
    metadata = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "The labels it was sent with ({})."}
    )
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


class TransactionListSchema(Output):
    items = fields.List(fields.Nested(TransactionSchema))
    next_cursor = fields.String(allow_none=True)


class HealthSchema(Output):
    status = fields.String(validate=validate.OneOf(["ok"]))


class LivenessSchema(HealthSchema):
    version = fields.String(metadata={"description": "The server's release, e.g. `1.2.0`."})
    revision = fields.String(
        metadata={"description": "The git commit it was built from (12 hex digits), or `unknown`."}
    )


class ErrorSchema(Schema):
    error = fields.String(required=True)
    code = fields.String(required=True)
    details = fields.Dict()
    transaction_id = fields.UUID()
    mfa_token = fields.String(metadata={"description": "With MFA_REQUIRED: for POST /api/v1/auth/login/mfa."})


class PageLinkSchema(Output):
    link = fields.String(metadata={"description": "The web wallet's page, at this server's root as it was reached."})
    qr_code = fields.String(metadata={"description": "The QR code of link, an SVG as a data: URI for <img>."})
