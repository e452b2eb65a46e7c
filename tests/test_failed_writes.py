"""Writes that fail, files that are damaged, settings out of range: one clear line or a
notice, the chat goes on, and nothing the user typed is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from chat_trees import ChatTrees
from test_tui_config import run_cli

from core import (
    BatchedExecutor,
    ContextParams,
    ContextTooLargeError,
    InvalidParamsError,
    LlamaWeights,
    StopReason,
    model_template,
)
from core.chat import (
    ChatConfig,
    ChatEngine,
    ChatSnapshot,
    Exchange,
    SavedState,
    TurnState,
)
from core.executor.context_budget import KvShape, cgroup_room, check_context
from tui.cli import StoreUnavailableError, open_store, store_for_run
from tui.config import ConfigError, load_config
from tui.launch import create_app
from tui.session_recorder import SessionRecorder
from tui.session_store import SessionStore


def filled_store(path: Path) -> int:
    """A sessions file of many pages, closed; returns its session id."""
    store = SessionStore(path)
    session = store.create_session("precious")
    pane = store.add_pane(session, ChatConfig("A"))
    parent = None
    for i in range(200):
        parent = store.add_message(pane, "user", f"message {i} " + "x" * 1000, parent)
    store.close()
    return session


@pytest.mark.parametrize("damage", ["damaged pages", "not a database"])
def test_a_damaged_sessions_file_is_moved_aside_never_overwritten(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sessions.db"
    filled_store(path)
    data = bytearray(path.read_bytes())
    if damage == "damaged pages":  # the header is intact, pages behind it are not
        data[8192:24576] = b"\xa5" * 16384
    else:
        data[:100] = b"this is not an SQLite file" * 3 + b"." * 22
    path.write_bytes(bytes(data))
    store = open_store(path)
    try:
        assert store.sessions() == []  # a new, empty file
    finally:
        store.close()
    (moved,) = tmp_path.glob("sessions.db.damaged-*")
    assert moved.read_bytes() == bytes(data)  # kept as it was, for recovery
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(moved) in err and ".recover" in err


@dataclass
class Recording:
    """A session being recorded with one pane "p", and what the recorder told the user."""

    store: SessionStore
    session: int
    recorder: SessionRecorder
    told: list[str]


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[Recording]:
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session()
    told: list[str] = []
    recorder = SessionRecorder(store, session, told.append)
    recorder.pane_opened("p", ChatConfig("A"), "")
    yield Recording(store, session, recorder, told)
    store.close()


def test_writes_that_fail_tell_the_user_once_and_the_chat_goes_on(recording: Recording) -> None:
    chats = ChatTrees()
    store, recorder, told = recording.store, recording.recorder, recording.told
    with sqlite3.connect(store.path) as other:  # the file breaks under the running app
        other.execute("DROP TABLE messages")
    recorder.frame("p", chats.user("p", "hello"))
    recorder.frame("p", chats.user("p", "again"))
    assert len(told) == 1 and "could not save" in told[0] and str(store.path) in told[0]
    assert recorder.failing


def test_a_kv_path_that_is_not_a_folder_keeps_the_transcript(recording: Recording) -> None:
    chats = ChatTrees()
    store, recorder, told = recording.store, recording.recorder, recording.told
    recorder.frame("p", chats.user("p", "hello"))
    recorder.frame("p", chats.reply("p"))
    store.kv_dir.write_text("a file where the kv folder goes")
    cut = chats.end("p", "a cut reply", stop=StopReason.CANCELLED).tree_changes[0]
    recorder.save_states(lambda pane_id, path: ChatSnapshot(None, cut))
    assert told and "decode state" in told[0]
    saved = store.load(recording.session)[0].messages
    assert saved == [("user", "hello"), ("assistant", "a cut reply")]


@pytest.mark.parametrize("n_ctx", [4294967296, 100000000000])
def test_a_huge_n_ctx_is_refused_with_file_and_line(
    n_ctx: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, 2^32 wrapped silently and 10^11 grew the process to the whole machine."""
    with pytest.raises(InvalidParamsError, match="n_ctx must be at most"):
        ContextParams(n_ctx=n_ctx)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    extra = tmp_path / "big.toml"
    extra.write_text(f"# mine\n[context]\nn_ctx = {n_ctx}\n")
    with pytest.raises(ConfigError, match=rf"{extra}, line 3: .*n_ctx must be at most"):
        load_config(extra)


def test_the_context_must_fit_the_model_and_the_memory() -> None:
    gemma = KvShape(layers=18, kv_heads=1, key_length=256, value_length=256)
    check_context(32768, 32768, gemma, 2**30)  # 18 KiB a token: 576 MiB of 1 GiB
    with pytest.raises(ContextTooLargeError, match=r"trained for .*at most 32768"):
        check_context(32769, 32768, gemma, None)
    with pytest.raises(ContextTooLargeError, match=r"GiB of KV cache .*at most 23301"):
        check_context(1_000_000, 10_000_000, gemma, 2**29)


