"""The project's own documentation: every relative link in README.md and docs/*.md leads to a file (and heading)
inside the repository, and no file points at material a user of the repository does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_the_docs_exist_and_the_readme_points_to_them():
    assert {p.name for p in DOCS} >= {"README.md", "api.md", "architecture.md", "operations.md"}
    readme_links = set(LINK.findall((ROOT / "README.md").read_text()))
    assert {"docs/api.md", "docs/architecture.md", "docs/operations.md"} <= readme_links


def test_every_relative_link_resolves_inside_the_repository():
    checked = 0
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # an absolute URL (http:, https:, mailto:)
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            assert resolved.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
            assert resolved.exists(), f"{doc.name}: {target} does not exist"
            if anchor:
                assert anchor in anchors(resolved), f"{doc.name}: {target} names no heading of {resolved.name}"
            checked += 1
    assert checked >= 20


def test_nothing_refers_to_files_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    offenders = []
    for name in tracked.split():
        path = ROOT / name
        if path.suffix in (".png", ".json") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{name}: {m}" for m in re.findall(r"[.][.][/]shared\b|[/]work[/]\w+", text)]
    assert offenders == []


def test_the_docs_agree_on_the_oldest_postgresql():
    """Every "PostgreSQL N or later" in the docs names the same N, the oldest that CI tests (the machine's 15)."""
    said = {int(n) for doc in DOCS for n in re.findall(r"PostgreSQL (\d+) or later", doc.read_text())}
    assert said == {15}, said
