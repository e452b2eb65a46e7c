"""The chat engine headless, on the real model, with no Textual: several chats in one batch,
stop, fork, regenerate, and a context shift — driven the way a script drives it."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core import (
    BatchedExecutor,
    ContextParams,
    LlamaWeights,
    PrefixSharing,
    SamplingParams,
    StopReason,
    model_template,
)
from core.chat import (
    ChatConfig,
    ChatContext,
    ChatEngine,
    ChatEngineGroup,
    ChatTree,
    EngineEvent,
    ForkChat,
    Frame,
    GroupCommand,
    Notice,
    NoticeKind,
    OpenChat,
    Regenerate,
    Restore,
    SendTurn,
    StopChat,
)

GREEDY = SamplingParams(temperature=0.0)


class Driver:
    """An engine run by the app's decode loop (a :class:`ChatEngineGroup`), its events in a
    queue, and the text each chat has shown so far."""

    def __init__(self, engine: ChatEngine) -> None:
        self.engine = engine  # to read between frames
        self.events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
        self.loop = ChatEngineGroup(engine, self.events.put)
        self.loop.start()
        self.frames: list[Frame] = []
        self.text: dict[str, str] = {}
        self.finished: dict[str, list[StopReason]] = {}
        self.notices: dict[str, list[str]] = {}

    def run_until(self, done: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the engine did not get there in time"
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            assert isinstance(event, Frame), event
            self.frames.append(event)
            for chat_id, delta in event.deltas.items():
                self.text[chat_id] = self.text.get(chat_id, "") + delta.text
                if delta.finished is not None:
                    self.finished.setdefault(chat_id, []).append(delta.finished)
                if delta.notice is not None:
                    self.notices.setdefault(chat_id, []).append(delta.notice.text())

    def replies(self, chat_id: str) -> int:
        return len(self.finished.get(chat_id, []))

    def submit(self, *commands: GroupCommand) -> None:
        self.loop.submit(*commands)

    def tree(self, chat_id: str) -> ChatTree | None:
        return self.loop.tree(chat_id)

    def context(self, chat_id: str) -> ChatContext | None:
        return self.loop.context(chat_id)

    @property
    def busy(self) -> bool:
        return self.loop.busy

    def stop(self) -> bool:
        """Stop the loop (then the engine may be read whole); whether it stopped."""
        return self.loop.shutdown()


@pytest.fixture
def make_driver(weights: LlamaWeights) -> Iterator[Callable[..., Driver]]:
    made: list[tuple[Driver, BatchedExecutor]] = []

    def make(**params: int) -> Driver:
        settings = {"n_ctx": 2048, "n_batch": 256, "n_seq_max": 4, **params}
        executor = BatchedExecutor(weights, ContextParams(**settings))  # type: ignore[arg-type]
        driver = Driver(ChatEngine(executor, model_template(weights)))
        made.append((driver, executor))
        return driver

    yield make
    for driver, executor in made:
        driver.stop()
        executor.close()


def chat(name: str, max_tokens: int = 24, stop: tuple[str, ...] = ("\n\n",)) -> ChatConfig:
    return ChatConfig(name, "A helpful assistant answers briefly.", GREEDY, max_tokens, stop)


def test_several_chats_answer_together_in_one_batch(make_driver: Callable[..., Driver]) -> None:
    driver = make_driver()
    names = ("a", "b", "c")
    driver.submit(*(OpenChat(n, chat(n)) for n in names))
    questions = ("What is the capital of France?", "Name a fruit.", "What is two plus two?")
    driver.submit(*(SendTurn(n, q) for n, q in zip(names, questions, strict=True)))
    driver.run_until(lambda: all(driver.replies(n) == 1 for n in names))
    assert all(driver.text[n].strip() for n in names)
    assert max(f.stats.generating for f in driver.frames) == 3  # all three in one batch
    assert all(driver.finished[n] == [StopReason.STOP_STRING] for n in names)  # "\n\n"


def test_a_reply_says_how_many_prompt_tokens_it_started_from(
    make_driver: Callable[..., Driver],
) -> None:
    """The frame a reply starts in gives its prompt's length (the API's usage counts):
    where the reply begins in the KV, the whole conversation before it on a later turn."""
    driver = make_driver()
    driver.submit(OpenChat("a", chat("a")), SendTurn("a", "Name a fruit."))
    driver.run_until(lambda: driver.replies("a") == 1)
    driver.submit(SendTurn("a", "Name another one."))
    driver.run_until(lambda: driver.replies("a") == 2)
    starts = [f.deltas["a"].prompt_tokens for f in driver.frames if "a" in f.deltas]
    starts = [n for n in starts if n]
    context = driver.context("a")
    assert context is not None and len(starts) == 2
    assert 10 < starts[0] < starts[1] == context.reply_start


def test_a_subscriber_gets_every_frame_the_view_gets(make_driver: Callable[..., Driver]) -> None:
    """What records the chats subscribes to the decode loop itself: it sees each frame the
    view sees, the same, in the same order."""
    driver = make_driver()
    seen: list[EngineEvent] = []
    driver.loop.subscribe(seen.append)
    driver.submit(OpenChat("a", chat("a")), SendTurn("a", "Name a fruit."))
    driver.run_until(lambda: driver.replies("a") == 1)
    assert driver.stop()
    while not driver.events.empty():
        driver.frames.append(driver.events.get())  # type: ignore[arg-type]
    assert seen == driver.frames and len(seen) > 2


def test_stop_ends_a_reply_as_cancelled(make_driver: Callable[..., Driver]) -> None:
    driver = make_driver()
    driver.submit(OpenChat("long", chat("long", max_tokens=400, stop=())))
    driver.submit(SendTurn("long", "Write a very long story about the sea."))
    driver.run_until(lambda: len(driver.text.get("long", "")) > 20)
    driver.submit(StopChat("long"))
    driver.run_until(lambda: driver.replies("long") == 1)
    assert driver.finished["long"] == [StopReason.CANCELLED]


def test_stop_and_send_together_end_one_reply_before_the_next(
    make_driver: Callable[..., Driver],
) -> None:
    """A frame's delta tells of at most one reply ending, and only then of another starting:
    Esc then Enter in one go must not fold the two replies into one."""
    driver = make_driver()
    driver.submit(OpenChat("c", chat("c", max_tokens=400, stop=())))
    driver.submit(SendTurn("c", "Write a very long story about the sea."))
    driver.run_until(lambda: len(driver.text.get("c", "")) > 20)
    driver.submit(StopChat("c"), SendTurn("c", "Now tell me about the sky."))
    driver.run_until(lambda: driver.replies("c") == 2)
    deltas = [f.deltas["c"] for f in driver.frames if "c" in f.deltas]
    (stopped,) = [d for d in deltas if d.finished is StopReason.CANCELLED]
    assert not stopped.started  # the next reply starts in a later frame
    assert sum(d.started for d in deltas) == 2


def test_a_fork_continues_from_the_same_point(make_driver: Callable[..., Driver]) -> None:
    driver = make_driver()
    driver.submit(OpenChat("main", chat("main")))
    driver.submit(SendTurn("main", "What is the capital of France?"))
    driver.run_until(lambda: driver.replies("main") == 1)
    decoded = driver.engine.executor.stats.tokens_decoded
    driver.submit(ForkChat("main", "branch", chat("branch")))
    driver.run_until(lambda: driver.tree("branch") is not None)
    assert driver.engine.executor.stats.tokens_decoded == decoded  # the fork decoded nothing
    driver.submit(SendTurn("branch", "And of Spain?"), SendTurn("main", "And of Italy?"))
    driver.run_until(lambda: driver.replies("branch") == 1 and driver.replies("main") == 2)
    main, branch = driver.context("main"), driver.context("branch")
    assert main is not None and branch is not None
    first_turn = main.turns[1].start  # where main's second turn began
    assert branch.tokens[:first_turn] == main.tokens[:first_turn]
    assert branch.tokens != main.tokens  # they went apart after


def test_regenerate_replaces_the_last_reply(make_driver: Callable[..., Driver]) -> None:
    driver = make_driver()
    config = ChatConfig("r", "", SamplingParams(temperature=0.9, seed=3), 16, ("\n\n",))
    driver.submit(OpenChat("r", config))
    driver.submit(SendTurn("r", "Tell me a word."))
    driver.run_until(lambda: driver.replies("r") == 1)
    before = driver.context("r")
    assert before is not None
    base = before.reply_start  # where the reply starts in the KV
    driver.submit(Regenerate("r"))
    driver.run_until(lambda: driver.replies("r") == 2)
    started = [d for f in driver.frames for k, d in f.deltas.items() if k == "r" and d.started]
    assert started[-1].replaces_last
    after = driver.context("r")
    assert after is not None and len(after.turns) == 1  # still one turn
    assert after.tokens[:base] == before.tokens[:base]  # only the reply was decoded again
    assert after.reply_start == base < len(after.tokens) <= base + 16


def test_a_long_chat_shifts_its_oldest_turns_out_and_goes_on(
    make_driver: Callable[..., Driver],
) -> None:
    driver = make_driver(n_ctx=256, n_batch=128, n_seq_max=2)
    driver.submit(OpenChat("s", chat("s", max_tokens=40, stop=())))
    question = "tell me more about the sea, the sky and the mountains. " * 3
    turn = 0
    while not driver.notices.get("s") and turn < 20:
        driver.submit(SendTurn("s", f"Turn {turn}: {question}"))
        driver.run_until(lambda t=turn: driver.replies("s") == t + 1)  # type: ignore[misc]
        turn += 1
    assert any("oldest turn" in n for n in driver.notices.get("s", [])), driver.notices
    driver.submit(SendTurn("s", "One more question: what is the sea?"))
    driver.run_until(lambda: driver.replies("s") == turn + 1)  # it goes on after the shift
    held = driver.context("s")
    assert held is not None and held.dropped >= 1
    assert len(held.tokens) < 256
    assert turn >= 3  # several whole turns fitted before the first shift


def test_a_script_can_step_the_engine_in_its_own_thread(weights: LlamaWeights) -> None:
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2)) as executor:
        engine = ChatEngine(executor, model_template(weights))  # no thread
        engine.submit(OpenChat("x", chat("x")), OpenChat("y", chat("y")))
        engine.submit(SendTurn("x", "Name a fruit."), SendTurn("y", "Name a colour."))
        frames = []
        while engine.busy:
            frame = engine.step()
            if frame is not None:
                frames.append(frame)
        ended = {k: d.finished for f in frames for k, d in f.deltas.items() if d.finished}
        assert set(ended) == {"x", "y"}
        assert max(f.stats.generating for f in frames) == 2
        assert engine.step() is None  # nothing left to do


def run_steps(
    engine: ChatEngine, until: Callable[[list[Frame]], bool] | None = None
) -> list[Frame]:
    """Step a thread-less engine until ``until`` (given the frames so far) holds, or without
    it until the engine is idle."""
    frames: list[Frame] = []
    for _ in range(2000):
        if until(frames) if until is not None else frames and not engine.busy:
            return frames
        assert engine.busy or not frames, "the engine went idle first"
        frame = engine.step()
        if frame is not None:
            frames.append(frame)
    raise AssertionError("the engine did not get there in 2000 steps")


def shown(frames: list[Frame], chat_id: str) -> str:
    return "".join(f.deltas[chat_id].text for f in frames if chat_id in f.deltas)


def test_stop_while_a_chat_opens_drops_the_turns_sent_to_it(weights: LlamaWeights) -> None:
    """The second chat waits for the first to decode their shared system prompt; a stop sent
    meanwhile drops its queued turn, as it does for an open chat."""
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2)) as executor:
        engine = ChatEngine(executor, model_template(weights))
        engine.submit(OpenChat("a", chat("a")), OpenChat("b", chat("b")))
        engine.submit(SendTurn("b", "Name a fruit."), StopChat("b"), Regenerate("b"))
        frames = run_steps(engine)
        notices = [f.deltas["b"].notice for f in frames if "b" in f.deltas]
        assert Notice(NoticeKind.OPENING) in notices  # the regenerate came too early
        assert not any(d.started for f in frames for d in f.deltas.values())
        held = engine.context("b")
        assert held is not None and held.users == []  # the turn the stop dropped
        assert engine.prefix_sharing() == PrefixSharing(prefilled=1, shared=1)


def test_quitting_mid_reply_hands_back_the_cut_reply_and_a_state_that_resumes(
    weights: LlamaWeights, tmp_path: Path
) -> None:
    """The KV cells saved on quit hold the reply that was streaming; the snapshot returns its
    text so that the transcript saved beside them holds it too, and the pair resumes."""
    question = "Count from one to fifty in words."  # a long greedy reply on the embedded model
    long_chat = chat("s", max_tokens=400, stop=())
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2)) as executor:
        engine = ChatEngine(executor, model_template(weights))
        engine.submit(OpenChat("s", long_chat), SendTurn("s", question))
        frames = run_steps(engine, lambda frames: len(shown(frames, "s")) > 40)
        snap = engine.snapshot("s", tmp_path / "s.kv")
        assert snap.state is not None and snap.tree_change is not None
        (cut,) = snap.tree_change.messages  # the reply, ended: the frames had the rest
        assert cut.stop is StopReason.CANCELLED and cut.tokens
        assert cut.text.startswith(shown(frames, "s").strip())
        tree = engine.tree("s")
        assert tree is not None and tree.path()[-1].stop is StopReason.CANCELLED
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2)) as executor:
        engine = ChatEngine(executor, model_template(weights))
        messages = [("user", question), ("assistant", cut.text)]
        engine.submit(OpenChat("s", long_chat, Restore(ChatTree.linear(messages), snap.state)))
        frames = run_steps(engine, lambda _: engine.tree("s") is not None)
        assert not any(d.notice for f in frames for d in f.deltas.values())
        resumed = engine.context("s")
        assert resumed is not None and len(resumed.tokens) == snap.state.tokens
        engine.submit(SendTurn("s", "And the sky?"))
        frames = run_steps(engine)
        assert shown(frames, "s").strip()
