"""Settings: the only place that reads the environment (and an optional .env file)."""

from __future__ import annotations

import difflib
import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

# var/ and .env are the working directory's: the checkout under `make run`, the service's own directory when the
# package is installed (never inside site-packages).
WORKDIR = Path.cwd()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class StartupError(Exception):
    """A command cannot start (or finish) for a reason the operator must fix: the message says it in one line and
    names the setting to blame, if one is."""


class SettingsError(StartupError):
    """A setting has an invalid value; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    database_read_url: str | None = None
    database_session_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "wallet:"
    jwt_secret: str = ""
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    default_currency: str = "USD"
    host: str = "127.0.0.1"
    port: int = 8000
    processes: int = 1
    bcrypt_rounds: int = 12
    max_body_size: int = 64 * 1024
    # POST /transfers/batch alone: up to 1,000 items of about 0.5 KiB each (with a description), and room to spare.
    max_batch_body_size: int = 2 * 1024 * 1024
    max_connections: int = 10_000
    idle_timeout: int = 30
    shutdown_grace: int = 30
    drain_delay: int = 5
    body_timeout: int = 30
    daily_withdraw_limit: Decimal = Decimal("100.00")
    daily_transfer_limit: Decimal = Decimal("100.00")
    allow_self_deposit: bool = True
    pending_timeout: int = 60
    fx_quote_ttl: int = 30
    recovery_interval: int = 30
    schedule_interval: int = 30
    revocation_poll_interval: int = 1
    login_max_failures: int = 5
    login_ip_max_failures: int = 50
    login_account_max_failures: int = 100
    login_window: int = 900
    step_up_window: int = 300
    step_up_amount: Decimal = Decimal("1000")
    admin_require_2fa: bool = False
    db_pool_size: int = 20
    db_statement_timeout: int = 5
    db_pool_timeout: int = 5
    db_pooler: str = "none"
    migrate_on_start: bool = True
    log_level: str = "INFO"
    admin_password: str | None = None
    paystack_secret_key: str | None = None
    paystack_base_url: str = "https://api.paystack.co"
    paystack_callback_url: str | None = None
    paystack_pending_timeout: int = 24 * 3600
    trusted_proxies: tuple[Network, ...] = ()
    cors_origins: frozenset[str] = frozenset()
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    google_redirect_url: str | None = None
    metrics_token: str | None = None
    statement_pdf_max_entries: int = 100_000
    var_dir: Path = WORKDIR / "var"
    events_poll_ms: int = 250
    events_ping_interval: int = 20
    webhook_allow_private: bool = False
    webhook_first_retry_ms: int = 5000
    webhook_retry_for: int = 3 * 24 * 3600
    webhook_connect_timeout: int = 3
    webhook_concurrency: int = 64
    webhook_endpoint_concurrency: int = 4
    webhook_user_concurrency: int = 10
    webhook_breaker_failures: int = 5
    webhook_breaker_cooldown_ms: int = 30_000
    mail_concurrency: int = 8
    smtp_url: str | None = None
    mail_from: str = "Wallet <wallet@localhost>"


def _int(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return parse


def _bool(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    return parse


def _limit(name: str) -> Callable[[str], Decimal]:
    def parse(raw: str) -> Decimal:
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise SettingsError(f"{name} must be a decimal amount, got {raw!r}") from None
        if not value.is_finite() or value < 0:
            raise SettingsError(f"{name} must be a non-negative amount (0 = unlimited), got {raw!r}")
        return value

    return parse


def _currency(raw: str) -> str:
    from wallet.money import currency_exponent

    code = raw.strip().upper()
    if currency_exponent(code) is None:
        raise SettingsError(f"DEFAULT_CURRENCY must be an ISO 4217 currency code, got {raw!r}")
    return code


def _url(name: str, schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        # A URL may carry a password: say what is wrong without echoing it.
        if not raw.startswith(schemes):
            raise SettingsError(f"{name} must start with one of {', '.join(schemes)}")
        try:
            port = urlsplit(raw).port
        except ValueError:
            port = -1  # not a number, or out of range
        if port == -1:
            raise SettingsError(f"{name} is not a valid URL (check its host and port)")
        return raw

    return parse


def _mail_from(raw: str) -> str:
    from email.utils import parseaddr

    if "@" not in parseaddr(raw)[1]:
        raise SettingsError(f"MAIL_FROM must be an address such as 'Wallet <wallet@example.com>', got {raw!r}")
    return raw


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
    return level


def _db_pooler(raw: str) -> str:
    pooler = raw.strip().lower()
    if pooler not in ("none", "transaction"):
        raise SettingsError(f"DB_POOLER must be none or transaction, got {raw!r}")
    return pooler


def _secret(name: str, length: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if len(raw) < length:
            raise SettingsError(f"{name} must be at least {length} characters long")
        return raw

    return parse


def _networks(raw: str) -> tuple[Network, ...]:
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"TRUSTED_PROXIES must be addresses or CIDRs, comma-separated; got {item!r}") from None
    return tuple(networks)


def _origins(raw: str) -> frozenset[str]:
    origins = set()
    for item in filter(None, (part.strip() for part in raw.split(","))):
        # An origin is exactly scheme://host[:port] as a browser sends it: no path, no wildcard, no trailing slash.
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or item != f"{parts.scheme}://{parts.netloc}":
            raise SettingsError(f"CORS_ORIGINS must be exact origins like https://app.example.com; got {item!r}")
        origins.add(item)
    return frozenset(origins)


# environment variable -> (Settings field, parser)
_PARSERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "DATABASE_URL": ("database_url", _url("DATABASE_URL", ("postgresql://", "postgres://", "postgresql+"))),
    "DATABASE_READ_URL": (
        "database_read_url",
        _url("DATABASE_READ_URL", ("postgresql://", "postgres://", "postgresql+")),
    ),
    "DATABASE_SESSION_URL": (
        "database_session_url",
        _url("DATABASE_SESSION_URL", ("postgresql://", "postgres://", "postgresql+")),
    ),
    "REDIS_URL": ("redis_url", _url("REDIS_URL", ("redis://", "rediss://", "unix://"))),
    "REDIS_PREFIX": ("redis_prefix", str),
    "JWT_SECRET": ("jwt_secret", _secret("JWT_SECRET", 32)),
    "ACCESS_TOKEN_TTL": ("access_token_ttl", _int("ACCESS_TOKEN_TTL", 5, 7 * 24 * 3600)),
    "REFRESH_TOKEN_TTL": ("refresh_token_ttl", _int("REFRESH_TOKEN_TTL", 60, 365 * 24 * 3600)),
    "DEFAULT_CURRENCY": ("default_currency", _currency),
    "HOST": ("host", str),
    "PORT": ("port", _int("PORT", 0, 65535)),
    "PROCESSES": ("processes", _int("PROCESSES", 1, 64)),
    "BCRYPT_ROUNDS": ("bcrypt_rounds", _int("BCRYPT_ROUNDS", 4, 16)),
    "MAX_BODY_SIZE": ("max_body_size", _int("MAX_BODY_SIZE", 1024, 16 * 1024 * 1024)),
    "MAX_BATCH_BODY_SIZE": ("max_batch_body_size", _int("MAX_BATCH_BODY_SIZE", 1024, 64 * 1024 * 1024)),
    "MAX_CONNECTIONS": ("max_connections", _int("MAX_CONNECTIONS", 1, 1_000_000)),
    "IDLE_TIMEOUT": ("idle_timeout", _int("IDLE_TIMEOUT", 1, 3600)),
    "BODY_TIMEOUT": ("body_timeout", _int("BODY_TIMEOUT", 1, 3600)),
    "SHUTDOWN_GRACE": ("shutdown_grace", _int("SHUTDOWN_GRACE", 1, 3600)),
    "DRAIN_DELAY": ("drain_delay", _int("DRAIN_DELAY", 0, 600)),
    "DAILY_WITHDRAW_LIMIT": ("daily_withdraw_limit", _limit("DAILY_WITHDRAW_LIMIT")),
    "DAILY_TRANSFER_LIMIT": ("daily_transfer_limit", _limit("DAILY_TRANSFER_LIMIT")),
    "ALLOW_SELF_DEPOSIT": ("allow_self_deposit", _bool("ALLOW_SELF_DEPOSIT")),
    "PENDING_TIMEOUT": ("pending_timeout", _int("PENDING_TIMEOUT", 1, 24 * 3600)),
    "RECOVERY_INTERVAL": ("recovery_interval", _int("RECOVERY_INTERVAL", 1, 3600)),
    "SCHEDULE_INTERVAL": ("schedule_interval", _int("SCHEDULE_INTERVAL", 1, 3600)),
    "FX_QUOTE_TTL": ("fx_quote_ttl", _int("FX_QUOTE_TTL", 1, 3600)),
    "REVOCATION_POLL_INTERVAL": ("revocation_poll_interval", _int("REVOCATION_POLL_INTERVAL", 1, 60)),
    "LOGIN_MAX_FAILURES": ("login_max_failures", _int("LOGIN_MAX_FAILURES", 1, 1000)),
    "LOGIN_IP_MAX_FAILURES": ("login_ip_max_failures", _int("LOGIN_IP_MAX_FAILURES", 1, 100000)),
    "LOGIN_ACCOUNT_MAX_FAILURES": ("login_account_max_failures", _int("LOGIN_ACCOUNT_MAX_FAILURES", 1, 100000)),
    "LOGIN_WINDOW": ("login_window", _int("LOGIN_WINDOW", 1, 24 * 3600)),
    "STEP_UP_WINDOW": ("step_up_window", _int("STEP_UP_WINDOW", 10, 24 * 3600)),
    "STEP_UP_AMOUNT": ("step_up_amount", _limit("STEP_UP_AMOUNT")),
    "ADMIN_REQUIRE_2FA": ("admin_require_2fa", _bool("ADMIN_REQUIRE_2FA")),
    "DB_POOL_SIZE": ("db_pool_size", _int("DB_POOL_SIZE", 1, 500)),
    "DB_STATEMENT_TIMEOUT": ("db_statement_timeout", _int("DB_STATEMENT_TIMEOUT", 1, 3600)),
    "DB_POOL_TIMEOUT": ("db_pool_timeout", _int("DB_POOL_TIMEOUT", 1, 300)),
    "DB_POOLER": ("db_pooler", _db_pooler),
    "MIGRATE_ON_START": ("migrate_on_start", _bool("MIGRATE_ON_START")),
    "LOG_LEVEL": ("log_level", _log_level),
    "VAR_DIR": ("var_dir", Path),
    "WALLET_ADMIN_PASSWORD": ("admin_password", str),
    "PAYSTACK_SECRET_KEY": ("paystack_secret_key", str),
    "PAYSTACK_BASE_URL": ("paystack_base_url", _url("PAYSTACK_BASE_URL", ("https://", "http://"))),
    "PAYSTACK_CALLBACK_URL": ("paystack_callback_url", _url("PAYSTACK_CALLBACK_URL", ("https://", "http://"))),
    "PAYSTACK_PENDING_TIMEOUT": ("paystack_pending_timeout", _int("PAYSTACK_PENDING_TIMEOUT", 1, 30 * 24 * 3600)),
    "TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "CORS_ORIGINS": ("cors_origins", _origins),
    "GOOGLE_CLIENT_ID": ("google_client_id", str),
    "GOOGLE_CLIENT_SECRET": ("google_client_secret", str),
    "GOOGLE_DISCOVERY_URL": ("google_discovery_url", _url("GOOGLE_DISCOVERY_URL", ("https://", "http://"))),
    "GOOGLE_REDIRECT_URL": ("google_redirect_url", _url("GOOGLE_REDIRECT_URL", ("https://", "http://"))),
    "METRICS_TOKEN": ("metrics_token", _secret("METRICS_TOKEN", 16)),
    "STATEMENT_PDF_MAX_ENTRIES": ("statement_pdf_max_entries", _int("STATEMENT_PDF_MAX_ENTRIES", 1, 1_000_000)),
    "EVENTS_POLL_MS": ("events_poll_ms", _int("EVENTS_POLL_MS", 10, 60000)),
    "EVENTS_PING_INTERVAL": ("events_ping_interval", _int("EVENTS_PING_INTERVAL", 1, 3600)),
    "WEBHOOK_ALLOW_PRIVATE": ("webhook_allow_private", _bool("WEBHOOK_ALLOW_PRIVATE")),
    "WEBHOOK_FIRST_RETRY_MS": ("webhook_first_retry_ms", _int("WEBHOOK_FIRST_RETRY_MS", 10, 3600 * 1000)),
    "WEBHOOK_RETRY_FOR": ("webhook_retry_for", _int("WEBHOOK_RETRY_FOR", 1, 30 * 24 * 3600)),
    "WEBHOOK_CONNECT_TIMEOUT": ("webhook_connect_timeout", _int("WEBHOOK_CONNECT_TIMEOUT", 1, 10)),
    "WEBHOOK_CONCURRENCY": ("webhook_concurrency", _int("WEBHOOK_CONCURRENCY", 1, 1000)),
    "WEBHOOK_ENDPOINT_CONCURRENCY": ("webhook_endpoint_concurrency", _int("WEBHOOK_ENDPOINT_CONCURRENCY", 1, 100)),
    "WEBHOOK_USER_CONCURRENCY": ("webhook_user_concurrency", _int("WEBHOOK_USER_CONCURRENCY", 1, 1000)),
    "WEBHOOK_BREAKER_FAILURES": ("webhook_breaker_failures", _int("WEBHOOK_BREAKER_FAILURES", 1, 1000)),
    "WEBHOOK_BREAKER_COOLDOWN_MS": (
        "webhook_breaker_cooldown_ms",
        _int("WEBHOOK_BREAKER_COOLDOWN_MS", 10, 3600 * 1000),
    ),
    "MAIL_CONCURRENCY": ("mail_concurrency", _int("MAIL_CONCURRENCY", 1, 100)),
    "SMTP_URL": ("smtp_url", _url("SMTP_URL", ("smtp://", "smtps://"))),
    "MAIL_FROM": ("mail_from", _mail_from),
}


def _persistent_secret(var_dir: Path) -> str:
    """A random per-install JWT secret, generated once and kept under var/."""
    path = var_dir / "jwt_secret"
    try:
        if not path.exists():
            var_dir.mkdir(parents=True, exist_ok=True)
            draft = var_dir / f".jwt_secret.{secrets.token_hex(8)}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            try:
                # Appears whole or not at all, and never replaces another's: processes starting together agree.
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        secret = path.read_text().strip()
    except OSError as error:
        raise SettingsError(f"JWT_SECRET is unset and {path} cannot be kept: {error.strerror}") from None
    if len(secret) < 32:
        raise SettingsError(f"JWT_SECRET is unset and {path} holds no usable secret; delete it to make a new one")
    return secret


# The settings that may hold a secret, which may instead be read from the file that VARIABLE_FILE names: Docker's and
# systemd's credentials (/run/secrets/..., $CREDENTIALS_DIRECTORY/...), so the secret is in no environment listing.
_FROM_FILE = (
    "DATABASE_URL",
    "DATABASE_READ_URL",
    "DATABASE_SESSION_URL",
    "REDIS_URL",
    "JWT_SECRET",
    "METRICS_TOKEN",
    "PAYSTACK_SECRET_KEY",
    "GOOGLE_CLIENT_SECRET",
    "SMTP_URL",
    "WALLET_ADMIN_PASSWORD",
)
# An unknown variable starting with this is meant for us (a typo, or a setting of another version).
_PREFIX = "WALLET_"


def _environment() -> dict[str, str]:
    """.env (if present) overlaid by the process environment."""
    return {**{k: v for k, v in dotenv_values(WORKDIR / ".env").items() if v is not None}, **os.environ}


def _read_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The secrets given as VARIABLE_FILE: each file's content, without its final newline."""
    found = {}
    for variable in _FROM_FILE:
        path = environ.get(f"{variable}_FILE")
        if not path:
            continue
        if environ.get(variable):
            raise SettingsError(f"{variable} and {variable}_FILE are both set; keep one")
        try:
            found[variable] = Path(path).read_text().rstrip("\r\n")
        except OSError as error:
            raise SettingsError(f"{variable}_FILE: cannot read {path}: {error.strerror}") from None
    return found


