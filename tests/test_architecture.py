"""The layers: import-linter's contracts hold; the single modules it cannot take as roots (server.py and serving.py
on top, settings.py between the platform and the kernel) import what their place allows, and the command line loads
the application only to serve; and docs/architecture.md's picture names every package of wallet/ and nothing that is
not there."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

WALLET = ROOT / "wallet"
# The most modules wallet/ may hold at its top level: the shared kernel. Everything else lives in a package.
KERNEL = {"__init__.py", "money.py", "errors.py", "principal.py"}


def our_imports(path: Path) -> set[str]:
    """The project's modules a file imports (anywhere in it, functions included), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    ours = {"server", "serving", "settings", "handlers", "wallet", "models"}
    return {name for name in found if name.split(".")[0] in ours}


def test_the_import_contracts_hold():
    linter = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_settings_imports_only_the_kernel_and_nothing_imports_the_server():
    from_settings = our_imports(ROOT / "settings.py")
    assert from_settings, "settings.py checks DEFAULT_CURRENCY with wallet.money"
    assert all(re.match(r"wallet\.(money|errors)\b", name) for name in from_settings), from_settings
    importers = [
        path.relative_to(ROOT)
        for folder in ("handlers", "wallet", "models")
        for path in (ROOT / folder).rglob("*.py")
        if any(name.split(".")[0] in ("server", "serving") for name in our_imports(path))
    ]
    assert importers == []


def test_the_command_line_loads_the_application_only_to_serve():
    # A one-line command (migrate, audit, backup, ...) starts without Tornado and the handlers, a third sooner.
    probe = "import sys, server; print(sorted({'tornado', 'handlers', 'serving'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
    assert "serving" in our_imports(ROOT / "server.py")  # and `serve` imports it


def test_wallet_holds_the_kernel_at_its_top_and_every_other_module_in_a_package():
    assert {p.name for p in WALLET.glob("*.py")} <= KERNEL
    for package in (p for p in WALLET.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"wallet/{package.name}/__init__.py says what it holds and may use"


def test_the_architecture_picture_names_every_package_and_only_those():
    text = (ROOT / "docs" / "architecture.md").read_text()
    picture = text.split("## The packages and their arrows", 1)[1].split("```")[1]
    named_packages = set(re.findall(r"wallet/([a-z_]+)/", picture))
    named_modules = set(re.findall(r"wallet/([a-z_]+\.py)", picture))
    packages = {p.name for p in WALLET.iterdir() if (p / "__init__.py").exists()}
    assert named_packages == packages
    assert named_modules == KERNEL - {"__init__.py"}
    # Each package's modules are listed beside it, by name.
    for package in packages:
        line = next(line for line in picture.splitlines() if f"wallet/{package}/" in line)
        modules = {p.stem for p in (WALLET / package).glob("*.py")} - {"__init__"}
        assert all(re.search(rf"\b{m}\b", picture) for m in modules), (package, line)
    for name in ("server.py", "serving.py", "handlers/", "settings.py", "models/"):
        assert name in picture
