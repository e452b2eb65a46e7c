"""A model on RPC servers whose server goes away mid-reply: its chats get a notice and a
stopped reply with the text so far, the chats on other models carry on, and the chat can move
to another model. The RPC model runs in a child process (EngineProcess); this test's own
process never adds an RPC server, so the embedded model decodes here as usual."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from test_engine_group import Run
from test_tui_app import wait_for

import core.chat.engine_process as engine_process
from core import BatchedExecutor, ContextParams, LlamaWeights, SamplingParams, model_template
from core.bench.rpc import free_port, start_rpc_server
from core.chat import (
    DEFAULT,
    ChatConfig,
    ChatDelta,
    ChatEngine,
    ChatEngineGroup,
    ChatTree,
    EngineEvent,
    EngineProcess,
    ModelSpec,
    NoticeKind,
    OpenChat,
    Role,
    SendTurn,
    StopChat,
    SwitchModel,
)
from core.errors import ModelLoadError
from core.native.device_placement import DevicePlacement
from core.native.rpc import RpcEndpoint
from core.text.reply_stream import StopReason
from tui.config import load_config
from tui.default_model import DefaultModel
from tui.launch import create_app
from tui.widgets.chat_pane import ChatPane

GREEDY = SamplingParams(temperature=0.0)
SMALL = ContextParams(n_ctx=1024, n_batch=256, n_seq_max=2)
QUESTION = "Write a long story about a lighthouse keeper and the sea."


@dataclass
class Remote:
    """A group whose "far" model is on one loopback RPC server, the default model here."""

    run: Run
    endpoint: RpcEndpoint
    server: subprocess.Popen[bytes]

    def chat(self, chat_id: str, model: str, max_tokens: int) -> ChatConfig:
        return ChatConfig(chat_id, "", GREEDY, max_tokens=max_tokens, model=model)

    def last(self, chat_id: str) -> ChatDelta | None:
        deltas = [f.deltas[chat_id] for f in self.run.frames if chat_id in f.deltas]
        return deltas[-1] if deltas else None

    def followed(self, chat_id: str) -> ChatTree:
        """The chat's tree as its frames told it (a view's copy)."""
        tree = ChatTree()
        for frame in self.run.frames:
            delta = frame.deltas.get(chat_id)
            for change in delta.tree_changes if delta else ():
                tree.apply(change)
        return tree

    def reply_so_far(self, chat_id: str) -> str:
        """The text of the chat's last reply on the path shown."""
        replies = [m for m in self.followed(chat_id).path() if m.role is Role.ASSISTANT]
        return replies[-1].text.strip() if replies else ""

    def last_turn(self, chat_id: str) -> str:
        """The text of the chat's last user message on the path shown."""
        turns = [m for m in self.followed(chat_id).path() if m.role is Role.USER]
        return turns[-1].text if turns else ""

    def failure(self, chat_id: str) -> ChatDelta | None:
        for frame in self.run.frames:
            delta = frame.deltas.get(chat_id)
            if delta is not None and delta.notice and delta.notice.kind is NoticeKind.MODEL_FAILED:
                return delta
        return None

    def stream_far_then(self, act: signal.Signals) -> str:
        """Start a long reply on "far", and once some of it has come, send ``act`` to its
        server; returns the text that had come by then."""
        self.run.group.submit(SendTurn("far", QUESTION))
        self.run.until(lambda: len(self.run.text("far")) > 0)
        assert self.run.replies("far") == 0, "the reply ended before the server went away"
        self.server.send_signal(act)
        return self.run.text("far")


@pytest.fixture
def remote(weights: LlamaWeights) -> Iterator[Remote]:
    endpoint, server = start_rpc_server(threads=1)
    executor = BatchedExecutor(weights, SMALL)
    events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
    far = ModelSpec("far", None, SMALL, placement=DevicePlacement((endpoint,)))
    group = ChatEngineGroup(
        ChatEngine(executor, model_template(weights)), events.put, specs={"far": far}
    )
    group.start()
    setup = Remote(Run(group, events), endpoint, server)
    group.submit(
        OpenChat("near", setup.chat("near", "", 24)), OpenChat("far", setup.chat("far", "far", 400))
    )
    try:
        yield setup
    finally:
        os.kill(server.pid, signal.SIGCONT)  # a stopped server must die too
        server.kill()
        server.wait()
        assert group.shutdown()
        group.close()
        executor.close()


