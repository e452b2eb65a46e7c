"""A model served by an OpenAI-compatible endpoint answers a chat like a local one: the
decode loop's group holds it beside the local model, its frames come from the reply's stream.
Tested against ``panechat api`` on loopback (its own process, the embedded model), in the
engine and in a pane of the app."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_server import Server, start_server
from test_tui_app import wait_for

from core import BatchedExecutor, LlamaWeights, SamplingParams, model_template
from core.chat import (
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    ChatTree,
    EngineEvent,
    Frame,
    ModelSpec,
    OpenChat,
    SendTurn,
    StopChat,
)
from core.chat.endpoint_spec import EndpointSpec
from core.chat.notices import NoticeKind
from core.chat.tree import Role
from core.executor.params import ContextParams
from core.text.reply_stream import StopReason
from tui.app import PanechatApp
from tui.config import load_config
from tui.launch import create_app

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from start_server()


def direct(server: Server, text: str | list[dict[str, str]], max_tokens: int) -> str:
    """The reply the endpoint gives the same request sent straight to it."""
    messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
    create: Any = server.client().chat.completions.create
    reply = create(
        model="embedded", messages=messages, temperature=0, top_p=0.95, max_tokens=max_tokens
    )
    return reply.choices[0].message.content or ""


class Loop:
    """A decode loop with the local model and ``remote``, served at ``url``."""

    def __init__(self, weights: LlamaWeights, url: str) -> None:
        self.executor = BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=4))
        self.events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
        spec = ModelSpec("remote", endpoint=EndpointSpec(url, "embedded"))
        self.group = ChatEngineGroup(
            ChatEngine(self.executor, model_template(weights)),
            self.events.put,
            specs={"remote": spec},
        )
        self.group.start()
        self.frames: list[Frame] = []

    def until(self, done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            assert isinstance(event, Frame), event
            self.frames.append(event)

    def deltas(self, chat_id: str) -> list[Any]:
        return [f.deltas[chat_id] for f in self.frames if chat_id in f.deltas]

    def close(self) -> None:
        self.group.shutdown()
        self.group.close()
        self.executor.close()


@pytest.fixture
def make_loop(weights: LlamaWeights) -> Iterator[Callable[[str], Loop]]:
    loops: list[Loop] = []

    def make(url: str) -> Loop:
        loops.append(Loop(weights, url))
        return loops[-1]

    yield make
    for loop in loops:
        loop.close()


def remote_chat(max_tokens: int = 24) -> ChatConfig:
    return ChatConfig("r", "", SamplingParams(temperature=0.0), max_tokens, (), model="remote")


def test_a_chat_on_an_endpoint_streams_the_endpoints_reply(
    server: Server, make_loop: Callable[[str], Loop]
) -> None:
    loop = make_loop(f"{server.url}/v1")
    loop.group.submit(OpenChat("r", remote_chat()), SendTurn("r", QUESTION))
    loop.until(lambda: any(d.finished for d in loop.deltas("r")))
    deltas = loop.deltas("r")
    assert any(d.started for d in deltas) and sum(1 for d in deltas if d.text) >= 2  # streamed
    assert deltas[-1].finished in (StopReason.END_OF_GENERATION, StopReason.MAX_TOKENS)
    text = "".join(d.text for d in deltas)
    assert text == direct(server, QUESTION, 24) and "Paris" in text
    tree = ChatTree()
    for delta in deltas:
        for change in delta.tree_changes:
            tree.apply(change)
    user, reply = tree.path()
    assert (user.role, user.text, reply.role, reply.text) == (
        Role.USER,
        QUESTION,
        Role.ASSISTANT,
        text,
    )
    assert reply.model == "remote" and reply.stop == deltas[-1].finished
    # the next turn carries the whole conversation: the endpoint keeps nothing
    first = len(loop.deltas("r"))
    loop.group.submit(SendTurn("r", "And of Italy?"))
    loop.until(lambda: sum(1 for d in loop.deltas("r") if d.finished) == 2)
    second = "".join(d.text for d in loop.deltas("r")[first:])
    conversation = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert second == direct(server, conversation, 24)


def test_stopping_a_reply_cancels_its_request(
    server: Server, make_loop: Callable[[str], Loop]
) -> None:
    loop = make_loop(f"{server.url}/v1")
    config = ChatConfig("r", "", SamplingParams(temperature=0.8), 2000, (), model="remote")
    loop.group.submit(OpenChat("r", config), SendTurn("r", "Write a very long story."))
    loop.until(lambda: any(d.text for d in loop.deltas("r")))
    assert server.open_chats() == 1
    loop.group.submit(StopChat("r"))
    loop.until(lambda: any(d.finished for d in loop.deltas("r")))
    assert loop.deltas("r")[-1].finished is StopReason.CANCELLED
    deadline = time.monotonic() + 10
    while server.open_chats() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_chats() == 0  # the request was dropped, and its chat closed there


def test_an_endpoint_that_does_not_answer_is_one_line_and_the_local_model_goes_on(
    make_loop: Callable[[str], Loop],
) -> None:
    deaf = socket.socket()  # a port held, and not listened on: connections are refused
    deaf.bind(("127.0.0.1", 0))
    loop = make_loop(f"http://127.0.0.1:{deaf.getsockname()[1]}/v1")
    local = ChatConfig("l", "", SamplingParams(temperature=0.0), 8, ())
    loop.group.submit(OpenChat("r", remote_chat()), SendTurn("r", QUESTION))
    loop.group.submit(OpenChat("l", local), SendTurn("l", QUESTION))
    loop.until(
        lambda: (
            any(d.notice for d in loop.deltas("r")) and any(d.finished for d in loop.deltas("l"))
        )
    )
    notice = next(d.notice for d in loop.deltas("r") if d.notice)
    assert notice is not None and notice.kind is NoticeKind.MODEL_FAILED
    assert "is the server running?" in notice.text() and "\n" not in notice.text()
    deaf.close()


@pytest.fixture
async def app_on(
    weights: LlamaWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[str], PanechatApp]]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    executors: list[BatchedExecutor] = []

    def make(url: str) -> PanechatApp:
        path = tmp_path / "endpoint.toml"
        path.write_text(
            f"""