def test_the_app_refuses_a_context_beyond_the_trained_one(tmp_path: Path) -> None:
    extra = tmp_path / "long.toml"
    extra.write_text("[context]\nn_ctx = 1000000\n")
    done = run_cli("--config", str(extra), "--no-save", env_home=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{extra}, line 2: [context] n_ctx = 1,000,000 is more than" in done.stderr


def test_the_executor_checks_the_context_against_the_model(weights: LlamaWeights) -> None:
    with pytest.raises(ContextTooLargeError, match="trained for"):
        BatchedExecutor(weights, ContextParams(n_ctx=weights.n_ctx_train + 1))


async def test_a_start_writes_no_config_and_an_unwritable_one_gives_a_notice(
    weights: LlamaWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = replace(load_config(), context=ContextParams(n_ctx=512, n_seq_max=2))
    executor = BatchedExecutor(weights, config.context)
    template = model_template(weights, config.template)
    app = create_app(config, ChatEngine(executor, template), panes=1)  # persists the theme
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            assert not (tmp_path / "xdg").exists()  # nothing changed, nothing written
            (tmp_path / "xdg").write_text("a file where the config folder goes")
            app.theme = "nord" if config.theme != "nord" else "gruvbox"
            await pilot.pause()
    finally:
        executor.close()
    assert any("theme is used but not saved" in n for n in app.save_failures)


def test_an_unwritable_data_folder_runs_unsaved_and_says_so(tmp_path: Path) -> None:
    blocked = tmp_path / "data"
    blocked.write_text("a file where the data folder goes")
    store, notice = store_for_run(blocked / "panechat" / "sessions.db", wanted=True)
    assert store is None and notice.startswith("this run is not saved: cannot open")
    assert "\n" not in notice and "writable" in notice
    assert store_for_run(blocked / "sessions.db", wanted=False) == (None, "")
    with pytest.raises(StoreUnavailableError):  # --sessions and --resume need the store
        open_store(blocked / "panechat" / "sessions.db")


def test_an_outage_is_retried_and_a_pane_that_lost_a_write_is_read_again(
    recording: Recording,
) -> None:
    """A pane whose row could not be written gets it once writes work again; a pane whose
    transcript missed a write saves no KV state (the cells would not match the text)."""
    chats = ChatTrees()
    store, recorder = recording.store, recording.recorder
    with sqlite3.connect(store.path) as other:  # an outage: every insert fails
        other.execute(
            "CREATE TRIGGER outage BEFORE INSERT ON messages "
            "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
        )
        other.execute(
            "CREATE TRIGGER outage2 BEFORE INSERT ON panes "
            "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
        )
    recorder.pane_opened("q", ChatConfig("B"), "")
    recorder.frame("p", chats.user("p", "lost"))
    assert recording.told and recorder.failing
    with sqlite3.connect(store.path) as other:
        other.execute("DROP TRIGGER outage")
        other.execute("DROP TRIGGER outage2")
    recorder.frame("q", chats.user("q", "after the outage"))  # writes q's row first
    assert not recorder.failing
    state = SavedState(TurnState(turn_starts=(0,), exchanges=(Exchange("Hi"),)), "kv", 5)
    recorder.save_states(lambda pane_id, path: ChatSnapshot(state))
    saved = {pane.config.name: pane for pane in store.load(recording.session)}
    assert saved["B"].messages == [("user", "after the outage")] and saved["B"].state == state
    assert saved["A"].messages == [] and saved["A"].state is None  # missed "lost"


@pytest.mark.parametrize("version", ["v2", "v1", "unlimited"])
def test_a_cgroup_limit_bounds_the_memory_available(tmp_path: Path, version: str) -> None:
    """In a container the cgroup's limit, not the machine's free memory, is what an n_ctx
    must fit: the OOM killer acts on it."""
    membership = tmp_path / "cgroup"
    if version == "v2":
        membership.write_text("0::/app\n")
        group, files = tmp_path / "app", ("memory.max", "memory.current")
    else:
        membership.write_text("9:name=systemd:/\n4:memory:/host/path/app\n")
        group, files = tmp_path / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
    group.mkdir(parents=True)  # v1: only the namespace root exists, as in a container
    limit = "9223372036854771712" if version == "unlimited" else str(8 * 2**30)
    (group / files[0]).write_text(limit + "\n")
    (group / files[1]).write_text(str(3 * 2**30) + "\n")
    room = cgroup_room(tmp_path, membership)
    assert room == (None if version == "unlimited" else 5 * 2**30)


def test_a_reply_whose_row_failed_keeps_the_branch_whole(recording: Recording) -> None:
    """The reply's row could not be written when it started: the final write adds it, and
    the turns after it follow it, so the branch shown stays one line from the first turn."""
    chats = ChatTrees()
    store, recorder = recording.store, recording.recorder
    recorder.frame("p", chats.user("p", "first"))
    with sqlite3.connect(store.path) as other:
        other.execute(
            "CREATE TRIGGER outage BEFORE INSERT ON messages "
            "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
        )
    recorder.frame("p", chats.reply("p", "Hi"))
    with sqlite3.connect(store.path) as other:
        other.execute("DROP TRIGGER outage")
    recorder.frame("p", chats.end("p", "Hi."))
    recorder.frame("p", chats.user("p", "second"))
    (saved,) = store.load(recording.session)
    assert saved.messages == [("user", "first"), ("assistant", "Hi."), ("user", "second")]
