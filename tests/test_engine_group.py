"""Several models side by side in one decode thread (ChatEngineGroup), on the real model: both
answer, a model loads when its first chat opens and is freed when its last one closes, a model
that cannot be loaded tells its chats and spares the others, and a chat moves to another model
and is read again there."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, SamplingParams, model_template
from core.chat import (
    DEFAULT,
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    ChatTree,
    CloseChat,
    EngineEvent,
    Frame,
    ModelSpec,
    NoticeKind,
    OpenChat,
    SendTurn,
    SwitchModel,
)

GREEDY = SamplingParams(temperature=0.0)
SMALL = ContextParams(n_ctx=1024, n_batch=256, n_seq_max=2)


class Run:
    """A started group with its events in a queue, and what each chat got."""

    def __init__(self, group: ChatEngineGroup, events: queue.SimpleQueue[EngineEvent]) -> None:
        self.group = group
        self.events = events
        self.frames: list[Frame] = []

    def until(self, done: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the group did not get there in time"
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            assert isinstance(event, Frame), event
            self.frames.append(event)

    def text(self, chat_id: str) -> str:
        return "".join(f.deltas[chat_id].text for f in self.frames if chat_id in f.deltas)

    def replies(self, chat_id: str) -> int:
        return sum(1 for f in self.frames if chat_id in f.deltas and f.deltas[chat_id].finished)

    def notices(self, chat_id: str) -> list[tuple[NoticeKind, str]]:
        return [
            (d.notice.kind, d.notice.text())
            for f in self.frames
            if (d := f.deltas.get(chat_id)) is not None and d.notice is not None
        ]

    def models(self, chat_id: str) -> set[str]:
        """The models whose frames carried this chat's text."""
        return {f.model for f in self.frames if chat_id in f.deltas and f.deltas[chat_id].text}


@pytest.fixture
def start(weights: LlamaWeights) -> Iterator[Callable[[dict[str, ModelSpec]], Run]]:
    made: list[tuple[ChatEngineGroup, BatchedExecutor]] = []

    def make(specs: dict[str, ModelSpec]) -> Run:
        executor = BatchedExecutor(weights, SMALL)
        events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
        group = ChatEngineGroup(
            ChatEngine(executor, model_template(weights)), events.put, specs=specs
        )
        group.start()
        made.append((group, executor))
        return Run(group, events)

    yield make
    for group, executor in made:
        assert group.shutdown()
        group.close()
        executor.close()


def chat(name: str, model: str = DEFAULT) -> ChatConfig:
    return ChatConfig(name, "", GREEDY, max_tokens=16, stop=("\n\n",), model=model)


QUESTION = "What is the capital of France?"


def test_two_models_answer_side_by_side_and_the_second_is_loaded_only_while_used(
    start: Callable[[dict[str, ModelSpec]], Run],
) -> None:
    run = start({"other": ModelSpec("other", None, SMALL)})
    assert run.group.loaded_models() == (DEFAULT,)  # nothing loaded before a chat needs it
    run.group.submit(OpenChat("a", chat("a")), OpenChat("b", chat("b", "other")))
    run.group.submit(SendTurn("a", QUESTION), SendTurn("b", QUESTION))
    run.until(lambda: run.replies("a") == 1 and run.replies("b") == 1)
    assert run.models("a") == {DEFAULT} and run.models("b") == {"other"}
    # The same weights, greedy: the second model's answer is the first one's, word for word.
    assert run.text("a").strip() and run.text("a") == run.text("b")
    assert set(run.group.loaded_models()) == {DEFAULT, "other"}
    run.group.submit(CloseChat("b"))
    run.until(lambda: run.group.loaded_models() == (DEFAULT,))  # freed with its last chat


