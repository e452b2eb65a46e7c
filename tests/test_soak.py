"""The leak check, in CI: eight chats streaming and being recycled (disposed and recreated),
every one of them twice, in a process of its own so that nothing else moves its memory. It is
bounded by work, not time: a busy machine takes longer and checks the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Far above the minute or two the two rounds take on an idle 2-core machine; still an end to
#: a run that hangs.
HANG = 1200


def test_recycled_chats_leak_no_memory_and_no_descriptors() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.diagnostics.soak",
            "--rounds",
            "2",
            "--tokens-per-chat",
            "150",
        ],
        capture_output=True,
        text=True,
        timeout=HANG,
        cwd=Path(__file__).parent.parent,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, summary
    recycled = int(summary.split(" chats recycled")[0].rsplit(" ", 1)[1])
    assert recycled >= 16, summary  # every slot was disposed and recreated twice


def test_a_soak_needs_a_round_after_the_warm_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "core.diagnostics.soak", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=HANG,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--rounds must be 2 or more" in done.stderr
