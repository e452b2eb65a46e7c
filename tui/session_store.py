"""Saved sessions: every pane's transcript in SQLite, written per message.

A crash or kill loses at most the reply being streamed: user turns are written when sent,
replies when they finish. On quit each pane's decode state (its KV cells, saved by
``Conversation.save``, plus where its turns begin) is written too, so ``--resume`` can continue
without decoding the history again.

The schema is versioned with ``PRAGMA user_version``: opening a file applies, in order, the
upgrade from each older version (one function each); a file from a newer panechat is refused.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from core import PanechatError, SamplingParams, StopReason
from core.chat import ChatConfig, ChatTree, Role, SavedState
from core.chat.token_stats import ReplyOdds
from tui.config import APP_NAME
from tui.session_search import SearchHit, search_messages

#: The schema this panechat writes.
SCHEMA_VERSION = 3

_SCHEMA_1 = """
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


def _create_schema_1(db: sqlite3.Connection) -> None:
    """Version 0 is an empty file, or one written before the schema had a version (its tables
    are schema 1's, without the version stamp): create whatever is missing. Runs inside the
    upgrade's transaction (``executescript`` would commit it)."""
    for statement in _statements(_SCHEMA_1):
        db.execute(statement)


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (a trigger's body holds semicolons of its own), to
    run inside the caller's transaction."""
    statements, current = [], ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current)
            current = ""
    if current.strip(" \n;"):
        statements.append(current)
    return statements


_SCHEMA_2 = """
ALTER TABLE messages ADD COLUMN parent_id INTEGER;
ALTER TABLE messages ADD COLUMN tokens TEXT;
ALTER TABLE panes ADD COLUMN head INTEGER;
CREATE INDEX IF NOT EXISTS messages_by_pane ON messages (pane_id, id);
UPDATE messages SET parent_id = (
    SELECT MAX(m.id) FROM messages m WHERE m.pane_id = messages.pane_id AND m.id < messages.id
);
UPDATE panes SET head = (SELECT MAX(m.id) FROM messages m WHERE m.pane_id = panes.id);
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')
"""


def _branches_and_search(db: sqlite3.Connection) -> None:
    """Version 2: messages form a tree (``parent_id``; a pane's ``head`` is the last message
    of the branch it shows), a reply keeps its tokens' probabilities (``tokens``, JSON, see
    core.chat.token_stats), and every message is in a full-text index (FTS5, kept by
    triggers). A version-1 pane's messages were one line: each one's parent is the one before."""
    for statement in _statements(_SCHEMA_2):
        db.execute(statement)


def _stop_reasons(db: sqlite3.Connection) -> None:
    """Version 3: a reply keeps why it ended (``stop``, a StopReason's value; NULL for a reply
    saved before, or still streaming)."""
    db.execute("ALTER TABLE messages ADD COLUMN stop TEXT")


#: The upgrade from each version to the next.
_UPGRADES: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_schema_1,
    1: _branches_and_search,
    2: _stop_reasons,
}


class StoreVersionError(PanechatError):
    """The sessions file was written by a newer panechat."""


class StoreDamagedError(PanechatError):
    """The sessions file is not a database, or SQLite finds damaged pages in it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is damaged ({reason})")
        self.path = path


def set_aside(path: Path, when: float | None = None) -> Path:
    """Move a damaged database (and its WAL files) out of the way, never overwriting it;
    return where it went. Its rows may still be recovered from there."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.rename(target.with_name(target.name + suffix))
    return target


def upgrade(db: sqlite3.Connection, path: Path) -> int:
    """Bring an open database to :data:`SCHEMA_VERSION`, one version at a time; return the
    version it had."""
    found = _version(db)
    if found > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{path} was written by a newer panechat (sessions schema {found}; this one reads "
            f"up to {SCHEMA_VERSION}) — upgrade panechat, or move the file away to start afresh"
        )
    while (version := _version(db)) < SCHEMA_VERSION:
        # One step, one transaction: an interrupted step is redone whole next time, and a
        # second process waits for the lock, then finds the step done.
        previous, db.isolation_level = db.isolation_level, None
        db.execute("BEGIN IMMEDIATE")
        try:
            if _version(db) == version:
                _UPGRADES[version](db)
                db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.isolation_level = previous
    return found


#: SQLite's primary result codes that mean the file itself is damaged.
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _check_intact(db: sqlite3.Connection, path: Path) -> None:
    """Raise StoreDamagedError unless SQLite's quick check passes (a few ms for a sessions
    file): damaged pages behind a valid header would otherwise fail the first write."""
    try:
        result = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        if e.sqlite_errorcode & 0xFF in _DAMAGED:  # "not a database", "malformed"
            raise StoreDamagedError(path, str(e)) from None
        raise  # locked, I/O, permissions: the file may be fine, and is left where it is
    if result != [("ok",)]:
        raise StoreDamagedError(path, str(result[0][0]) if result else "no answer")


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


