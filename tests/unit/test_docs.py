"""README.md and docs/ stay true: every ``skygate …`` command (and its options) they name
exists, every ``SKYGATE_*`` variable is read somewhere, every relative link resolves, and the
README stays a five-minute read."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from schemas.settings import Settings
from skygate.cli import main
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`]+)`")
_COMMAND = re.compile(r"(?:^|(?<=[\s/(]))skygate[ \t]+([^\n`]*)")
_VARIABLE = re.compile(r"\bSKYGATE_[A-Z0-9_]*[A-Z0-9]")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# Where a variable may be read, besides the settings class.
_SOURCES = ("*.py", "*.yaml", "*.toml", "Dockerfile", ".env.example", ".ci/run")


def _code(text: str) -> list[str]:
    """The code of a page: fenced blocks line by line, and inline spans."""
    blocks = _FENCE.findall(text)
    rest = _FENCE.sub("", text)
    lines = [line for block in blocks for line in block.splitlines()]
    return lines + [" ".join(span.split()) for span in _INLINE.findall(rest)]


def _check_command(words: list[str]) -> str | None:
    """None when the words name a command and options it has, else what is wrong."""
    command: click.Command = main
    path = ["skygate"]
    for raw in words:
        word = raw.strip("[](),;:.'\"")
        if not word or not re.match(r"^[-\w]", word) or word in ("…", "...") or word.isupper():
            break  # the end of the command, or a placeholder (skygate COMMAND --help)
        if isinstance(command, click.Group):
            if word.startswith("-"):
                names = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
                if word.split("=")[0] not in names | {"--help"}:
                    return f"{' '.join(path)} has no option {word}"
                break
            found = [command.commands.get(w) for w in word.split("|")]
            if not all(found):
                return f"{' '.join(path)} has no command {word}"
            command = found[0]
            path.append(word)
            continue
        if word.startswith("-"):
            names = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            for option in re.split(r"[|/]", word.split("=")[0]):
                if option and option not in names | {"--help", "-h"}:
                    return f"{' '.join(path)} has no option {option}"
    return None


def _pages() -> list[tuple[Path, str]]:
    return [(page, page.read_text()) for page in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_skygate_command_named_exists(page):
    wrong = []
    for code in _code(page.read_text()):
        for match in _COMMAND.finditer(code):
            problem = _check_command(match.group(1).split())
            if problem:
                wrong.append(f"{code.strip()!r}: {problem}")
    assert not wrong, "\n".join(wrong)


def _read_variables() -> set[str]:
    known = {f"SKYGATE_{name.upper()}" for name in Settings.model_fields}
    for pattern in _SOURCES:
        for path in ROOT.rglob(pattern) if "/" not in pattern else [ROOT / pattern]:
            if ".venv" in path.parts or "var" in path.parts or not path.is_file():
                continue
            if path.name.startswith("test_docs"):
                continue
            known.update(_VARIABLE.findall(path.read_text(errors="replace")))
    return known


def test_every_skygate_variable_named_is_read_somewhere():
    known = _read_variables()
    wrong = sorted({f"{page.relative_to(ROOT)}: {name}"
                    for page, text in _pages() for name in _VARIABLE.findall(text)
                    if name not in known})
    assert not wrong, "\n".join(wrong)


def test_every_relative_link_resolves():
    wrong = []
    for page, text in _pages():
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                wrong.append(f"{page.relative_to(ROOT)}: {target}")
    assert not wrong, "\n".join(wrong)


def test_readme_is_short_opens_with_the_two_commands_and_pictures_the_flow_early():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    blocks = _FENCE.findall(README.read_text())
    assert "pip install -e ." in blocks[0] and "skygate scan" in blocks[0]
    assert blocks[1].strip().endswith(".venv/bin/python -m pytest")
    # The CI script runs the README's test command.
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
    picture = next(i for i, line in enumerate(lines) if "aggregate" in line and "─" in line)
    assert picture < 60


def test_docs_are_current_not_session_history():
    stale = re.compile(r"this session|before issue|earlier sessions?|issue \d+|was \d", re.I)
    wrong = [f"{page.relative_to(ROOT)}:{n}: {line.strip()}"
             for page, text in _pages() for n, line in enumerate(text.splitlines(), 1)
             if stale.search(line)]
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_what_it_should():
    assert _check_command(["scan", "PATH…", "--out", "F"]) is None
    assert _check_command(["users", "suspend|activate"]) is None
    assert _check_command(["scna"]) is not None
    assert _check_command(["scan", "--no-such-option"]) is not None
    assert "SKYGATE_NO_SUCH_THING" not in _read_variables()
