"""Settings: a bad value stops start-up with one line naming the variable; the JWT secret is made once per install;
secrets may come from files (VARIABLE_FILE); a misspelled setting is a warning at start."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from conftest import JWT_SECRET, ROOT, assert_one_line_naming, create_admin, free_port, make_user

from settings import SettingsError, load_settings, misspelled

SECRET = {"JWT_SECRET": JWT_SECRET}

BAD = [
    ("ACCESS_TOKEN_TTL", "abc"),
    ("ACCESS_TOKEN_TTL", "0"),
    ("ACCESS_TOKEN_TTL", "1.5"),
    ("REFRESH_TOKEN_TTL", "-5"),
    ("PORT", "70000"),
    ("PORT", "http"),
    ("PROCESSES", "0"),
    ("BCRYPT_ROUNDS", "3"),
    ("BCRYPT_ROUNDS", "40"),
    ("MAX_BODY_SIZE", "1e6"),
    ("DEFAULT_CURRENCY", "XYZ"),
    ("DEFAULT_CURRENCY", "dollars"),
    ("DATABASE_URL", "mysql://root:hunter2@db/wallet"),
    ("DATABASE_URL", "postgresql://root:hunter2@db:notaport/wallet"),
    ("DATABASE_READ_URL", "mysql://root:hunter2@replica/wallet"),
    ("REDIS_URL", "http://cache:6379"),
    ("REDIS_URL", "redis://cache:notaport/0"),
    ("JWT_SECRET", "too-short"),
    ("ALLOW_SELF_DEPOSIT", "maybe"),
    ("DAILY_WITHDRAW_LIMIT", "NaN"),
    ("DAILY_TRANSFER_LIMIT", "-1"),
    ("DAILY_TRANSFER_LIMIT", "lots"),
    ("LOGIN_MAX_FAILURES", "0"),
    ("DB_STATEMENT_TIMEOUT", "0"),
    ("DB_POOL_TIMEOUT", "30s"),
    ("DB_POOLER", "session"),
    ("DB_POOLER", "transaction"),  # with MIGRATE_ON_START's default, true: a migration cannot run through the pooler
    ("LOG_LEVEL", "LOUD"),
    ("PAYSTACK_BASE_URL", "ftp://api.paystack.co"),
    ("PAYSTACK_CALLBACK_URL", "javascript:alert(1)"),
    ("PAYSTACK_PENDING_TIMEOUT", "0"),
    ("TRUSTED_PROXIES", "10.0.0.0/33"),
    ("TRUSTED_PROXIES", "proxy.internal"),
    ("CORS_ORIGINS", "*"),
    ("CORS_ORIGINS", "https://app.example.com/"),
    ("CORS_ORIGINS", "app.example.com"),
    ("GOOGLE_DISCOVERY_URL", "ftp://accounts.example/.well-known/openid-configuration"),
    ("GOOGLE_REDIRECT_URL", "javascript:alert(1)"),
    ("GOOGLE_CLIENT_SECRET", "only-a-secret"),
    ("METRICS_TOKEN", "short"),
]


@pytest.mark.parametrize(("variable", "value"), BAD)
def test_invalid_values_name_the_variable(variable, value):
    with pytest.raises(SettingsError) as raised:
        load_settings({**SECRET, variable: value})
    message = str(raised.value)
    assert variable in message and "\n" not in message
    assert "hunter2" not in message  # a URL's password is never echoed


def test_server_refuses_to_start_with_one_line(database_url):
    env = {**os.environ, "DATABASE_URL": database_url, **SECRET, "PORT": str(free_port()), "ACCESS_TOKEN_TTL": "abc"}
    server = [sys.executable, str(ROOT / "server.py")]
    assert_one_line_naming(
        subprocess.run(server, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60), "ACCESS_TOKEN_TTL"
    )


def test_several_processes_need_redis(database_url):
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings({**SECRET, "PROCESSES": "2"})
    assert load_settings({**SECRET, "PROCESSES": "2", "REDIS_URL": "redis://127.0.0.1:6379/0"}).processes == 2
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"DATABASE_URL": database_url, **SECRET, "PORT": str(free_port())})
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--processes", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_naming(done, "PROCESSES")


def test_commands_refuse_to_start_with_one_line():
    assert_one_line_naming(create_admin("postgresql://root:hunter2@db:notaport/wallet", "someone"), "DATABASE_URL")


def test_good_values_are_parsed(tmp_path):
    settings = load_settings(
        {
            **SECRET,
            "ACCESS_TOKEN_TTL": "30",
            "DEFAULT_CURRENCY": "jpy",
            "ALLOW_SELF_DEPOSIT": "off",
            "DAILY_WITHDRAW_LIMIT": "250.50",
            "PORT": "0",
            "VAR_DIR": str(tmp_path),
        }
    )
    assert settings.access_token_ttl == 30
    assert settings.default_currency == "JPY"
    assert settings.allow_self_deposit is False
    assert str(settings.daily_withdraw_limit) == "250.50"
    assert settings.port == 0
    assert settings.jwt_secret == JWT_SECRET
    assert list(tmp_path.iterdir()) == []  # a configured secret writes nothing


def test_defaults(tmp_path):
    settings = load_settings({**SECRET, "VAR_DIR": str(tmp_path)})
    assert (settings.access_token_ttl, settings.default_currency, settings.port, settings.bcrypt_rounds) == (
        900,
        "USD",
        8000,
        12,
    )
    assert settings.database_url is None and settings.redis_url is None


def test_unset_jwt_secret_is_generated_once_per_install(tmp_path):
    first = load_settings({"VAR_DIR": str(tmp_path)})
    path = tmp_path / "jwt_secret"
    assert len(first.jwt_secret) >= 32 and path.read_text().strip() == first.jwt_secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_settings({"VAR_DIR": str(tmp_path)}).jwt_secret == first.jwt_secret
    other = load_settings({"VAR_DIR": str(tmp_path / "elsewhere")})
    assert other.jwt_secret != first.jwt_secret
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "jwt_secret"]


def _load_secret_together(var_dir: Path, barrier: threading.Barrier) -> str:
    barrier.wait()
    return load_settings({"VAR_DIR": str(var_dir)}).jwt_secret


def test_processes_starting_together_agree_on_one_secret(tmp_path):
    for attempt in range(20):
        var_dir = tmp_path / str(attempt)
        barrier = threading.Barrier(6)
        with ThreadPoolExecutor(max_workers=6) as pool:
            secrets = list(pool.map(_load_secret_together, [var_dir] * 6, [barrier] * 6))
        assert len(set(secrets)) == 1 and len(secrets[0]) >= 32, secrets
        assert [p.name for p in var_dir.iterdir()] == ["jwt_secret"]


@pytest.mark.parametrize("content", ["", "\n", "short"])
def test_an_unusable_secret_file_is_refused_not_used(tmp_path, content):
    (tmp_path / "jwt_secret").write_text(content)
    with pytest.raises(SettingsError) as raised:
        load_settings({"VAR_DIR": str(tmp_path)})
    assert "JWT_SECRET" in str(raised.value) and str(tmp_path / "jwt_secret") in str(raised.value)


def test_trusted_proxies_and_cors_origins_parse_into_sets():
    settings = load_settings(
        {**SECRET, "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,::1", "CORS_ORIGINS": "https://a.io,"}
    )
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert settings.cors_origins == {"https://a.io"}
    assert load_settings(SECRET).trusted_proxies == () and not load_settings(SECRET).cors_origins


def test_secrets_from_files_and_misspelled_settings_at_start(own_server, database_url, tmp_path):
    """Docker's and systemd's credentials: JWT_SECRET_FILE and DATABASE_URL_FILE name files holding the values (the
    final newline dropped); and a typo of a setting, or an unknown WALLET_ variable, is one warning line at start."""
    (tmp_path / "jwt").write_text(JWT_SECRET + "\n")
    (tmp_path / "database").write_text(database_url + "\n")
    server = own_server(
        JWT_SECRET="",
        JWT_SECRET_FILE=str(tmp_path / "jwt"),
        DATABASE_URL="",
        DATABASE_URL_FILE=str(tmp_path / "database"),
        LOGIN_WINDWO="60",
        WALLET_THEME="dark",
    )
    user = make_user(server)
    assert jwt.decode(user.token, JWT_SECRET, algorithms=["HS256"])["sub"] == user.id  # signed with the file's secret
    warnings = [(e["level"], e["msg"]) for e in server.log_entries() if "not a setting" in e["msg"]]
    assert warnings == [
        ("warning", "LOGIN_WINDWO is not a setting; did you mean LOGIN_WINDOW?"),
        ("warning", "WALLET_THEME is not a setting (docs/operations.md lists them)"),
    ]


def test_a_secret_file_is_read_and_refused_in_one_line(tmp_path):
    (tmp_path / "token").write_text("m" * 20 + "\n")
    assert load_settings({**SECRET, "METRICS_TOKEN_FILE": str(tmp_path / "token")}).metrics_token == "m" * 20
    for environ, named in [
        ({"JWT_SECRET_FILE": str(tmp_path / "missing")}, "JWT_SECRET_FILE"),
        ({**SECRET, "JWT_SECRET_FILE": str(tmp_path / "token")}, "JWT_SECRET and JWT_SECRET_FILE"),
        ({**SECRET, "METRICS_TOKEN_FILE": str(tmp_path)}, "METRICS_TOKEN_FILE"),  # a directory
    ]:
        with pytest.raises(SettingsError) as raised:
            load_settings(environ)
        assert named in str(raised.value) and "\n" not in str(raised.value)
    assert misspelled({**SECRET, "JWT_SECRET_FILE": "x", "PATH": "/bin", "HOSTNAME": "h", "REDIS_PORT": "1"}) == []
