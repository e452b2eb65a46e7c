"""The sessions file: versioned schema, upgrades from older files, typed decode state."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.chat import Exchange, SavedState, TurnState
from tui.config import load_config
from tui.session_store import SCHEMA_VERSION, SessionStore, StoreVersionError

#: The schema as panechat wrote it before the file had a version (commit acd033e), verbatim.
UNVERSIONED_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS panes (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    config TEXT NOT NULL,
    branched_from TEXT NOT NULL DEFAULT '',
    state TEXT,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    pane_id INTEGER NOT NULL REFERENCES panes(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL
);
"""
#: A pane's config and decode state as that version wrote them (ChatEngine.snapshot's dict).
OLD_CONFIG = {
    "name": "Concise",
    "system": "A knowledgeable assistant.",
    "sampling": {"temperature": 0.2, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 7},
    "max_tokens": 200,
    "stop": ["\n\n"],
}
OLD_STATE = {
    "carry": "\n",
    "replied_before": True,
    "reply_base": 31,
    "turn_base": 12,
    "turn_carry": "",
    "turn_replied_before": False,
    "last_user_text": "What is the capital of France?",
    "turn_starts": [12],
    "dropped_turns": 0,
    "kv": "/data/kv/1-1.state",
    "tokens": 40,
}


def write_unversioned_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(UNVERSIONED_SCHEMA)
    with db:
        db.execute("INSERT INTO sessions VALUES (1, 'from before', 1.0, 2.0)")
        db.execute(
            "INSERT INTO panes (id, session_id, position, config, state) VALUES (1, 1, 0, ?, ?)",
            (json.dumps(OLD_CONFIG), json.dumps(OLD_STATE)),
        )
        db.execute("INSERT INTO messages VALUES (1, 1, 'user', 'What is the capital?', 1.5)")
        db.execute("INSERT INTO messages VALUES (2, 1, 'assistant', 'Paris.', 1.6)")
    db.close()


def test_a_file_written_before_the_schema_had_a_version_opens(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    write_unversioned_file(path)
    store = SessionStore(path)
    (info,) = store.sessions()
    assert (info.name, info.panes, info.messages) == ("from before", 1, 2)
    (pane,) = store.load(1)
    assert pane.config.name == "Concise" and pane.config.sampling.seed == 7
    assert pane.messages == [("user", "What is the capital?"), ("assistant", "Paris.")]
    # Its decode state predates the exchanges a state keeps: the chat is read again instead.
    assert pane.state is None
    store.add_message(pane.id, "user", "And Spain?", pane.head)  # it is writable as it was
    assert store.load(1)[0].messages[-1] == ("user", "And Spain?")
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_file_from_a_newer_panechat_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "panechat" / "sessions.db"
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreVersionError, match="written by a newer panechat"):
        SessionStore(path)
    env = {**os.environ, "XDG_DATA_HOME": str(data)}
    done = subprocess.run(
        [sys.executable, "-m", "tui", "--sessions"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "written by a newer panechat" in done.stderr and "Traceback" not in done.stderr


def test_saved_state_round_trips_and_damage_reads_as_none(tmp_path: Path) -> None:
    exchanges = (Exchange("Hi", " Hello."), Exchange("What is ␛[2J?", ""))
    state = SavedState(
        TurnState(turn_starts=(0, 17), exchanges=exchanges, dropped_turns=2), "/kv/1-2.state", 99
    )
    assert SavedState.from_json(state.to_json()) == state
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    pane = store.add_pane(session, load_config().panes[0])
    store.save_state(pane, state)
    assert store.load(session)[0].state == state
    for damaged in (
        "not json",
        "[]",
        json.dumps({"tokens": 3}),  # no KV file
        json.dumps({"kv": "/kv", "tokens": "3"}),
        json.dumps({"kv": "/kv", "tokens": 3, "turn_starts": ["0"]}),
        json.dumps({"kv": "/kv", "tokens": 3, "exchanges": [["Hi"]]}),
        json.dumps({"kv": "/kv", "tokens": 3, "exchanges": [["Hi", 1]]}),
        json.dumps({"kv": "/kv", "tokens": 3, "exchanges": {"Hi": ""}}),
        json.dumps({"kv": "/kv", "tokens": 3, "reply_base": True}),
        json.dumps({"kv": "/kv", "tokens": True}),
        json.dumps({"kv": "/kv", "tokens": 3, "turn_starts": [True]}),
        # well typed, but not a state the chat could have been in
        json.dumps({"kv": "/kv", "tokens": 3, "turn_starts": [0, 5]}),
        json.dumps({"kv": "/kv", "tokens": 9, "turn_starts": [0]}),  # an exchange short
        json.dumps({"kv": "/kv", "tokens": 9, "turn_starts": [4, 2]}),
        json.dumps({"kv": "/kv", "tokens": 9, "turn_base": 12}),
        json.dumps({"kv": "/kv", "tokens": 9, "reply_base": -1}),
        json.dumps({"kv": "/kv", "tokens": -1}),
    ):
        assert SavedState.from_json(damaged) is None, damaged
    store.close()


def test_a_new_pane_reopens_after_the_others(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    config = load_config().panes[0]
    a, b, c = (store.add_pane(session, config) for _ in range(3))
    store.close_pane(a)
    store.close_pane(b)
    d = store.add_pane(session, config)
    assert [p.id for p in store.load(session)] == [c, d]
    store.close()
