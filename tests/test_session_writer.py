"""The session's writer: it subscribes to the decode loop itself and writes each frame in a
thread of its own, in order with the panes the app opens and closes; quitting waits for it."""

from __future__ import annotations

import threading
from pathlib import Path

from chat_trees import ChatTrees

from core.chat import ChatConfig, ChatDelta, ChatSnapshot, Frame
from tui.session_store import SessionStore
from tui.session_writer import SessionWriter


def frame(chat_id: str, delta: ChatDelta) -> Frame:
    return Frame({chat_id: delta})


def test_frames_are_written_in_its_own_thread_and_quitting_waits_for_them(
    tmp_path: Path,
) -> None:
    chats = ChatTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    writers: set[int] = set()

    def snapshot(pane_id: str, path: Path | None) -> ChatSnapshot:
        writers.add(threading.get_ident())
        return ChatSnapshot(None)

    writer = SessionWriter(store.path, session)
    writer.start()
    writer.pane_opened("p", ChatConfig("A"), "")
    writer.receive(frame("p", chats.user("p", "Hello")))
    writer.receive(frame("p", chats.reply("p", "Hi")))
    writer.receive(frame("p", chats.end("p", "Hi there.")))
    found = writer.message_at(1)  # answered once what was queued before it is written
    assert found is not None and found[0] == "p"
    writer.receive(frame("p", ChatDelta(model="other")))  # the chat moved to another model
    writer.receive(frame("gone", chats.user("gone", "never opened")))  # not a pane: skipped
    writer.save_states(snapshot)
    assert writers and threading.get_ident() not in writers  # the writer's thread did it
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello"), ("assistant", "Hi there.")]
    assert saved.config.model == "other"  # resume opens it on the model it moved to
    store.close()


def test_a_store_it_cannot_open_is_said_once_and_the_session_goes_on(tmp_path: Path) -> None:
    told: list[str] = []
    folder = tmp_path / "not-a-file.db"
    folder.mkdir()  # SQLite cannot open a folder
    writer = SessionWriter(folder, 1, told.append)
    writer.start()
    writer.pane_opened("p", ChatConfig("A"), "")
    writer.receive(frame("p", ChatTrees().user("p", "Hello")))
    assert writer.message_at(1) is None
    writer.save_states(lambda pane_id, path: ChatSnapshot(None))
    assert len(told) == 1 and "not saved" in told[0]


def test_a_writer_that_never_started_answers_at_once_and_opens_nothing(tmp_path: Path) -> None:
    """An app that never ran (its start failed) has nothing to write and no thread to wait
    for: a search asks, a quit saves, neither waits."""
    writer = SessionWriter(tmp_path / "never.db", 1)
    writer.pane_opened("p", ChatConfig("A"), "")
    assert writer.message_at(1) is None
    writer.save_states(lambda pane_id, path: ChatSnapshot(None))
    assert not (tmp_path / "never.db").exists()
