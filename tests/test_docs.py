"""The docs kept true, pure: every environment variable the code reads is in the configuration reference and
every one it names is read; every relative link and anchor resolves; every `make X` is a Makefile target; the tests
map names every test file and only those; the front page stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import relay.config
import relay.credentials

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
READ_RE = re.compile(r"""(?:env|environ|base_env)(?:\.get\(|\[)\s*"([A-Z][A-Z0-9_]+)\"""")
# Read by the client libraries the function uses, not by its own code (the reference says so on their rows).
READ_BY_LIBRARIES = {"STORAGE_EMULATOR_HOST"}


def variables_read() -> set[str]:
    found = set(relay.config.URL_VARIABLES.values()) | {
        number.variable for number in relay.config.NUMBER_VARIABLES.values()
    }
    found |= set(relay.credentials.SINGLE_VARIABLES) | set(relay.credentials.BUCKET_VARIABLES)
    sources = [ROOT / "main.py", *sorted((ROOT / "relay").glob("*.py")), ROOT / "resync" / "__init__.py",
               ROOT / "doctor" / "__init__.py"]  # fmt: skip
    for source in sources:
        found |= set(READ_RE.findall(source.read_text()))
    return found


def variables_documented() -> set[str]:
    table = (ROOT / "docs" / "configuration.md").read_text().split("## ")[0]
    cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {name for cell in cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def test_every_variable_the_code_reads_is_in_the_configuration_reference_and_every_one_it_names_is_read():
    read, documented = variables_read(), variables_documented()
    assert read - documented == set(), "read but not documented"
    assert documented - read - READ_BY_LIBRARIES == set(), "documented but read nowhere"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in LINK_RE.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target}"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_command_in_the_docs_is_a_makefile_target(page):
    named = set(re.findall(r"(?:^|`)make ([a-z][a-z-]*)\b", page.read_text(), flags=re.MULTILINE))
    assert named - makefile_targets() == set()


def test_the_tests_map_names_every_test_file_and_only_those():
    development = (ROOT / "docs" / "development.md").read_text()
    mapped = set(re.findall(r"`(test_[a-z_]+\.py)`", development.split("## The tests map")[1].split("\n## ")[0]))
    assert mapped == {p.name for p in (ROOT / "tests").glob("test_*.py")}


def test_the_front_page_is_short_and_shows_how_to_try_and_deploy_it_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    first = "\n".join(lines[:120])
    assert all(f"make {target}" in first for target in ("demo", "test", "deploy"))
    assert all(len(page.read_text().splitlines()) <= 420 for page in PAGES[1:])