#: Seconds a write waits for another panechat's transaction on the same file.
BUSY_TIMEOUT = 10.0


def default_store_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False)) / "sessions.db"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: int
    name: str
    updated: float
    panes: int
    messages: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a pane's tree: ``parent`` is the message it follows (None: the first)."""

    id: int
    parent: int | None
    role: str
    text: str
    tokens: str | None = None  # a reply's token stats, as JSON (core.chat.token_stats)
    stop: str | None = None  # why a reply ended (a StopReason's value; None: not known)

    @property
    def stop_reason(self) -> StopReason | None:
        """``stop`` as a StopReason (one this panechat does not know reads as None)."""
        try:
            return StopReason(self.stop) if self.stop is not None else None
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class SavedPane:
    id: int
    config: ChatConfig
    branched_from: str
    tree: list[StoredMessage]  # every branch's messages, oldest first
    head: int | None  # the last message of the branch the pane showed
    state: SavedState | None  # decode state written on quit (see ChatEngine.snapshot)
    state_damaged: bool = False  # a state was written but cannot be read: say so on resume

    @property
    def messages(self) -> list[tuple[str, str]]:
        """The branch the pane showed, as (role, text), oldest first: what the pane shows
        and the model reads (both from :meth:`chat_tree`, so a damaged file reads alike)."""
        return self.chat_tree().messages()

    def chat_tree(self) -> ChatTree:
        """Every branch, with the stored ids, showing the branch the pane showed. A row whose
        role is unknown is left out; one whose parent is missing follows the row before it
        (a damaged or hand-edited file still opens)."""
        tree = ChatTree()
        added: set[int] = set()
        for message in self.tree:
            if message.role not in (Role.USER.value, Role.ASSISTANT.value):
                continue
            parent = message.parent
            if parent is not None and parent not in added:  # rows come oldest first
                parent = tree.head
            added.add(message.id)
            node = tree.add(parent, Role(message.role), message.text, message_id=message.id)
            odds = ReplyOdds.from_json(message.tokens)
            if odds is not None:
                node.tokens, node.model = list(odds.tokens), odds.model
            node.stop = message.stop_reason
        if self.head is not None and self.head in added:
            tree.show(self.head)
        return tree


