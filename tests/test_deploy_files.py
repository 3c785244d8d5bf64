"""What can be checked of the deployment files without a container engine or systemd: every variable they set is a
setting and its value is valid, the command they run exists, the ports agree with each other and with nginx, the
compose file's drain, logs, health checks and secrets, and the unit's readiness and hardening (scored by
`systemd-analyze security --offline` where it is installed)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT, free_port

from serving import WORKER_GRACE_MARGIN
from settings import _FROM_FILE, _PARSERS, Settings, load_settings

SETTINGS = set(_PARSERS)
NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()


@pytest.fixture(scope="module")
def subcommands() -> set[str]:
    usage = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(re.search(r"\{([a-z,-]+)\}", usage).group(1).split(","))


def assert_valid_settings(environment: dict[str, str]) -> None:
    known = SETTINGS | {f"{variable}_FILE" for variable in _FROM_FILE}
    assert set(environment) <= known, set(environment) - known
    secret = {} if "JWT_SECRET_FILE" in environment else {"JWT_SECRET": "s" * 32}
    load_settings({**secret, "VAR_DIR": "/nonexistent", **environment})  # raises when a value is bad


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
    # The runtime alone: no test tools, and no embedded PostgreSQL (the container is given DATABASE_URL).
    assert [v for k, v in instructions if k == "RUN" and "requirements" in v] == [
        "pip install --no-cache-dir --disable-pip-version-check -r requirements.txt"
    ]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".env", "tests"} <= set(ignored)


def test_the_dockerfile_healthcheck_passes_only_when_the_server_is_ready(server):
    healthcheck = (ROOT / "Dockerfile").read_text().split("\nHEALTHCHECK", 1)[1].replace("\\\n", " ")
    command = json.loads(healthcheck.split("CMD", 1)[1].splitlines()[0])
    assert command[0] == "python" and "/ready" in command[-1]
    check = [sys.executable, *command[1:]]
    assert subprocess.run(check, env={"PORT": str(server.port)}, capture_output=True, timeout=30).returncode == 0
    assert subprocess.run(check, env={"PORT": str(free_port())}, capture_output=True, timeout=30).returncode != 0


def test_compose(subcommands, tmp_path):
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"wallet", "postgres", "redis", "nginx"}
    wallet = services["wallet"]
    # Secrets are files the operator makes (compose's secrets:), named by *_FILE: stand-ins of valid values here.
    files = {name: Path(spec["file"]) for name, spec in compose["secrets"].items()}
    assert all(path.parent == Path("secrets") for path in files.values())
    stand_ins = {"database_url": "postgresql://wallet:pw@postgres:5432/wallet", "jwt_secret": "j" * 40}
    env = {k: str(v) for k, v in wallet["environment"].items()}
    for variable, path in [(k, v) for k, v in env.items() if k.endswith("_FILE")]:
        name = path.removeprefix("/run/secrets/")
        assert name in wallet["secrets"] and name in files, variable
        (tmp_path / name).write_text(stand_ins[name] + "\n")
        env[variable] = str(tmp_path / name)
    assert {"DATABASE_URL_FILE", "JWT_SECRET_FILE"} <= set(env) and not {"DATABASE_URL", "JWT_SECRET"} & set(env)
    assert_valid_settings(env)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert set(wallet["command"]) <= subcommands
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert int(env["PROCESSES"]) > 1 and env["HOST"] == "0.0.0.0"
    # SIGKILL comes only after the drain: SHUTDOWN_GRACE and the parent's margin after it.
    assert int(wallet["stop_grace_period"].removesuffix("s")) > Settings().shutdown_grace + WORKER_GRACE_MARGIN
    # Bounded logs everywhere; each service starts once what it needs is healthy (the image's HEALTHCHECK for wallet).
    for name, service in services.items():
        assert service["logging"]["options"]["max-size"], name
        assert "healthcheck" in service or name == "wallet", name
    assert wallet["depends_on"] == {name: {"condition": "service_healthy"} for name in ("postgres", "redis")}
    assert services["nginx"]["depends_on"] == {"wallet": {"condition": "service_healthy"}}
    assert "\nHEALTHCHECK" in (ROOT / "Dockerfile").read_text()
    # nginx passes to the wallet service's port, and it is the one proxy the server trusts.
    assert f"server wallet:{env['PORT']};" in NGINX_CONF
    nginx = services["nginx"]
    assert env["TRUSTED_PROXIES"] == nginx["networks"]["backend"]["ipv4_address"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert {p.split(":")[1] for p in nginx["ports"]} == {"80", "443"}
    assert "listen 443 ssl;" in NGINX_CONF and "listen 80;" in NGINX_CONF
    # The operator's secret files: made as docs/operations.md says, and never in git or the image.
    assert "@postgres:5432/wallet" in (ROOT / "docs" / "operations.md").read_text()
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()
    assert "secrets" in (ROOT / ".dockerignore").read_text().split()


# What `systemd-analyze security` weighs most, each set as the unit sets it.
HARDENING = {
    "NoNewPrivileges": "true",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "PrivateUsers": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectControlGroups": "true",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "true",
    "RestrictSUIDSGID": "true",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}
UNIT = ROOT / "deploy" / "wallet-server.service"


def test_systemd_unit(subcommands, tmp_path):
    pairs = [line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")]
    env = dict(pair.split("=", 1) for k, v in pairs if k == "Environment" for pair in shlex.split(v))
    assert_valid_settings(env)
    unit = dict(pairs)
    exec_start = shlex.split(unit["ExecStart"])
    assert exec_start[0].endswith("/bin/wallet-server") and set(exec_start[1:]) <= subcommands
    assert unit["User"] not in ("root", "0")
    assert f"server wallet:{env['PORT']};" in NGINX_CONF  # the port nginx's example passes to
    assert unit["Type"] == "notify" and unit["WorkingDirectory"] == env["VAR_DIR"]
    assert int(unit["TimeoutStopSec"]) > Settings().shutdown_grace + WORKER_GRACE_MARGIN  # the drain is not cut short
    assert unit["StateDirectory"] == env["VAR_DIR"].removeprefix("/var/lib/")
    assert {k: unit.get(k) for k in HARDENING} == HARDENING
    assert "~@privileged" in [v for k, v in pairs if k == "SystemCallFilter"]
    if shutil.which("systemd-analyze"):  # the score itself, offline, where systemd's tools are installed
        shutil.copy(UNIT, tmp_path / UNIT.name)
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(tmp_path / UNIT.name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout).group(1))
        assert score <= 4, done.stdout


def test_the_server_tells_systemd_it_is_ready(own_server, tmp_path):
    """Type=notify: READY=1 on $NOTIFY_SOCKET, sent once the server has migrated and listens (by the main process,
    the one systemd listens to, with several workers too)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        systemd.settimeout(30)
        server = own_server(NOTIFY_SOCKET=str(tmp_path / "notify"), PROCESSES="2")
        assert systemd.recv(1024) == b"READY=1"
        assert httpx.get(f"{server.url}/ready").status_code == 200
        systemd.setblocking(False)
        with pytest.raises(BlockingIOError):
            systemd.recv(1024)  # nothing more: the workers say nothing


def test_nginx_timeouts_fit_the_servers():
    """A quiet event stream outlives nginx's read and send timeouts (the server pings every EVENTS_PING_INTERVAL), and
    nginx drops an idle connection to the server before the server would close it under a request: at IDLE_TIMEOUT, or
    when a stopping server's DRAIN_DELAY is over."""
    defaults = Settings()

    def seconds(directive: str) -> int:
        (value,) = re.findall(rf"^\s*{directive} (\d+)s;", NGINX_CONF, re.M)
        return int(value)

    assert min(seconds("proxy_read_timeout"), seconds("proxy_send_timeout")) >= 2 * defaults.events_ping_interval
    assert seconds("keepalive_timeout") < min(defaults.drain_delay, defaults.idle_timeout)


def test_env_example_and_the_readme_list_exactly_the_settings():
    example = set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert example == SETTINGS, example ^ SETTINGS
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_column = re.findall(r"^\| (.*?) \|", table, re.M)
    documented = {name for cell in first_column for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}
    assert documented == SETTINGS, documented ^ SETTINGS
