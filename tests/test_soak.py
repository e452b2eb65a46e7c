"""The leak check, in CI: a minute of eight chats streaming and being recycled (disposed
and recreated), in a process of its own so that nothing else moves its memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_minute_of_recycled_chats_leaks_no_memory_and_no_descriptors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "core.soak", "--seconds", "60", "--tokens-per-chat", "300"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).parent.parent,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, summary
    recycled = int(summary.split(" chats recycled")[0].rsplit(" ", 1)[1])
    assert recycled >= 8, summary  # every slot was disposed and recreated at least once
