"""The app's recorder writes what frames say: replies from the frame's text, each message
after the one it follows, regenerations and edits as sibling branches."""

from __future__ import annotations

from pathlib import Path

from pane_trees import PaneTrees

from core import StopReason
from core.chat import (
    ChatConfig,
    ChatDelta,
    ChatSnapshot,
    Exchange,
    Role,
    SavedState,
    TurnState,
)
from tui.session_recorder import SessionRecorder
from tui.session_store import SessionStore

ENDED = StopReason.END_OF_GENERATION


def test_replies_come_from_frames_and_regenerations_are_kept_as_siblings(
    tmp_path: Path,
) -> None:
    trees = PaneTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("p1", ChatConfig("A"), "")
    recorder.message("p1", trees.user("p1", "Hello"))
    first = trees.reply("p1")
    recorder.frame("p1", ChatDelta(text="Hi", started=True), first)
    assert store.load(session)[0].messages == [("user", "Hello"), ("assistant", "")]
    recorder.frame("p1", ChatDelta(text="!", finished=ENDED, reply_text="Hi!"))
    recorder.frame(
        "p1", ChatDelta(started=True, replaces_last=True), trees.reply("p1", replacing=True)
    )
    recorder.frame("p1", ChatDelta(text="Hey.", finished=ENDED, reply_text="Hey."))
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello"), ("assistant", "Hey.")]
    assert sorted(m.text for m in saved.tree) == ["Hello", "Hey.", "Hi!"]  # both versions
    trees.trees["p1"].show(first.id)  # back to the first version
    recorder.branch_shown("p1", first.id)
    assert store.load(session)[0].messages == [("user", "Hello"), ("assistant", "Hi!")]
    edited = trees.trees["p1"].add(None, Role.USER, "Hello again")  # an edit of the first turn
    recorder.message("p1", edited)
    recorder.frame("p1", ChatDelta(started=True), trees.reply("p1"))
    recorder.frame("p1", ChatDelta(finished=ENDED, reply_text="Hi again."))
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello again"), ("assistant", "Hi again.")]
    assert len(saved.tree) == 5
    tree = saved.chat_tree()  # the whole tree comes back, on the branch shown
    assert tree.messages() == saved.messages and len(tree.leaves()) == 3
    recorder.frame("p1", ChatDelta(finished=StopReason.CANCELLED))  # a cleared reply: no text
    assert len(store.load(session)[0].tree) == 5
    store.close()


def test_a_reply_the_screen_never_showed_follows_the_branch_shown(tmp_path: Path) -> None:
    """At quit the recorder writes frames no pane applied: without the pane's message for a
    reply it goes after the branch's last row, and a regeneration beside the last reply."""
    trees = PaneTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("p", ChatConfig("A"), "")
    recorder.message("p", trees.user("p", "Hello"))
    recorder.frame("p", ChatDelta(started=True))
    recorder.frame("p", ChatDelta(finished=ENDED, reply_text="Hi."))
    recorder.frame("p", ChatDelta(started=True, replaces_last=True))
    recorder.frame("p", ChatDelta(finished=ENDED, reply_text="Hey."))
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello"), ("assistant", "Hey.")]
    assert len(saved.chat_tree().leaves()) == 2
    store.close()


def test_clear_close_and_save_states(tmp_path: Path) -> None:
    trees = PaneTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("a", ChatConfig("A"), "")
    recorder.pane_opened("b", ChatConfig("B"), "A after 1 turn")
    for pane in ("a", "b"):
        recorder.message(pane, trees.user(pane, f"to {pane}"))
    recorder.pane_cleared("a")
    recorder.pane_closed("b")
    recorder.message("b", trees.user("b", "after close"))  # a closed pane records nothing more
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
    trees = PaneTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    for pane in ("new", "again"):
        recorder.pane_opened(pane, ChatConfig(pane), "")
        recorder.message(pane, trees.user(pane, "Hello"))
        recorder.frame(pane, ChatDelta(text="Hi", started=True), trees.reply(pane))
        recorder.frame(pane, ChatDelta(finished=ENDED, reply_text="Hi"))
    recorder.message("new", trees.user("new", "More?"))
    recorder.frame("new", ChatDelta(text="Half a", started=True), trees.reply("new"))
    recorder.frame(
        "again",
        ChatDelta(text="Hello th", started=True, replaces_last=True),
        trees.reply("again", replacing=True),
    )
    state = SavedState(TurnState(turn_starts=(0,), exchanges=(Exchange("Hi"),)), "kv", 9)
    cut = {"new": "Half a rep", "again": "Hello there"}
    recorder.save_states(lambda pane_id, path: ChatSnapshot(state, cut[pane_id]))
    saved = {p.config.name: p for p in store.load(session)}
    assert saved["new"].messages[2:] == [("user", "More?"), ("assistant", "Half a rep")]
    assert saved["again"].messages == [("user", "Hello"), ("assistant", "Hello there")]
    assert len(saved["again"].tree) == 3  # the first reply stays, as the other version
    assert saved["new"].state == state
    store.close()


def test_a_streaming_reply_is_checkpointed_at_most_every_interval(tmp_path: Path) -> None:
    """A crash loses at most the last interval of a reply: it is written as it streams, to
    one row that the finished text then replaces."""
    trees = PaneTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    now = [100.0]
    recorder = SessionRecorder(store, session, clock=lambda: now[0])
    recorder.pane_opened("p", ChatConfig("A"), "")
    recorder.message("p", trees.user("p", "Hello"))

    def saved() -> list[tuple[str, str]]:
        return store.load(session)[0].messages[1:]

    recorder.frame("p", ChatDelta(text="Once", started=True), trees.reply("p"))
    now[0] += 0.5
    recorder.frame("p", ChatDelta(text=" upon"))
    assert saved() == [("assistant", "")]  # its row, written when it started; within the interval
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
    regenerated = trees.reply("p", replacing=True)
    recorder.frame("p", ChatDelta(started=True, replaces_last=True), regenerated)
    now[0] += 1.5
    recorder.frame("p", ChatDelta(text="Long ago"))
    assert saved() == [("assistant", "Long ago")]  # the new version, on the branch shown
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
    trees = PaneTrees()
    store = SessionStore(path)
    session = store.create_session(name)
    recorder = SessionRecorder(store, session, lambda message: print(message))
    recorder.pane_opened("p", ChatConfig(name), "")
    for i in range(WRITES):
        recorder.message("p", trees.user("p", f"message {i}"))
        assert not recorder.failing
    store.close()
    return session
