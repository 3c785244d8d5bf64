"""What can be checked of the deployment files without a container engine or systemd: every variable they set is a
setting and its value is valid, the command they run exists, and the ports agree with each other and with nginx."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, free_port

from settings import _PARSERS, Settings, load_settings

SETTINGS = set(_PARSERS)
NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()


@pytest.fixture(scope="module")
def subcommands() -> set[str]:
    usage = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(re.search(r"\{([a-z,-]+)\}", usage).group(1).split(","))


def assert_valid_settings(environment: dict[str, str]) -> None:
    assert set(environment) <= SETTINGS, set(environment) - SETTINGS
    load_settings({"JWT_SECRET": "s" * 32, "VAR_DIR": "/nonexistent", **environment})  # raises when a value is bad


def test_dockerfile(subcommands):
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()[:1] not in ("", "#")]
    instructions = [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in lines]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", dict(instructions)["FROM"])
    env = dict(
        pair.split("=", 1) for value in (v for k, v in instructions if k == "ENV") for pair in shlex.split(value)
    )
    assert_valid_settings(env)
    assert env["HOST"] == "0.0.0.0" and [v for k, v in instructions if k == "EXPOSE"] == [env["PORT"]]
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert dict(instructions)["ENTRYPOINT"] == '["wallet-server"]'
    assert set(yaml.safe_load(dict(instructions)["CMD"])) <= subcommands
    assert "requirements-dev" not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".env", "tests"} <= set(ignored)


def test_the_dockerfile_healthcheck_passes_only_when_the_server_is_ready(server):
    healthcheck = (ROOT / "Dockerfile").read_text().split("\nHEALTHCHECK", 1)[1].replace("\\\n", " ")
    command = json.loads(healthcheck.split("CMD", 1)[1].splitlines()[0])
    assert command[0] == "python" and "/ready" in command[-1]
    check = [sys.executable, *command[1:]]
    assert subprocess.run(check, env={"PORT": str(server.port)}, capture_output=True, timeout=30).returncode == 0
    assert subprocess.run(check, env={"PORT": str(free_port())}, capture_output=True, timeout=30).returncode != 0


def test_compose(subcommands):
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"wallet", "postgres", "redis", "nginx"}
    wallet = services["wallet"]
    # ${VAR:?message} is filled from the operator's .env; any valid stand-in will do here.
    stand_ins = {"POSTGRES_PASSWORD": "pw", "JWT_SECRET": "j" * 40}
    env = {
        k: re.sub(r"\$\{([A-Z_]+)[^}]*\}", lambda m: stand_ins[m.group(1)], str(v))
        for k, v in wallet["environment"].items()
    }
    assert_valid_settings(env)
    assert set(wallet["command"]) <= subcommands
    assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert int(env["PROCESSES"]) > 1 and env["HOST"] == "0.0.0.0"
    # nginx passes to the wallet service's port, and it is the one proxy the server trusts.
    assert f"server wallet:{env['PORT']};" in NGINX_CONF
    nginx = services["nginx"]
    assert env["TRUSTED_PROXIES"] == nginx["networks"]["backend"]["ipv4_address"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert {p.split(":")[1] for p in nginx["ports"]} == {"80", "443"}
    assert "listen 443 ssl;" in NGINX_CONF and "listen 80;" in NGINX_CONF


def test_systemd_unit(subcommands):
    pairs = [
        line.split("=", 1)
        for line in (ROOT / "deploy" / "wallet-server.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ]
    env = dict(pair.split("=", 1) for k, v in pairs if k == "Environment" for pair in shlex.split(v))
    assert_valid_settings(env)
    exec_start = shlex.split(dict(pairs)["ExecStart"])
    assert exec_start[0].endswith("/bin/wallet-server") and set(exec_start[1:]) <= subcommands
    assert dict(pairs)["User"] not in ("root", "0")
    assert f"server wallet:{env['PORT']};" in NGINX_CONF  # the port nginx's example passes to


def test_nginx_timeouts_fit_the_servers():
    """A quiet event stream outlives nginx's read and send timeouts (the server pings every EVENTS_PING_INTERVAL), and
    nginx drops an idle connection to the server before the server's IDLE_TIMEOUT would close it under a request."""
    defaults = Settings()

    def seconds(directive: str) -> int:
        (value,) = re.findall(rf"^\s*{directive} (\d+)s;", NGINX_CONF, re.M)
        return int(value)

    assert min(seconds("proxy_read_timeout"), seconds("proxy_send_timeout")) >= 2 * defaults.events_ping_interval
    assert seconds("keepalive_timeout") < defaults.idle_timeout


def test_env_example_and_the_readme_list_exactly_the_settings():
    example = set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert example == SETTINGS, example ^ SETTINGS
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_column = re.findall(r"^\| (.*?) \|", table, re.M)
    documented = {name for cell in first_column for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}
    assert documented == SETTINGS, documented ^ SETTINGS
