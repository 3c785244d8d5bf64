"""Money: exact conversion between the API's decimal amounts and integer minor units per ISO 4217 currency."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import cache

import iso4217

from wallet.errors import ValidationError

# No single amount may exceed this many major units; keeps sums far from BIGINT overflow.
MAX_MAJOR_UNITS = Decimal(10) ** 12

# A plain ASCII decimal; Decimal() alone would also take "1_000", "NaN" and non-ASCII digits.
DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?")


@cache
def currency_exponent(code: str) -> int | None:
    """Minor digits of an ISO 4217 currency usable for money (None for unknown codes and for XAU-like units)."""
    if len(code) != 3 or not code.isascii() or not code.isupper():
        return None
    try:
        return iso4217.Currency(code).exponent
    except ValueError:
        return None


@cache
def currencies() -> tuple[str, ...]:
    """Every currency a wallet may hold: the ISO 4217 codes with minor digits, sorted."""
    return tuple(sorted(c.code for c in iso4217.Currency if c.exponent is not None))


def normalize_currency(raw: object, field: str = "currency") -> str:
    code = raw.strip().upper() if isinstance(raw, str) else ""
    if currency_exponent(code) is None:
        raise ValidationError({field: ["Unknown currency; use an ISO 4217 code such as USD."]})
    return code


def exact_decimal(raw: object, field: str) -> Decimal:
    """Parse a JSON decimal (string, integer or exact Decimal) without any float round trip; finite."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
        raise ValidationError({field: ["Must be a decimal string or a number."]})
    try:
        value = Decimal(raw) if not isinstance(raw, str) or DECIMAL_TEXT.fullmatch(raw) else None
    except (InvalidOperation, ValueError):
        value = None
    if value is None or not value.is_finite():
        raise ValidationError({field: ['Must be a finite decimal number such as "10.50".']})
    return value


def decimal_places(value: Decimal) -> int:
    """Significant decimal places of an exact Decimal ("1.50" has 1), counted from its digits: scaleb() or
    normalize() would round to the context's 28 digits and take 0.1000...01 for 0.1."""
    _, digits, power = value.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(-(int(power) + trailing_zeros), 0)


def parse_decimal(raw: object, field: str = "amount") -> Decimal:
    """Parse a JSON amount (string, integer or exact Decimal) without any float round trip."""
    value = exact_decimal(raw, field)
    if value <= 0:
        raise ValidationError({field: ["Must be greater than zero."]})
    if value > MAX_MAJOR_UNITS:
        raise ValidationError({field: [f"Must not exceed {MAX_MAJOR_UNITS:,}."]})
    return value


def to_minor(value: Decimal, currency: str, field: str = "amount") -> int:
    """Decimal major units -> integer minor units, refusing more decimal places than the currency has."""
    exponent = currency_exponent(currency)
    assert exponent is not None
    if decimal_places(value) > exponent:
        raise ValidationError({field: [f"{currency} allows at most {exponent} decimal places."]})
    return int(value.scaleb(exponent))


def format_minor(minor: int, currency: str) -> str:
    """Integer minor units -> the API's decimal string with exactly the currency's minor digits."""
    exponent = currency_exponent(currency)
    assert exponent is not None
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"