[context]
n_ctx = 2048
n_seq_max = 4

[models.remote]
endpoint = "{url}"
endpoint_model = "embedded"

[pane_defaults]
temperature = 0.0
max_tokens = 24

[[panes]]
name = "Here"

[[panes]]
name = "There"
model = "remote"
""",
            encoding="utf-8",
        )
        config = load_config(path)
        executor = BatchedExecutor(weights, config.context)
        executors.append(executor)
        return create_app(
            config,
            ChatEngine(executor, model_template(weights, config.template)),
            model_name=weights.name,
            persist_theme=False,
        )

    yield make
    for executor in executors:
        executor.close()


async def test_a_pane_answers_through_an_endpoint_beside_a_local_pane(
    server: Server, app_on: Callable[[str], PanechatApp]
) -> None:
    app = app_on(f"{server.url}/v1")
    async with app.run_test(size=(160, 40)) as pilot:
        here, there = app.panes
        for pane in (here, there):
            await app.send_to(pane, QUESTION)
        await wait_for(
            pilot,
            lambda: all(p.finished_replies >= 1 and not p.generating for p in (here, there)),
            timeout=60,
        )
        assert there.last_reply == direct(server, QUESTION, 24).strip()
        assert "Paris" in there.last_reply and here.last_reply
        title = str(there.title_bar.render())
        assert "remote" in title and "ctx" not in title  # no context is known here
        assert "ctx" in str(here.title_bar.render())
        status = str(app.status_bar.render())
        assert "│ remote · generating 0" in status and "KV 0/0" not in status


def test_regenerate_edit_and_branches_on_an_endpoint(
    server: Server, make_loop: Callable[[str], Loop]
) -> None:
    """A regenerated reply is a sibling of the last, an edited turn a sibling of its turn,
    and showing a message's branch brings it back; the tree follows as on a local model."""
    from core.chat import EditMessage, Regenerate, ShowMessage

    loop = make_loop(f"{server.url}/v1")
    config = ChatConfig("r", "", SamplingParams(temperature=0.9, seed=1), 12, (), model="remote")
    loop.group.submit(OpenChat("r", config), SendTurn("r", QUESTION))
    loop.until(lambda: sum(1 for d in loop.deltas("r") if d.finished) == 1)
    loop.group.submit(Regenerate("r"))
    loop.until(lambda: sum(1 for d in loop.deltas("r") if d.finished) == 2)
    shown = ChatTree()
    for delta in loop.deltas("r"):
        for change in delta.tree_changes:
            shown.apply(change)
    read = loop.group.tree("r")  # the engine's own tree, read between frames, is the same
    assert read is not None and read.messages() == shown.messages()
    user, second = shown.path()
    first = next(m for m in shown.children(user.id) if m.id != second.id)
    assert shown.siblings(second.id).count == 2 and first.role is Role.ASSISTANT
    loop.group.submit(EditMessage("r", user.id, "What is the capital of Spain?"))
    loop.until(lambda: sum(1 for d in loop.deltas("r") if d.finished) == 3)
    loop.group.submit(ShowMessage("r", first.id))
    deadline = time.monotonic() + 10
    read = loop.group.tree("r")
    while read is not None and read.head != first.id and time.monotonic() < deadline:
        time.sleep(0.05)
        read = loop.group.tree("r")
    assert read is not None and [m.id for m in read.path()] == [user.id, first.id]
    edited = read.children(None)  # the first turn's new version is its sibling, at the root
    assert [m.text for m in edited] == [QUESTION, "What is the capital of Spain?"]
    assert [m.role for m in read.path(read.leaf_below(edited[1].id))] == [
        Role.USER,
        Role.ASSISTANT,
    ]