def test_a_model_that_cannot_load_tells_its_chat_and_the_others_answer(
    start: Callable[[dict[str, ModelSpec]], Run], tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.gguf")
    run = start({"broken": ModelSpec("broken", missing, SMALL)})
    run.group.submit(
        OpenChat("a", chat("a")),
        OpenChat("b", chat("b", "broken")),
        OpenChat("c", chat("c", "not configured")),
    )
    run.group.submit(SendTurn("a", QUESTION), SendTurn("b", QUESTION), SendTurn("c", QUESTION))
    run.until(lambda: run.replies("a") == 1 and bool(run.notices("b")) and bool(run.notices("c")))
    ((kind, text),) = set(run.notices("b"))
    assert kind is NoticeKind.MODEL_FAILED and "'broken'" in text and "nope.gguf" in text
    assert "\n" not in text
    assert any("no model is named 'not configured'" in t for _, t in run.notices("c"))
    assert run.text("a").strip() and not run.text("b")
    assert run.group.loaded_models() == (DEFAULT,)


def test_a_model_that_does_not_fit_beside_the_others_says_which(
    start: Callable[[dict[str, ModelSpec]], Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start({"big": ModelSpec("big", None, ContextParams(n_ctx=32768, n_seq_max=2))})
    left = 64 * 2**20  # 64 MiB
    monkeypatch.setattr("core.executor.executor.available_memory", lambda: left)
    run.group.submit(OpenChat("a", chat("a", "big")), SendTurn("a", QUESTION))
    run.until(lambda: bool(run.notices("a")))
    ((kind, text),) = run.notices("a")
    assert kind is NoticeKind.MODEL_FAILED
    assert "model 'big' does not fit beside 'default'" in text


def test_a_chat_moves_to_another_model_and_is_read_again_there(
    start: Callable[[dict[str, ModelSpec]], Run],
) -> None:
    run = start({"other": ModelSpec("other", None, SMALL)})
    run.group.submit(OpenChat("a", chat("a")), SendTurn("a", QUESTION))
    run.until(lambda: run.replies("a") == 1)
    first = run.text("a")
    run.group.submit(SwitchModel("a", "other"))
    run.until(lambda: run.group.model_of("a") == "other" and bool(run.notices("a")))
    assert run.notices("a")[0][0] is NoticeKind.MODEL_SWITCHED
    run.group.submit(SendTurn("a", "And of Italy?"))
    run.until(lambda: run.replies("a") == 2)
    assert run.text("a")[len(first) :].strip()
    later = [f.model for f in run.frames if "a" in f.deltas and f.deltas["a"].text]
    assert later[-1] == "other"
    held = run.group.context("a")  # on "other" now
    assert held is not None and held.users == [QUESTION, "And of Italy?"]
    assert held.turns[0].reply.strip() == first.strip()


def test_a_chat_asked_to_move_to_a_model_that_cannot_load_stays_and_answers(
    start: Callable[[dict[str, ModelSpec]], Run], tmp_path: Path
) -> None:
    run = start({"broken": ModelSpec("broken", str(tmp_path / "nope.gguf"), SMALL)})
    run.group.submit(OpenChat("a", chat("a")), SendTurn("a", QUESTION))
    run.until(lambda: run.replies("a") == 1)
    run.group.submit(SwitchModel("a", "broken"))
    run.until(lambda: bool(run.notices("a")))
    ((kind, text),) = run.notices("a")
    assert kind is NoticeKind.MODEL_FAILED and "nope.gguf" in text
    assert run.group.model_of("a") == DEFAULT
    run.group.submit(SendTurn("a", "And of Italy?"))
    run.until(lambda: run.replies("a") == 2)


def test_a_turn_sent_right_before_a_switch_is_answered_not_lost(
    start: Callable[[dict[str, ModelSpec]], Run],
) -> None:
    """The switch reaches the chat's engine after the turn: the chat is busy, stays, and
    answers; the switch is refused with a notice."""
    run = start({"other": ModelSpec("other", None, SMALL)})
    run.group.submit(OpenChat("a", chat("a")), SendTurn("a", QUESTION))
    run.until(lambda: run.replies("a") == 1)
    run.group.submit(SwitchModel("a", "other"))  # loads "other" first, then moves the chat
    run.group.submit(SendTurn("a", "And of Italy?"))
    run.until(lambda: run.replies("a") == 2 and bool(run.notices("a")))
    assert run.group.model_of("a") in (DEFAULT, "other")
    kinds = {kind for kind, _ in run.notices("a")}
    assert kinds & {NoticeKind.BUSY, NoticeKind.MODEL_SWITCHED}
    assert run.text("a").count("Paris") >= 1 and run.replies("a") == 2


def test_a_chat_whose_model_never_loaded_moves_to_one_that_does(
    start: Callable[[dict[str, ModelSpec]], Run], tmp_path: Path
) -> None:
    run = start({"broken": ModelSpec("broken", str(tmp_path / "nope.gguf"), SMALL)})
    config = chat("a", "broken")
    run.group.submit(OpenChat("a", config), SendTurn("a", QUESTION))
    run.until(lambda: bool(run.notices("a")))
    run.group.submit(SwitchModel("a", DEFAULT, config, ChatTree.linear([("user", QUESTION)])))
    run.until(lambda: run.group.model_of("a") == DEFAULT)
    run.group.submit(SendTurn("a", "And of Italy?"))
    run.until(lambda: run.replies("a") == 1)
    assert run.text("a").strip()


def test_a_switch_behind_a_queued_turn_is_refused_in_order(
    start: Callable[[dict[str, ModelSpec]], Run],
) -> None:
    run = start({"other": ModelSpec("other", None, SMALL)})
    run.group.submit(OpenChat("a", chat("a")), OpenChat("b", chat("b", "other")))
    run.until(lambda: "other" in run.group.loaded_models())
    run.group.submit(SendTurn("a", QUESTION), SwitchModel("a", "other"))
    run.until(lambda: run.replies("a") == 1 and bool(run.notices("a")))
    assert [kind for kind, _ in run.notices("a")] == [NoticeKind.BUSY]
    assert run.group.model_of("a") == DEFAULT and run.text("a").strip()
