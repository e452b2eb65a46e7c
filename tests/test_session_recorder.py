"""The app's recorder writes what the engine's frames say: each tree change (a message added,
a reply's checkpoint or its end, the branch shown), each message after the one it follows,
regenerations and edits as sibling branches."""

from __future__ import annotations

from pathlib import Path

from chat_trees import ChatTrees

from core import StopReason
from core.chat import (
    Alternative,
    ChatConfig,
    ChatDelta,
    ChatSnapshot,
    ChatTree,
    Exchange,
    SavedState,
    TokenStat,
    TurnState,
)
from core.chat.token_stats import ReplyOdds
from tui.session_recorder import SessionRecorder
from tui.session_store import SessionStore

ENDED = StopReason.END_OF_GENERATION


class CountingStore(SessionStore):
    """Counts the messages it writes."""

    writes = 0

    def add_message(self, pane_id: int, role: str, text: str, parent: int | None) -> int:
        self.writes += 1
        return super().add_message(pane_id, role, text, parent)

    def update_message(
        self,
        message_id: int,
        text: str,
        tokens: str | None = None,
        stop: StopReason | None = None,
    ) -> None:
        self.writes += 1
        super().update_message(message_id, text, tokens, stop)


def test_replies_come_from_frames_and_regenerations_are_kept_as_siblings(
    tmp_path: Path,
) -> None:
    chats = ChatTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("p1", ChatConfig("A"), "")
    recorder.frame("p1", chats.user("p1", "Hello"))
    recorder.frame("p1", chats.reply("p1", "Hi"))
    assert store.load(session)[0].messages == [("user", "Hello"), ("assistant", "Hi")]
    first = chats.last("p1")
    recorder.frame("p1", chats.end("p1", "Hi!", "!"))
    recorder.frame("p1", chats.reply("p1", replacing=True))
    recorder.frame("p1", chats.end("p1", "Hey.", "Hey."))
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello"), ("assistant", "Hey.")]
    assert sorted(m.text for m in saved.tree) == ["Hello", "Hey.", "Hi!"]  # both versions
    recorder.frame("p1", chats.show("p1", first.id))  # back to the first version
    assert store.load(session)[0].messages == [("user", "Hello"), ("assistant", "Hi!")]
    assert first.parent is not None
    recorder.frame("p1", chats.edit("p1", first.parent, "Hello again"))  # of the first turn
    recorder.frame("p1", chats.reply("p1"))
    recorder.frame("p1", chats.end("p1", "Hi again."))
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello again"), ("assistant", "Hi again.")]
    assert len(saved.tree) == 5
    # Why each reply ended comes back with it (schema 3).
    assert [m.stop for m in saved.chat_tree()] == [None, ENDED, ENDED, None, ENDED]
    tree = saved.chat_tree()  # the whole tree comes back, on the branch shown
    assert tree.messages() == saved.messages and len(tree.leaves()) == 3
    store.close()


def test_a_whole_tree_is_written_once_and_a_clear_empties_the_pane(tmp_path: Path) -> None:
    """A fork's first frame carries its whole tree: written with the odds of its replies. A
    resumed pane's tree, already saved, is not written again. A clear's empty tree empties
    the saved pane; what comes after it is saved anew."""
    store = CountingStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("fork", ChatConfig("F"), "A after 1 turn")
    chats = ChatTrees()
    chats.user("a", "Hello")
    chats.reply("a")
    stat = TokenStat(9, "Hi", 0.75, (Alternative(10, "Hey", 0.2),))
    chats.end("a", "Hi", tokens=[stat])
    branch = ChatTree.along(chats.trees["a"].path())
    recorder.frame("fork", ChatTrees.whole(branch))
    (saved,) = store.load(session)
    assert saved.messages == [("user", "Hello"), ("assistant", "Hi")]
    assert saved.tree[1].tokens == ReplyOdds("", (stat,)).to_json()
    writes = store.writes
    recorder.pane_restored("again", saved)
    recorder.frame("again", ChatTrees.whole(saved.chat_tree()))
    assert store.writes == writes  # nothing written again
    recorder.frame("fork", chats.clear("fork"))
    assert store.load(session)[0].messages == []
    recorder.frame("fork", chats.user("fork", "Anew"))
    assert store.load(session)[0].messages == [("user", "Anew")]
    store.close()