def test_turns_sent_while_a_reply_streams_are_kept_and_answered_in_turn(
    server: Server, make_loop: Callable[[str], Loop]
) -> None:
    """A turn sent mid-reply is in the tree at once and answered after it; a reply's end
    and the next one's start never share a frame (a view would mix them up)."""
    loop = make_loop(f"{server.url}/v1")
    loop.group.submit(OpenChat("r", remote_chat(12)), SendTurn("r", QUESTION))
    loop.group.submit(SendTurn("r", "And of Italy?"), SendTurn("r", "And of Spain?"))
    loop.until(lambda: sum(1 for d in loop.deltas("r") if d.finished) == 3)
    assert not any(d.started and d.finished for d in loop.deltas("r"))
    read = loop.group.tree("r")
    assert read is not None
    assert [m.text for m in read.path() if m.role is Role.USER] == [
        QUESTION,
        "And of Italy?",
        "And of Spain?",
    ]
    assert [m.role for m in read.path()] == [Role.USER, Role.ASSISTANT] * 3


def test_a_fork_and_its_first_turn_in_one_submit(
    server: Server, make_loop: Callable[[str], Loop]
) -> None:
    """As the API's prompt cache branches a kept chat: the fork is made at once (its source
    idle), so the turn sent with it is answered on the copied branch."""
    from core.chat import ForkChat

    loop = make_loop(f"{server.url}/v1")
    loop.group.submit(OpenChat("a", remote_chat()), SendTurn("a", QUESTION))
    loop.until(lambda: any(d.finished for d in loop.deltas("a")))
    loop.group.submit(ForkChat("a", "b", remote_chat()), SendTurn("b", "And of Italy?"))
    loop.until(lambda: any(d.finished for d in loop.deltas("b")))
    assert not any(d.notice for d in loop.deltas("b"))
    read = loop.group.tree("b")
    assert read is not None and [m.text for m in read.path()][0::2] == [QUESTION, "And of Italy?"]