class SessionStore:
    """One SQLite file, one connection: the UI thread has one, the session's writer thread
    another (WAL: they never block each other for long). Each write is its own transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.kv_dir = path.parent / "kv"
        # A second panechat on the same folder waits for the lock rather than failing.
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
        try:
            _check_intact(self._db, path)
            upgrade(self._db, path)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # -- sessions ---------------------------------------------------------------------------

    def create_session(self, name: str = "") -> int:
        now = time.time()
        name = name or time.strftime("session %Y-%m-%d %H:%M", time.localtime(now))
        with self._db:
            cur = self._db.execute(
                "INSERT INTO sessions (name, created, updated) VALUES (?, ?, ?)", (name, now, now)
            )
        return int(cur.lastrowid or 0)

    def sessions(self) -> list[SessionInfo]:
        rows = self._db.execute(
            """SELECT s.id, s.name, s.updated,
                      (SELECT COUNT(*) FROM panes p WHERE p.session_id = s.id AND NOT p.closed),
                      (SELECT COUNT(*) FROM messages m JOIN panes p ON m.pane_id = p.id
                        WHERE p.session_id = s.id)
               FROM sessions s ORDER BY s.updated DESC, s.id DESC"""
        ).fetchall()
        return [SessionInfo(*row) for row in rows]

    def latest(self) -> int | None:
        sessions = [s for s in self.sessions() if s.messages]
        return sessions[0].id if sessions else None

    def rename(self, session_id: int, name: str) -> None:
        with self._db:
            self._db.execute("UPDATE sessions SET name = ? WHERE id = ?", (name, session_id))

    def delete(self, session_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        for file in self.kv_dir.glob(f"{session_id}-*.state"):
            file.unlink(missing_ok=True)

    def _touch(self, session_id: int) -> None:
        self._db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (time.time(), session_id))

    # -- panes and messages -----------------------------------------------------------------

    def add_pane(self, session_id: int, config: ChatConfig, branched_from: str = "") -> int:
        """A new pane after the session's others (it reopens in that place)."""
        with self._db:
            cur = self._db.execute(
                "INSERT INTO panes (session_id, position, config, branched_from) "
                "VALUES (?, (SELECT COALESCE(MAX(position), -1) + 1 FROM panes "
                "WHERE session_id = ?), ?, ?)",
                (session_id, session_id, _dump_config(config), branched_from),
            )
            self._touch(session_id)
        return int(cur.lastrowid or 0)

    def update_pane_config(self, pane_id: int, config: ChatConfig) -> None:
        with self._db:
            self._db.execute(
                "UPDATE panes SET config = ? WHERE id = ?", (_dump_config(config), pane_id)
            )

    def close_pane(self, pane_id: int) -> None:
        with self._db:
            self._db.execute("UPDATE panes SET closed = 1 WHERE id = ?", (pane_id,))

    def add_message(self, pane_id: int, role: str, text: str, parent: int | None) -> int:
        """Add a message after ``parent`` (None: the pane's first) as the last of the branch
        the pane shows; returns its id (to update a reply as it streams)."""
        with self._db:
            cur = self._db.execute(
                "INSERT INTO messages (pane_id, role, text, created, parent_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (pane_id, role, text, time.time(), parent),
            )
            message_id = int(cur.lastrowid or 0)
            self._db.execute("UPDATE panes SET head = ? WHERE id = ?", (message_id, pane_id))
            self._db.execute(
                "UPDATE sessions SET updated = ? WHERE id = "
                "(SELECT session_id FROM panes WHERE id = ?)",
                (time.time(), pane_id),
            )
        return message_id

    def update_message(
        self,
        message_id: int,
        text: str,
        tokens: str | None = None,
        stop: StopReason | None = None,
    ) -> None:
        """A streaming reply's checkpoint, or its final text (with its tokens' odds and why it
        ended)."""
        with self._db:
            self._db.execute(
                "UPDATE messages SET text = ?, tokens = COALESCE(?, tokens), "
                "stop = COALESCE(?, stop) WHERE id = ?",
                (text, tokens, None if stop is None else stop.value, message_id),
            )

    def set_parent(self, message_id: int, parent: int | None) -> None:
        """A message now follows another one (a queued turn, once the reply before it began)."""
        with self._db:
            self._db.execute("UPDATE messages SET parent_id = ? WHERE id = ?", (parent, message_id))

    def set_head(self, pane_id: int, message_id: int | None) -> None:
        """The pane shows another branch: the one that ends at ``message_id``."""
        with self._db:
            self._db.execute("UPDATE panes SET head = ? WHERE id = ?", (message_id, pane_id))

    def clear_pane(self, pane_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM messages WHERE pane_id = ?", (pane_id,))
            self._db.execute("UPDATE panes SET state = NULL, head = NULL WHERE id = ?", (pane_id,))

    def save_state(self, pane_id: int, state: SavedState | None) -> None:
        with self._db:
            self._db.execute(
                "UPDATE panes SET state = ? WHERE id = ?",
                (None if state is None else state.to_json(), pane_id),
            )

    def kv_path(self, session_id: int, pane_id: int) -> Path:
        self.kv_dir.mkdir(parents=True, exist_ok=True)
        return self.kv_dir / f"{session_id}-{pane_id}.state"

    def load(self, session_id: int) -> list[SavedPane]:
        panes = self._db.execute(
            "SELECT id, config, branched_from, state, head FROM panes "
            "WHERE session_id = ? AND NOT closed ORDER BY position, id",
            (session_id,),
        ).fetchall()
        saved = []
        for pane_id, config, branched_from, state, head in panes:
            rows = self._db.execute(
                "SELECT id, parent_id, role, text, tokens, stop FROM messages WHERE pane_id = ? "
                "ORDER BY id",
                (pane_id,),
            ).fetchall()
            decode_state = SavedState.from_json(state) if state else None
            saved.append(
                SavedPane(
                    pane_id,
                    _load_config(config),
                    branched_from,
                    [StoredMessage(*row) for row in rows],
                    head,
                    decode_state,
                    state_damaged=bool(state) and decode_state is None,
                )
            )
        return saved

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Every saved message (of the panes still open) that matches what the user typed,
        best first; see :func:`tui.session_search.search_messages`."""
        return search_messages(self._db, text, limit)


def _dump_config(config: ChatConfig) -> str:
    return json.dumps(
        {
            "name": config.name,
            "system": config.system,
            "sampling": asdict(config.sampling),
            "max_tokens": config.max_tokens,
            "stop": list(config.stop),
            "model": config.model,
            "show_reasoning": config.show_reasoning,
        }
    )


def _load_config(text: str) -> ChatConfig:
    data = json.loads(text)
    return ChatConfig(
        name=data["name"],
        system=data["system"],
        sampling=SamplingParams(**data["sampling"]),
        max_tokens=int(data["max_tokens"]),
        stop=tuple(data["stop"]),
        model=str(data.get("model", "")),  # files from before models had names: the default
        show_reasoning=bool(data.get("show_reasoning", True)),
    )
