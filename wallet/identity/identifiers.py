"""E-mail addresses as identifiers: one normal form to store, one key to compare, and no look-alikes."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from wallet.errors import ValidationError

# Scripts that are written together (Japanese mixes Han, Hiragana and Katakana) count as one.
_SCRIPT_FAMILY = {"CJK": "HAN", "HIRAGANA": "HAN", "KATAKANA": "HAN", "HANGUL": "HAN"}


def _scripts(text: str) -> set[str]:
    """The scripts of the letters in `text`, by the first word of their Unicode names (LATIN, CYRILLIC, ...)."""
    scripts = set()
    for char in text:
        if unicodedata.category(char).startswith("L"):
            script = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
            scripts.add(_SCRIPT_FAMILY.get(script, script))
    return scripts


def normalize_email(text: str, field: str) -> str:
    """The address to store: NFKC (full-width letters and ligatures become the plain letters they stand for),
    checked and normalised by email_validator (the domain lower-cased). The local part and each domain label
    must be written in one script: a Latin name with a Cyrillic letter in it is refused, not a new account."""
    try:
        address = validate_email(unicodedata.normalize("NFKC", text), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValidationError({field: [str(error)]}) from None
    local, _, domain = address.rpartition("@")
    if any(len(_scripts(part)) > 1 for part in (local, *domain.split("."))):
        raise ValidationError({field: ["Must not mix letters of different scripts (such as Latin and Cyrillic)."]})
    return address


def email_key(address: str) -> str:
    """What two addresses are compared by, here and in the database's unique index: NFKC with full case folding,
    so `İ`, `ß` and their other spellings meet (PostgreSQL's lower() and Python's lower() disagree on them)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", address).casefold())