def test_a_server_killed_mid_reply_stops_that_reply_and_nothing_else(remote: Remote) -> None:
    run = remote.run
    remote.stream_far_then(signal.SIGKILL)
    run.until(lambda: remote.failure("far") is not None)
    failed = remote.failure("far")
    assert failed is not None and failed.notice is not None
    assert failed.finished is StopReason.CANCELLED
    assert remote.reply_so_far("far") == run.text("far").strip()  # the text so far is kept
    words = failed.notice.text()
    assert "model 'far' stopped" in words and str(remote.endpoint) in words
    assert "Remote RPC server crashed" in words  # llama.cpp's own words, from the child
    assert "chats on other models carry on" in words

    run.group.submit(SendTurn("near", "What is the capital of France?"))
    run.until(lambda: run.replies("near") == 1)
    assert run.text("near").strip()

    run.group.submit(SendTurn("far", "Are you there?"))
    run.until(lambda: _told_again(run))
    # The turn sent to the stopped model is in the chat's tree all the same (a view keeps
    # it, the session saves it), below the reply it followed, unanswered.
    path = remote.followed("far").path()
    assert [m.role for m in path[-2:]] == [Role.ASSISTANT, Role.USER]
    assert remote.last_turn("far") == "Are you there?"

    config = remote.chat("far", "far", 12)  # the tree as the pane shows it, the unanswered turn too
    run.group.submit(SwitchModel("far", DEFAULT, config, remote.followed("far")))
    run.group.submit(SendTurn("far", "And then?"))
    run.until(lambda: run.replies("far") == 2)  # the cancelled reply, then this one
    last = remote.last("far")
    assert (
        last is not None and last.finished is not None and last.finished is not StopReason.CANCELLED
    )
    assert run.group.model_of("far") == DEFAULT
    assert NoticeKind.MODEL_SWITCHED in [kind for kind, _ in run.notices("far")]


def test_a_chat_moved_onto_an_rpc_model_keeps_its_history_when_the_server_dies(
    remote: Remote,
) -> None:
    """The parent follows a moved chat's tree from the tree it was moved with: its turns on
    the new model follow that history, and a turn the dead child never took goes below
    them (before: the first frame's change named a message the copy lacked, and the decode
    loop stopped for every chat)."""
    run = remote.run
    run.group.submit(SendTurn("near", "What is the capital of France?"))
    run.until(lambda: run.replies("near") == 1)
    run.group.submit(SwitchModel("near", "far"))
    run.until(lambda: run.group.model_of("near") == "far")
    run.group.submit(SendTurn("near", "And of Italy?"))
    run.until(lambda: run.replies("near") == 2)
    remote.server.send_signal(signal.SIGKILL)
    run.group.submit(SendTurn("near", "Are you there?"))
    run.until(lambda: remote.failure("near") is not None)
    users = [m.text for m in remote.followed("near").path() if m.role is Role.USER]
    assert users == ["What is the capital of France?", "And of Italy?", "Are you there?"]
    # (an EngineFailure, the loop stopping, fails run.until: every event must be a frame)


def _told_again(run: Run) -> bool:
    """A turn sent to the stopped model's chat got a MODEL_FAILED notice of its own."""
    return [kind for kind, _ in run.notices("far")].count(NoticeKind.MODEL_FAILED) >= 2


