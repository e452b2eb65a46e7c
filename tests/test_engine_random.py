"""Random command sequences over the real chat engine (hypothesis): open, send, stop, clear,
fork, regenerate, edit a turn, show another branch, close, with frames stepped in between and a
context small enough to fill. Whatever the order, a frame never raises, every notice is typed,
no chat holds more KV cells than its tokens, and the engine settles (goes idle) when nothing
more is sent.

Long profile: ``PANECHAT_FUZZ_EXAMPLES=2000 pytest tests/test_engine_random.py``."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_executor_random import weights

from core import BatchedExecutor, ContextParams, SamplingParams, model_template
from core.chat import (
    ChatConfig,
    ChatEngine,
    ClearChat,
    CloseChat,
    EditMessage,
    ForkChat,
    Frame,
    Notice,
    NoticeKind,
    OpenChat,
    Regenerate,
    Role,
    SendTurn,
    ShowMessage,
    StopChat,
)

EXAMPLES = int(os.environ.get("PANECHAT_FUZZ_EXAMPLES", "12"))
STEPS = int(os.environ.get("PANECHAT_FUZZ_STEPS", "25"))
PARAMS = ContextParams(n_ctx=384, n_batch=64, n_seq_max=3)
CHATS = st.sampled_from(["a", "b", "c", "d"])
SYSTEMS = st.sampled_from(["", "Be brief.", "You answer in one word."])
#: Short turns, and one long enough that a few of them fill the context (shifts, notices).
TEXTS = st.sampled_from(["Hi.", "Name a fruit.", "Tell me a long story about the sea. " * 20])


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.executor = BatchedExecutor(weights(), PARAMS)
        self.engine = ChatEngine(self.executor, model_template(weights()))
        self.opened: set[str] = set()
        self.forks = 0

    def teardown(self) -> None:
        self.executor.close()

    def step(self, frames: int) -> None:
        for _ in range(frames):
            frame = self.engine.step()  # must never raise
            if frame is not None:
                self.check(frame)

    def check(self, frame: Frame) -> None:
        for chat_id, delta in frame.deltas.items():
            # A chat never opened hears only that it is not open (a pane waits on an answer).
            assert chat_id in self.opened or delta.notice == Notice(NoticeKind.NOT_OPEN), chat_id
            assert delta.notice is None or isinstance(delta.notice, Notice)
            assert delta.notice is None or delta.notice.text()

    @initialize(system=SYSTEMS)
    def open_two(self, system: str) -> None:
        self.open("a", system, 40)
        self.open("b", system, 40)

    @rule(chat=CHATS, system=SYSTEMS, max_tokens=st.integers(1, 40))
    def open(self, chat: str, system: str, max_tokens: int) -> None:
        if chat in self.opened:
            return
        self.opened.add(chat)
        config = ChatConfig(chat, system, SamplingParams(temperature=0.7, seed=1), max_tokens)
        self.engine.submit(OpenChat(chat, config))

    @rule(chat=CHATS, text=TEXTS, frames=st.integers(0, 6))
    def send(self, chat: str, text: str, frames: int) -> None:
        self.engine.submit(SendTurn(chat, text))
        self.step(frames)

    @rule(chat=CHATS, command=st.sampled_from([StopChat, ClearChat, Regenerate]))
    def command(self, chat: str, command: type) -> None:
        self.engine.submit(command(chat))

    def message_id(self, chat: str, index: int, role: Role | None = None) -> int:
        """The id of the ``index``-th message (of ``role``) on the chat's branch shown, as a
        pane picks one; an id no chat has when there is none (the engine must say so)."""
        tree = self.engine.tree(chat)
        path = [m for m in (tree.path() if tree else []) if role is None or m.role is role]
        return path[index % len(path)].id if path else 10_000 + index

    @rule(chat=CHATS, index=st.integers(0, 5), text=TEXTS, frames=st.integers(0, 6))
    def edit(self, chat: str, index: int, text: str, frames: int) -> None:
        self.engine.submit(EditMessage(chat, self.message_id(chat, index, Role.USER), text))
        self.step(frames)

    @rule(chat=CHATS, index=st.integers(0, 7))
    def show_branch(self, chat: str, index: int) -> None:
        """Another branch: through any message of the tree (or one it lacks)."""
        tree = self.engine.tree(chat)
        ids = sorted(m.id for m in tree) if tree else []
        self.engine.submit(ShowMessage(chat, ids[index % len(ids)] if ids else 10_000 + index))

    @rule(chat=CHATS)
    def close(self, chat: str) -> None:
        self.engine.submit(CloseChat(chat))

    @rule(source=CHATS)
    def fork(self, source: str) -> None:
        self.forks += 1
        chat = f"fork{self.forks}"
        self.opened.add(chat)
        config = ChatConfig(chat, "", SamplingParams(temperature=0.0), 20)
        self.engine.submit(ForkChat(source, chat, config))

    @rule(frames=st.integers(1, 30))
    def run(self, frames: int) -> None:
        self.step(frames)

    @invariant()
    def no_chat_holds_cells_beyond_its_tokens(self) -> None:
        for chat in self.opened:
            held = self.engine.context(chat)
            if held is not None:
                assert held.cells == len(held.tokens)

    def settles(self) -> None:
        """With nothing more sent, every reply ends (max_tokens bounds them all)."""
        for _ in range(600):
            if not self.engine.busy:
                return
            self.step(1)
        raise AssertionError("the engine did not settle")

    @rule()
    def wait_until_idle(self) -> None:
        self.settles()


EngineMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=EXAMPLES <= 12,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestEngineRandomly = EngineMachine.TestCase
