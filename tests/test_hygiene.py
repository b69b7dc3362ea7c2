"""The repository stands on its own: no paths outside it, package data that exists, citations that resolve."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# CI's script may point SEAL_REFERENCE_DATA at the copy of the data kept beside the clone; nothing else may.
OUTSIDE_ALLOWED = {".ci/run"}
OUTSIDE_PATTERNS = ("../" + "shared", "/" + "work/", "SEAL_" + "REFERENCE.md", "ARCHITECTURE" + ".md")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"not a git checkout ({err})")
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def read(path: str) -> str:
    try:
        return (REPO / path).read_text()
    except UnicodeDecodeError:
        return ""


def test_no_tracked_file_refers_to_a_place_outside_the_repo():
    hits = [
        f"{f}: {pattern}"
        for f in tracked_files()
        if f not in OUTSIDE_ALLOWED
        for pattern in OUTSIDE_PATTERNS
        if pattern in read(f)
    ]
    assert not hits, hits


def test_package_data_matches_the_real_files():
    """Every declared glob matches a file, and every non-Python file of the package is declared."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = declared["seal_jax"]
    package_files = [f.removeprefix("seal_jax/") for f in tracked_files() if f.startswith("seal_jax/")]
    assert all(any(fnmatch.fnmatch(f, g) for f in package_files) for g in globs), globs
    data = [f for f in package_files if not f.endswith(".py")]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in data), data


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_citations_of_the_docs_resolve():
    """`docs/<page>.md#anchor` (code) and `<page>.md#anchor` (docs) name a page and a heading that exist."""
    cited = [
        (f, page, anchor)
        for f in tracked_files()
        if f.endswith((".py", ".md", ".sh", ".toml", ".ipynb"))
        for page, anchor in re.findall(r"(?:docs/)?([\w-]+\.md)#([\w-]+)", read(f))
    ]
    assert cited
    missing = [
        (f, page, anchor)
        for f, page, anchor in cited
        if not (REPO / "docs" / page).is_file()
        or anchor not in heading_anchors((REPO / "docs" / page).read_text())
    ]
    assert not missing, missing


# pytest's fixture scope and subprocess's process-group flag are the only sessions a tracked file may name.
TECHNICAL_SESSION = re.compile(r'scope\s*=\s*"session"|start_new_session')


def test_no_tracked_file_speaks_of_work_sessions():
    hits = [
        f"{f}:{n}"
        for f in tracked_files()
        if f != "tests/test_hygiene.py"
        for n, line in enumerate(read(f).splitlines(), 1)
        if re.search(r"\bsessions?\b", TECHNICAL_SESSION.sub("", line), flags=re.IGNORECASE)
    ]
    assert not hits, hits


def test_readme_is_a_short_guide():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250 and len(text) <= 12_000
    for command in ("make demo", "make test"):
        assert command in text and command.split()[1] + ":" in (REPO / "Makefile").read_text()
