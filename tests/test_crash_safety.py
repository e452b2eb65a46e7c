"""``kill -9`` mid-stream, for real: a child process chats on the real model and records to a
sessions file as the app does, and is killed at a random moment after its first write of a
reply. The file must pass SQLite's integrity check and hold every user turn and every reply
text committed before the kill (the child reports each commit), and nothing that was not
shown. A kill so loses only what streamed since the last checkpoint; that the engine makes
one every second is test_engine_tree.py's, on a clock of its own: nothing here depends on how
fast this machine runs."""

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

from tui.session_store import SessionStore, StoredMessage

CHILD = Path(__file__).with_name("crash_child.py")
#: For the child to load the model and write a reply: far above the few seconds that takes
#: on an idle machine, and still an end to a child that never writes one.
FIRST_COMMIT_DEADLINE = 180.0
#: What the child prints once a reply's text is committed: a checkpoint, the whole reply.
COMMITS = ("SAVED", "FINAL")


def run_and_kill(db: Path, after: float) -> list[tuple[float, str, str, str]]:
    """Start the child, kill it ``after`` seconds after it first committed a reply's text;
    return its output lines, each with the time it was read."""
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
    deadline = time.monotonic() + FIRST_COMMIT_DEADLINE
    while not any(kind in COMMITS for _, kind, _, _ in lines):
        assert child.poll() is None, "the child ended before it wrote a reply"
        assert time.monotonic() < deadline, "the child wrote no reply"
        time.sleep(0.02)
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    reader.join(5)
    return lines


def survived(stored: StoredMessage, kind: str, text: str) -> bool:
    """The file holds the text last reported committed, or a later write of it that the kill
    stopped the child from reporting: a checkpoint grown from it, or the whole reply."""
    if stored.text == text:
        return True
    if stored.tokens is None:  # still streaming when killed
        return stored.text.startswith(text)
    return kind == "SAVED"  # the final write, after the reported checkpoint


@pytest.mark.parametrize("run", range(3))
def test_a_kill_mid_stream_loses_only_what_came_after_the_last_checkpoint(
    tmp_path: Path, run: int
) -> None:
    db = tmp_path / "sessions.db"
    after = random.Random(run).uniform(0.0, 4.0)
    lines = run_and_kill(db, after)
    assert not [line for line in lines if line[1] == "ERROR"]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = SessionStore(db)  # what --resume opens
    (session,) = store.sessions()
    saved = {pane.id: pane for pane in store.load(session.id)}
    store.close()
    stored = {message.id: message for pane in saved.values() for message in pane.tree}
    last_commits = {int(i): (kind, text) for _, kind, i, text in lines if kind in COMMITS}
    for message_id, (kind, text) in last_commits.items():
        assert survived(stored[message_id], kind, json.loads(text)), (kind, text)
    by_chat = dict(zip(("a", "b"), sorted(saved), strict=True))
    for chat, row in by_chat.items():
        messages = saved[row].messages
        sent = [text for _, kind, c, text in lines if kind == "SENT" and c == chat]
        users = [text for role, text in messages if role == "user"]
        # Every turn the engine took, committed in the same frame: the last one missing only
        # if the kill came between its report and its commit.
        assert users in (sent, sent[:-1]), (users, sent)
        # The reply streaming at the kill: nothing saved that was not shown.
        last_sent = max(t for t, kind, c, _ in lines if kind == "SENT" and c == chat)
        shown = "".join(
            json.loads(text)
            for t, kind, c, text in lines
            if kind == "TEXT" and c == chat and t >= last_sent
        )
        saved_reply = messages[-1][1] if messages[-1][0] == "assistant" else ""
        assert shown.strip().startswith(saved_reply)