def test_clear_close_and_save_states(tmp_path: Path) -> None:
    chats = ChatTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    recorder.pane_opened("a", ChatConfig("A"), "")
    recorder.pane_opened("b", ChatConfig("B"), "A after 1 turn")
    for pane in ("a", "b"):
        recorder.frame(pane, chats.user(pane, f"to {pane}"))
    recorder.frame("a", chats.clear("a"))
    recorder.pane_closed("b")
    recorder.frame("b", chats.user("b", "after close"))  # a closed pane records nothing more
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
    chats = ChatTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    recorder = SessionRecorder(store, session)
    for pane in ("new", "again"):
        recorder.pane_opened(pane, ChatConfig(pane), "")
        recorder.frame(pane, chats.user(pane, "Hello"))
        recorder.frame(pane, chats.reply(pane, "Hi"))
        recorder.frame(pane, chats.end(pane, "Hi"))
    recorder.frame("new", chats.user("new", "More?"))
    recorder.frame("new", chats.reply("new", "Half a"))
    recorder.frame("again", chats.reply("again", "Hello th", replacing=True))
    state = SavedState(TurnState(turn_starts=(0,), exchanges=(Exchange("Hi"),)), "kv", 9)
    cut = {"new": "Half a rep", "again": "Hello there"}

    def snapshot(pane_id: str, path: Path | None) -> ChatSnapshot:
        change = chats.end(pane_id, cut[pane_id], stop=StopReason.CANCELLED).tree_changes[0]
        return ChatSnapshot(state, change)

    recorder.save_states(snapshot)
    saved = {p.config.name: p for p in store.load(session)}
    assert saved["new"].messages[2:] == [("user", "More?"), ("assistant", "Half a rep")]
    assert saved["again"].messages == [("user", "Hello"), ("assistant", "Hello there")]
    assert len(saved["again"].tree) == 3  # the first reply stays, as the other version
    assert saved["new"].state == state
    store.close()


def test_a_streaming_reply_is_checkpointed_at_most_every_interval(tmp_path: Path) -> None:
    """A crash loses at most the last interval of a reply: it is written as it streams, to
    one row that the finished text then replaces."""
    chats = ChatTrees()
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    now = [100.0]
    recorder = SessionRecorder(store, session, clock=lambda: now[0])
    recorder.pane_opened("p", ChatConfig("A"), "")
    recorder.frame("p", chats.user("p", "Hello"))

    def saved() -> list[tuple[str, str]]:
        return store.load(session)[0].messages[1:]

    recorder.frame("p", chats.reply("p", "Once"))
    assert saved() == [("assistant", "Once")]  # its row, written when it started
    now[0] += 0.5
    recorder.frame("p", chats.stream("p", " upon"))
    assert saved() == [("assistant", "Once")]  # within the interval
    now[0] += 0.6
    recorder.frame("p", chats.stream("p", " a time"))
    assert saved() == [("assistant", "Once upon a time")]
    now[0] += 0.2
    recorder.frame("p", chats.stream("p", " there"))
    assert saved() == [("assistant", "Once upon a time")]
    now[0] += 1.0
    recorder.frame("p", chats.end("p", "Once upon a time there was", " was"))
    assert saved() == [("assistant", "Once upon a time there was")]  # the same row, whole
    assert len(store.load(session)[0].tree) == 2
    recorder.frame("p", chats.reply("p", replacing=True))
    now[0] += 1.5
    recorder.frame("p", chats.stream("p", "Long ago"))
    assert saved() == [("assistant", "Long ago")]  # the new version, on the branch shown
    now[0] += 0.1
    recorder.frame("p", chats.stream("p", ", far"))
    # Its model's process died: the reply ends with no final message, as far as it came.
    recorder.frame("p", ChatDelta(finished=StopReason.CANCELLED))
    assert saved() == [("assistant", "Long ago, far")]
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
    chats = ChatTrees()
    store = SessionStore(path)
    session = store.create_session(name)
    recorder = SessionRecorder(store, session, lambda message: print(message))
    recorder.pane_opened("p", ChatConfig(name), "")
    for i in range(WRITES):
        recorder.frame("p", chats.user("p", f"message {i}"))
        assert not recorder.failing
    store.close()
    return session
