"""The documentation works as written: the README's install and test commands are CI's and the
package's own, every Python example marked as one runs (with Textual blocked: the engine must
not need it), and every relative link leads to a file, and a heading, that exist."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The pages whose examples and links are checked: the front page and the manual.
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(
    r"<!-- example (?P<name>[\w-]+): run by tests/test_readme_example.py -->\n"
    r"```python\n(?P<code>.*?)```",
    re.S,
)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$", re.M)


# -- the install and test commands ---------------------------------------------------------


def readme_commands() -> tuple[str, str]:
    """The README's first code block: the install-and-start command, then the test command."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README lost its first code block (install and start; install and test)"
    lines = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2, f"the README's first code block should hold two commands: {lines}"
    return lines[0], lines[1]


def test_the_readme_test_command_is_exactly_what_ci_runs() -> None:
    _, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test in ci, f".ci/run no longer runs the README's test command: {test}"


def test_the_readme_install_command_installs_this_package_and_starts_it() -> None:
    install, test = readme_commands()
    # The same venv, build flags and pip options as the test command, without the extras.
    assert install == test.replace(
        '-e ".[test]" && .venv/bin/python -m pytest -q', "-e . && .venv/bin/panechat"
    ), f"the README's two commands drifted apart:\n{install}\n{test}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "panechat"
    assert any(r.startswith("pytest") for r in project["optional-dependencies"]["test"])
    module, _, function = project["scripts"]["panechat"].partition(":")
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}; assert callable({module}.{function})"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


# -- the examples ---------------------------------------------------------------------------


def examples() -> dict[str, str]:
    """Every marked example (name -> code) on every page."""
    found: dict[str, str] = {}
    for page in PAGES:
        for match in EXAMPLE.finditer(page.read_text(encoding="utf-8")):
            assert match["name"] not in found, f"two examples named {match['name']!r}"
            found[match["name"]] = match["code"]
    return found


def check_three_chats(stdout: str) -> None:
    lines = stdout.strip().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["brief", "teacher", "poet"]
    for line in lines:
        assert re.match(r"\w+ \((eog|stop|length)\): \S", line), line
    assert "Paris" in lines[0]  # greedy on the embedded model: "The capital of France is Paris."


def check_step(stdout: str) -> None:
    assert "Paris" in stdout, stdout  # greedy, one short sentence, as in three-chats


def check_branches(stdout: str) -> None:
    """Six messages by id: the first answer and its branch at a token (siblings), the middle
    question and its edit (siblings), each answered."""
    lines = stdout.strip().splitlines()
    assert len(lines) == 7, stdout  # q, a, q2, a2, q2 edited, its answer, a branched
    assert "(1/2) 'And of Italy?'" in stdout and "(2/2) 'And of Spain?'" in stdout, stdout
    # Ids in the order written: both questions were sent at once, before the first answer.
    assert re.search(r"^3 after 1: assistant \(1/2\) '.*Paris", stdout, re.M), stdout
    assert re.search(r"^7 after 1: assistant \(2/2\) ", stdout, re.M), stdout


#: What an example must print besides running cleanly; the rest need only run.
CHECKS: dict[str, Callable[[str], None]] = {
    "three-chats": check_three_chats,
    "step": check_step,
    "branches": check_branches,
}


def test_the_documented_examples_are_there() -> None:
    assert {"executor", "three-chats", "step", "branches"} <= set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_each_documented_example_runs_as_written_without_textual(name: str) -> None:
    code = "import sys; sys.modules['textual'] = None  # the engine must not need it\n"
    done = subprocess.run(
        [sys.executable, "-c", code + examples()[name]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    if name in CHECKS:
        CHECKS[name](done.stdout)


# -- the links --------------------------------------------------------------------------------


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without markup, lower case, punctuation
    dropped (word characters, hyphens and spaces stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on ``page`` (a repeated heading gets -1, -2, … as on GitHub)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = github_slug(match["text"])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> Iterator[str]:
    """The link and image targets on ``page`` outside code: those that stay in the repo."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    for match in LINK.finditer(text):
        target = match["target"]
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            yield target


def broken_links(pages: list[Path], root: Path) -> list[str]:
    """One line per link on ``pages`` whose file, or heading, is not there."""
    broken: list[str] = []
    for page in pages:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)}: ({target})"
            if not linked.is_relative_to(root) or not linked.exists():
                broken.append(f"{where}: no file {path}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where}: no heading #{anchor} in {linked.relative_to(root)}")
    return broken


def test_every_relative_link_leads_to_a_file_and_heading_that_exist() -> None:
    assert broken_links(PAGES, ROOT) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    guide = tmp_path / "docs" / "GUIDE.md"
    guide.write_text("# The guide\n\n## What it runs on: `panechat doctor`\n\n```sh\n# no\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/GUIDE.md#what-it-runs-on-panechat-doctor) [ok](#top) [web](https://x.org)\n"
        "[gone](docs/GONE.md) [anchor](docs/GUIDE.md#no) [code fence](docs/GUIDE.md#no-1)\n"
        "`[in code](docs/NOT-CHECKED.md)`\n\n# Top\n"
    )
    assert broken_links([page, guide], tmp_path) == [
        "README.md: (docs/GONE.md): no file docs/GONE.md",
        "README.md: (docs/GUIDE.md#no): no heading #no in docs/GUIDE.md",
        "README.md: (docs/GUIDE.md#no-1): no heading #no-1 in docs/GUIDE.md",
    ]
