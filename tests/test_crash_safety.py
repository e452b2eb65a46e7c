"""``kill -9`` mid-stream, for real: a child process chats on the real model and records to a
sessions file as the app does, and is killed at a random moment. The file must pass SQLite's
integrity check, hold every user turn committed before the kill, and hold each streaming
reply up to at most the last second (the checkpoint interval) before the kill."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tui.session_recorder import CHECKPOINT_INTERVAL
from tui.session_store import SessionStore

CHILD = Path(__file__).with_name("crash_child.py")
#: Scheduling slack on a busy 2-core machine, on top of the checkpoint interval.
SLACK = 0.75


def run_and_kill(db: Path, after: float) -> tuple[list[tuple[float, str, str, str]], float]:
    """Start the child, kill it ``after`` seconds into its first streamed text; return its
    timestamped output lines and the time of the kill."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    lines: list[tuple[float, str, str, str]] = []
    assert child.stdout is not None
    stdout = child.stdout

    def read() -> None:
        for line in stdout:
            kind, chat, rest = [*line.rstrip("\n").split(" ", 2), "", ""][:3]
            lines.append((time.monotonic(), kind, chat, rest))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any(kind == "TEXT" for _, kind, _, _ in lines):
        assert time.monotonic() < deadline and child.poll() is None, "the child did not stream"
        time.sleep(0.02)
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    child.wait(30)
    reader.join(5)
    return lines, killed_at


@pytest.mark.parametrize("run", range(3))
def test_a_kill_mid_stream_loses_at_most_the_last_second(tmp_path: Path, run: int) -> None:
    db = tmp_path / "sessions.db"
    after = random.Random(run).uniform(0.5, 6.0)
    lines, killed_at = run_and_kill(db, after)
    assert not [line for line in lines if line[1] == "ERROR"]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = SessionStore(db)  # what --resume opens
    (session,) = store.sessions()
    saved = {pane.id: pane for pane in store.load(session.id)}
    store.close()
    by_chat = dict(zip(("a", "b"), sorted(saved), strict=True))
    for chat, row in by_chat.items():
        messages = saved[row].messages
        sent = [text for _, kind, c, text in lines if kind == "SENT" and c == chat]
        users = [text for role, text in messages if role == "user"]
        # Every turn committed before the kill; one more if it came between commit and print.
        assert users[: len(sent)] == sent and len(users) - len(sent) in (0, 1), (users, sent)
        # The reply streaming at the kill: the text shown up to a second before it is saved.
        last_sent = max(t for t, kind, c, _ in lines if kind == "SENT" and c == chat)
        streamed = [
            (t, json.loads(text))
            for t, kind, c, text in lines
            if kind == "TEXT" and c == chat and t >= last_sent
        ]
        must_have = "".join(f for t, f in streamed if t < killed_at - CHECKPOINT_INTERVAL - SLACK)
        shown = "".join(f for _, f in streamed)
        saved_reply = messages[-1][1] if messages[-1][0] == "assistant" else ""
        assert shown.strip().startswith(saved_reply)  # nothing saved that was not shown
        assert len(saved_reply) >= len(must_have.strip()), (chat, saved_reply, must_have)