def test_a_server_that_hangs_is_given_up_after_a_stop(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that stops answering but keeps its socket open: the reply stalls, the user
    presses stop, and once the child has not answered for STOP_GRACE it is taken for hung."""
    monkeypatch.setattr(engine_process, "STOP_GRACE", 2.0)
    run = remote.run
    remote.stream_far_then(signal.SIGSTOP)
    time.sleep(1.0)  # the reply stalls: the child waits on the silent server
    assert remote.failure("far") is None
    # A stop, and a turn sent in the same step: the child never takes that step.
    run.group.submit(StopChat("far"), SendTurn("far", "Still there?"))
    run.until(lambda: remote.failure("far") is not None, timeout=60)
    assert remote.last_turn("far") == "Still there?"  # kept, though the child never saw it
    failed = remote.failure("far")
    assert failed is not None and failed.notice is not None
    assert "did not answer for 2 s" in failed.notice.text()
    assert failed.finished is StopReason.CANCELLED
    assert remote.reply_so_far("far") == run.text("far").strip()
    run.group.submit(SendTurn("near", "What is the capital of France?"))
    run.until(lambda: run.replies("near") == 1)


def test_a_model_whose_server_is_down_fails_to_load_with_one_line() -> None:
    dead = RpcEndpoint("127.0.0.1", free_port())  # nothing listens there
    spec = ModelSpec("far", None, SMALL, placement=DevicePlacement((dead,)))
    with pytest.raises(ModelLoadError, match=rf"model 'far': RPC server {dead} does not answer"):
        EngineProcess.start(spec)


@pytest.mark.parametrize("saved", [True, False], ids=["saved", "no-save"])
async def test_the_app_on_an_rpc_model_keeps_its_text_when_the_server_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved: bool
) -> None:
    """``panechat --rpc``: the default model runs in a child process; its server killed
    mid-reply, both panes show the notice and keep what they had, and the app runs on."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    endpoint, server = start_rpc_server(threads=1)
    base = load_config()
    panes = tuple(replace(p, stop=(), max_tokens=400) for p in base.panes[:2])
    config = replace(
        base,
        context=ContextParams(n_ctx=2048, n_batch=256, n_seq_max=4),
        panes=panes,
        placement=DevicePlacement((endpoint,)),
    )
    default = DefaultModel.load(config, saved=saved)
    engine = default.engine()
    assert isinstance(engine, EngineProcess) and default.backend == "GPU"
    app = create_app(config, engine, model_name=default.name, persist_theme=False)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            first, second = app.panes
            for pane in (first, second):
                await app.send_to(pane, QUESTION)

            def replying() -> bool:
                messages = first.messages()
                return bool(messages) and messages[-1][0] == "assistant" and bool(messages[-1][1])

            await wait_for(pilot, replying, timeout=120)
            server.kill()
            stopped = f"model {config.default_alias!r} stopped"

            def told(pane: ChatPane) -> list[str]:
                return [text for text in pane.messages_text() if stopped in text]

            await wait_for(pilot, lambda: bool(told(first) and told(second)))
            for pane in (first, second):
                # A run that keeps no session cannot be resumed: the notice does not say so.
                assert ("panechat --resume" in told(pane)[0]) is saved and not pane.generating
                assert pane.messages()[0] == ("user", QUESTION)  # in the tree, taken or not
            assert first.messages()[-1][0] == "assistant" and first.messages()[-1][1]
            # A turn typed after the child died goes in the chat's tree too, unanswered: the
            # pane's tree (which the session saves) has it, not just a widget on screen.
            await app.send_to(first, "Are you there?")
            await wait_for(pilot, lambda: first.messages()[-1] == ("user", "Are you there?"))
            assert first.messages_text().count("Are you there?") == 1  # drawn once
            assert not first.generating
            assert app.is_running
    finally:
        server.kill()
        server.wait()
        assert app.source.shutdown()
        default.release(engine)
        default.close()


def test_a_chat_on_an_rpc_model_saves_its_cells_at_quit(remote: Remote, tmp_path: Path) -> None:
    """The snapshot is written by the child, as ChatEngine.snapshot writes it in-process."""
    run = remote.run
    remote.stream_far_then(signal.SIGCONT)  # nothing happens to the server
    run.group.submit(StopChat("far"))
    run.until(lambda: run.replies("far") == 1)
    assert run.group.shutdown()
    snapshot = run.group.snapshot("far", tmp_path / "far.kv")
    assert snapshot.state is not None and snapshot.tree_change is None
    assert snapshot.state.tokens > 0 and (tmp_path / "far.kv").stat().st_size > 0
    assert [e.user for e in snapshot.state.turns.exchanges] == [QUESTION]
