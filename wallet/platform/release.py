"""This release: the package's version and the git revision it was built from (`--version`, /health, /metrics).

Never fails: a server runs the same with no git on the machine, and says "unknown" for a revision it cannot know.
"""

from __future__ import annotations

import functools
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

# The source tree in a checkout; site-packages when installed, where there is neither pyproject.toml nor .git.
ROOT = Path(__file__).resolve().parents[2]
# Written into the package when it is built (setup.py): an installed server has no .git to ask.
REVISION_FILE = Path(__file__).with_name("REVISION")


@functools.cache
def version() -> str:
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():  # a checkout: its own version, even when an older build is installed beside it
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    return metadata.version("wallet-server")


@functools.cache
def revision() -> str:
    """The commit (12 hex digits): git's in a checkout, else the one stamped at build time, else "unknown"."""
    if (ROOT / ".git").exists():
        try:
            return subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass  # no git on this machine, or a copy of the tree that is no repository
    try:
        return REVISION_FILE.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def describe() -> str:
    """One line: `wallet-server 1.2.0 (revision 0123456789ab)`."""
    return f"wallet-server {version()} (revision {revision()})"
