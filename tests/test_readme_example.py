"""The README's headless example runs as written: three chats, one engine, no Textual."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- example: run by tests/test_readme_example.py -->\n```python\n(.*?)```", text, re.S
    )
    assert match, "the README lost its headless example"
    return match.group(1)


def test_the_readme_example_drives_three_chats_without_textual() -> None:
    code = "import sys; sys.modules['textual'] = None  # the engine must not need it\n" + example()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["brief", "teacher", "poet"]
    for line in lines:
        assert re.match(r"\w+ \((eog|stop|length)\): \S", line), line
    assert "Paris" in lines[0]  # greedy on the embedded model: "The capital of France is Paris."