def notify_socket() -> str:
    """systemd's $NOTIFY_SOCKET under Type=notify (its protocol, not a setting of ours): where the server says it is
    ready, or "" when systemd did not start it."""
    return os.environ.get("NOTIFY_SOCKET", "")


def misspelled(environ: Mapping[str, str] | None = None) -> list[str]:
    """A line for each variable that looks meant for us but is no setting: one close to a setting's name (a typo such
    as LOGIN_WINDWO), or an unknown one with our prefix. Warnings, not errors: the environment is shared with
    everything else the machine runs, and an unknown name changes nothing."""
    environ = _environment() if environ is None else environ
    known = [*_PARSERS, *(f"{variable}_FILE" for variable in _FROM_FILE)]
    lines = []
    for name in sorted(set(environ) - set(known)):
        if close := difflib.get_close_matches(name, known, n=1, cutoff=0.85):
            lines.append(f"{name} is not a setting; did you mean {close[0]}?")
        elif name.startswith(_PREFIX):
            lines.append(f"{name} is not a setting (docs/operations.md lists them)")
    return lines


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from .env (if present) overlaid by the process environment, then by `overrides`
    (the command line's, named like the variables); a secret may come from the file VARIABLE_FILE names."""
    environ = {**(_environment() if environ is None else environ), **(overrides or {})}
    environ = {**environ, **_read_files(environ)}
    values: dict[str, object] = {}
    for variable, (field, parse) in _PARSERS.items():
        raw = environ.get(variable)
        if raw is not None and raw != "":
            values[field] = parse(raw)
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.processes > 1 and not settings.redis_url:
        # Without Redis each process would keep its own revocations and login counters.
        raise SettingsError("PROCESSES above 1 needs REDIS_URL, so that every process shares logouts and throttling")
    if settings.drain_delay >= settings.shutdown_grace:
        # The listener stays open for DRAIN_DELAY out of SHUTDOWN_GRACE: what was read then needs time to finish.
        raise SettingsError(
            f"DRAIN_DELAY ({settings.drain_delay}) must be shorter than SHUTDOWN_GRACE ({settings.shutdown_grace})"
        )
    if settings.db_pooler == "transaction" and settings.migrate_on_start:
        # A migration holds a session's advisory lock and lock_timeout (migrations/env.py): through a transaction
        # pooler they would stay on whichever server connection ran them, held for nobody.
        raise SettingsError(
            "DB_POOLER=transaction needs MIGRATE_ON_START=false: run `wallet-server migrate` with a DATABASE_URL "
            "that reaches PostgreSQL itself, not the pooler"
        )
    google = {
        "GOOGLE_CLIENT_ID": settings.google_client_id,
        "GOOGLE_CLIENT_SECRET": settings.google_client_secret,
        "GOOGLE_REDIRECT_URL": settings.google_redirect_url,
    }
    if any(google.values()) and not all(google.values()):
        missing = ", ".join(name for name, value in google.items() if not value)
        raise SettingsError(f"Google sign-in needs {', '.join(google)} together; {missing} unset")
    if not settings.jwt_secret:
        settings = Settings(**{**values, "jwt_secret": _persistent_secret(settings.var_dir)})  # type: ignore[arg-type]
    return settings
