"""make clean keeps the embedded database and the JWT secret; make distclean deletes them only when confirmed;
make help lists every target. Run on a copy of the Makefile in a scratch folder, never on this checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT


def make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scratch(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for folder in (".venv/bin", "node_modules/x", ".pytest_cache", "var/pgdata", "pkg/__pycache__"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "var" / "jwt_secret").write_text("s" * 48)
    return tmp_path


def test_clean_keeps_the_database_and_the_secret(tmp_path):
    folder = scratch(tmp_path)
    assert make(folder, "clean").returncode == 0
    assert not (folder / ".venv").exists() and not (folder / "node_modules").exists()
    assert not (folder / ".pytest_cache").exists() and not (folder / "pkg" / "__pycache__").exists()
    assert (folder / "var" / "jwt_secret").read_text() == "s" * 48 and (folder / "var" / "pgdata").is_dir()


def test_distclean_asks_first(tmp_path):
    folder = scratch(tmp_path)
    refused = make(folder, "distclean")  # no answer on stdin: nothing is deleted
    assert refused.returncode != 0 and "Type yes" in refused.stdout and "kept var" in refused.stdout
    assert (folder / "var" / "jwt_secret").exists() and (folder / ".venv").exists()
    done = make(folder, "distclean", "CONFIRM=yes")
    assert done.returncode == 0, done.stderr
    assert not (folder / "var").exists() and not (folder / ".venv").exists()


def test_help_lists_every_target():
    done = make(ROOT, "help")
    assert done.returncode == 0
    listed = {line.split()[0] for line in done.stdout.splitlines()}
    phony = set(re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split())
    assert listed == phony, (listed, phony)
