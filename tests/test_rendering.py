"""Answers are rendered by handlers/schemas.py's compiled plans (Output.render), not by marshmallow's dump: the two
must give the same JSON, byte for byte, for every response schema and every kind of transaction."""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from marshmallow import Schema, fields

import handlers
from handlers import schemas
from handlers.deposits import CheckoutSchema
from handlers.wallets import BalanceSchema
from wallet.ledger.history import render_transaction

VIEWER, OTHER = uuid.uuid4(), uuid.uuid4()
NOW = dt.datetime(2026, 11, 29, 23, 0, 1, 123456, tzinfo=dt.UTC)
# asyncpg hands out timestamptz in UTC; a body may carry another offset, which renders converted to Z.
ELSEWHERE = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))


def row(**changes: Any) -> dict[str, Any]:
    """A transaction row as wallet/ledger/history.py loads it: a completed transfer from VIEWER unless changed."""
    base = {
        "id": uuid.uuid4(),
        "seq": 7,
        "reference": "TRF-20261129-ABCDEF",
        "type": "TRANSFER",
        "status": "COMPLETED",
        "amount": 12345,
        "currency": "USD",
        "source_wallet_id": uuid.uuid4(),
        "destination_wallet_id": uuid.uuid4(),
        "source_user_id": VIEWER,
        "destination_user_id": OTHER,
        "source_username": "alice",
        "destination_username": "bob",
        "source_number": "1234567890",
        "destination_number": "0987654321",
        "description": 'rent \u00e9\u20ac "quoted" \\ \n',
        "failure_code": None,
        "failure_reason": None,
        "provider": None,
        "provider_reference": None,
        "hold_id": None,
        "reverses": None,
        "reversed_amount": 0,
        "fx_quote_id": None,
        "api_key_id": None,
        "initiator_id": VIEWER,
        "created_at": NOW,
        "completed_at": NOW,
    }
    return base | changes


ROWS = {
    "transfer out": row(),
    "transfer in": row(source_user_id=OTHER, destination_user_id=VIEWER, initiator_id=OTHER),
    "internal, by an API key": row(destination_user_id=VIEWER, api_key_id=uuid.uuid4()),
    "pending": row(status="PENDING", completed_at=None, description=None),
    "failed": row(status="FAILED", failure_code="INSUFFICIENT_FUNDS", failure_reason="Not enough.", completed_at=None),
    "deposit": row(
        type="DEPOSIT",
        source_user_id=None,
        source_username=None,
        source_number=None,
        destination_user_id=VIEWER,
        provider="paystack",
        provider_reference="ps_123",
        amount=5,
    ),
    "withdrawal": row(
        type="WITHDRAWAL",
        destination_user_id=None,
        destination_username=None,
        destination_number=None,
        currency="JPY",
        amount=1000,
    ),
    "hold capture": row(hold_id=uuid.uuid4(), currency="BHD", amount=1001),
    "partly reversed": row(reversed_amount=45),
    "reversal": row(type="REVERSAL", reverses=uuid.uuid4(), source_user_id=OTHER, destination_user_id=VIEWER),
    "reversal of a deposit": row(type="REVERSAL", reverses=uuid.uuid4(), destination_user_id=None),
    "fx": row(
        fx_quote_id=uuid.uuid4(), fx_rate=Decimal("151.2345"), destination_amount=1866789, destination_currency="JPY"
    ),
    "another offset": row(created_at=ELSEWHERE, completed_at=ELSEWHERE),
}


def same_json(schema: schemas.Output, body: Any) -> None:
    assert schema.render(body) == orjson.dumps(schema.dump(body))


@pytest.mark.parametrize("kind", ROWS)
def test_transaction_renders_as_marshmallow_would(kind: str) -> None:
    item = render_transaction(ROWS[kind], VIEWER)
    same_json(schemas.TransactionSchema(), item)
    same_json(schemas.TransactionListSchema(), {"items": [item, item], "next_cursor": None})
    same_json(CheckoutSchema(), {"transaction": item, "reference": "r", "authorization_url": "https://x"})


def test_a_page_of_every_kind_renders_as_marshmallow_would() -> None:
    items = [render_transaction(r, VIEWER) for r in ROWS.values()]
    same_json(schemas.TransactionListSchema(), {"items": items, "next_cursor": "c2VxOjc"})


def sample(field: fields.Field, n: int) -> Any:
    """A value of a field's kind (the n-th variant: 0 is None where the field allows it)."""
    if n == 0 and field.allow_none:
        return None
    if isinstance(field, fields.Nested):
        return [body_of(type(field.schema), n)] if field.many else body_of(type(field.schema), n)
    if isinstance(field, fields.List):
        return [sample(field.inner, 1), sample(field.inner, 2)]
    if isinstance(field, fields.UUID):
        return uuid.uuid4()
    if isinstance(field, fields.DateTime):
        return NOW if n % 2 else ELSEWHERE
    if isinstance(field, fields.Integer):
        return 42 + n
    if isinstance(field, fields.Boolean):
        return bool(n % 2)
    if isinstance(field, fields.Dict):
        return {"id": n, "nested": {"amount": "1.00"}}
    assert isinstance(field, fields.String), field
    return f"text {n} \u00e9"


def body_of(schema: type[Schema], n: int) -> dict[str, Any]:
    return {(f.attribute or name): sample(f, n) for name, f in schema().dump_fields.items()}


def subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *subclasses(direct))]


# Every response schema: the shared ones in handlers/schemas.py, and each resource's beside its handlers.
for module in pkgutil.iter_modules(handlers.__path__, "handlers."):
    importlib.import_module(module.name)
OUTPUTS = sorted(set(subclasses(schemas.Output)), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("schema", OUTPUTS, ids=lambda cls: cls.__name__)
def test_every_response_schema_renders_as_marshmallow_would(schema: type[schemas.Output]) -> None:
    for n in range(3):
        same_json(schema(), body_of(schema, n))
    # A field absent from the body is left out, as marshmallow leaves it out (unless its name is a dict method's,
    # such as `items`, which marshmallow would then try to render: no body leaves those out).
    partial = body_of(schema, 1)
    for name in [name for name in partial if not hasattr(dict, name)][:1]:
        del partial[name]
        same_json(schema(), partial)


def test_objects_render_by_attribute() -> None:
    class Balance:
        wallet_id, currency, balance, available_balance = uuid.uuid4(), "USD", "1.00", "0.50"

    same_json(BalanceSchema(), Balance())
