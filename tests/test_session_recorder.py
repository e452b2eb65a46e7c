"""The app's recorder writes what frames say: replies from the frame's text, regenerations
replace, taken-back turns leave."""

from __future__ import annotations

from pathlib import Path

from core import StopReason
from core.chat import ChatConfig, ChatDelta, ChatSnapshot, Exchange, SavedState, TurnState
from tui.session_recorder import SessionRecorder
from tui.session_store import SessionStore

ENDED = StopReason.END_OF_GENERATION


def test_replies_come_from_frames_and_regenerations_replace_them(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("p1", ChatConfig("A"), "")
    recorder.message("p1", "user", "Hello")
    recorder.frame("p1", ChatDelta(text="Hi", started=True))  # streaming: nothing yet
    assert store.load(session)[0].messages == [("user", "Hello")]
    recorder.frame("p1", ChatDelta(text="!", finished=ENDED, reply_text="Hi!"))
    recorder.frame("p1", ChatDelta(started=True, replaces_last=True))
    recorder.frame("p1", ChatDelta(text="Hey.", finished=ENDED, reply_text="Hey."))
    assert store.load(session)[0].messages == [("user", "Hello"), ("assistant", "Hey.")]
    recorder.frame("p1", ChatDelta(taken_back="Hello"))
    assert store.load(session)[0].messages == []
    recorder.frame("p1", ChatDelta(finished=StopReason.CANCELLED))  # a cleared reply: no text
    assert store.load(session)[0].messages == []
    store.close()


def test_clear_close_and_save_states(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("a", ChatConfig("A"), "")
    recorder.pane_opened("b", ChatConfig("B"), "A after 1 turn")
    for pane in ("a", "b"):
        recorder.message(pane, "user", f"to {pane}")
    recorder.pane_cleared("a")
    recorder.pane_closed("b")
    recorder.message("b", "user", "after close")  # a closed pane records nothing more
    saved = {p.config.name: p for p in store.load(session)}
    assert list(saved) == ["A"] and saved["A"].messages == []
    state = SavedState(TurnState(turn_starts=(0,), exchanges=(Exchange("Hi"),)), "kv", 7)
    paths: list[Path | None] = []

    def snapshot(pane_id: str, path: Path | None) -> ChatSnapshot:
        paths.append(path)
        return ChatSnapshot(state if pane_id == "a" else None)

    recorder.save_states(snapshot)
    assert store.load(session)[0].state == state and len(paths) == 1
    store.close()


def test_a_reply_cut_short_by_quitting_is_saved_with_the_state(tmp_path: Path) -> None:
    """The KV cells saved on quit hold the reply streaming then: its text must be saved too,
    or a resumed chat's transcript would miss what its model remembers."""
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    for pane in ("new", "again"):
        recorder.pane_opened(pane, ChatConfig(pane), "")
        recorder.message(pane, "user", "Hello")
        recorder.frame(pane, ChatDelta(text="Hi", finished=ENDED, reply_text="Hi"))
    recorder.message("new", "user", "More?")
    recorder.frame("new", ChatDelta(text="Half a", started=True))
    recorder.frame("again", ChatDelta(text="Hello th", started=True, replaces_last=True))
    state = SavedState(TurnState(turn_starts=(0,), exchanges=(Exchange("Hi"),)), "kv", 9)
    cut = {"new": "Half a rep", "again": "Hello there"}
    recorder.save_states(lambda pane_id, path: ChatSnapshot(state, cut[pane_id]))
    saved = {p.config.name: p for p in store.load(session)}
    assert saved["new"].messages[2:] == [("user", "More?"), ("assistant", "Half a rep")]
    assert saved["again"].messages == [("user", "Hello"), ("assistant", "Hello there")]
    assert saved["new"].state == state
    store.close()


def test_a_streaming_reply_is_checkpointed_at_most_every_interval(tmp_path: Path) -> None:
    """A crash loses at most the last interval of a reply: it is written as it streams, to
    one row that the finished text then replaces."""
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    now = [100.0]
    recorder = SessionRecorder(store, session, clock=lambda: now[0])
    recorder.pane_opened("p", ChatConfig("A"), "")
    recorder.message("p", "user", "Hello")

    def saved() -> list[tuple[str, str]]:
        return store.load(session)[0].messages[1:]

    recorder.frame("p", ChatDelta(text="Once", started=True))
    now[0] += 0.5
    recorder.frame("p", ChatDelta(text=" upon"))
    assert saved() == []  # within the interval
    now[0] += 0.6
    recorder.frame("p", ChatDelta(text=" a time"))
    assert saved() == [("assistant", "Once upon a time")]
    now[0] += 0.2
    recorder.frame("p", ChatDelta(text=" there"))
    assert saved() == [("assistant", "Once upon a time")]
    now[0] += 1.0
    recorder.frame(
        "p", ChatDelta(text=" was", finished=ENDED, reply_text="Once upon a time there was")
    )
    assert saved() == [("assistant", "Once upon a time there was")]  # the same row, whole
    recorder.frame("p", ChatDelta(started=True, replaces_last=True))  # a regeneration
    now[0] += 1.5
    recorder.frame("p", ChatDelta(text="Long ago"))
    assert saved() == [("assistant", "Long ago")]  # overwrites the last reply in place
    recorder.pane_cleared("p")
    now[0] += 1.5
    recorder.frame("p", ChatDelta(text=" late"))  # a cleared pane's late frame
    assert saved() == []
    store.close()


def test_two_processes_on_one_sessions_file_lose_nothing(tmp_path: Path) -> None:
    """Two panechat instances on one data folder: every write of both lands, and neither
    sees "database is locked"."""
    import multiprocessing

    path = tmp_path / "sessions.db"
    SessionStore(path).close()
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        sessions = pool.starmap(write_many, [(path, "one"), (path, "two")])
    store = SessionStore(path)
    for session in sessions:
        (pane,) = store.load(session)
        assert [text for _, text in pane.messages] == [f"message {i}" for i in range(WRITES)]
    store.close()


WRITES = 150


def write_many(path: Path, name: str) -> int:
    store = SessionStore(path)
    session = store.create_session(name)
    recorder = SessionRecorder(store, session, lambda message: print(message))
    recorder.pane_opened("p", ChatConfig(name), "")
    for i in range(WRITES):
        recorder.message("p", "user", f"message {i}")
        assert not recorder.failing
    store.close()
    return session
