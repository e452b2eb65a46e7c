"""Two models side by side: does a chat on a fast model keep its pace while a slow model runs?

The group decodes one model's frame at a time, taking the models with work in turn, so a chat
on the fast model should wait at most one of the slow model's frames between two of its
tokens. Here the "fast" model is the default one with one chat (a one-token frame) and the
"slow" one is a second copy of the same weights serving 8 chats (an 8-token frame). Measured:
the fast chat's gap between tokens alone, the slow model's frame alone, and both together.
"""

from __future__ import annotations

import itertools
import queue
import statistics
import time
from dataclasses import dataclass, replace

from core.bench.prompts import short_prompts
from core.chat import (
    DEFAULT,
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    EngineEvent,
    Frame,
    ModelSpec,
    OpenChat,
    SendTurn,
    StopChat,
)
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights
from core.sampling.sampling import SamplingParams
from core.templates.chat_template import TRANSCRIPT

SLOW = "slow"


@dataclass(frozen=True, slots=True)
class ModelsResult:
    slow_chats: int
    fast_gap_alone_median: float  # the fast chat's time between tokens, nothing else running
    fast_gap_alone_max: float
    slow_frame_alone_median: float  # the slow model's time between frames, running alone
    slow_frame_alone_max: float
    fast_gap_together_median: float  # the fast chat's gap while the slow model streams too
    fast_gap_together_max: float
    slow_frame_together_median: float
    slow_frames_between: int  # the most slow-model frames between two of the fast model's

    @property
    def bound(self) -> float:
        """What the fast chat's gap may grow to: one frame of each model (their worst)."""
        return self.fast_gap_alone_max + self.slow_frame_alone_max

    @property
    def within_bound(self) -> bool:
        return self.fast_gap_together_max <= self.bound


class FrameRecorder:
    """Frames with the time they came, by model and chat."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[float, EngineEvent]] = queue.SimpleQueue()

    def emit(self, event: EngineEvent) -> None:
        self.events.put((time.perf_counter(), event))

    def collect(self, group: ChatEngineGroup, turns: dict[str, str], tokens: int) -> list[Frame]:
        """Frames until every chat in ``turns`` has streamed ``tokens`` frames of text; a chat
        whose reply ends is sent its turn again, so it streams the whole time."""
        seen = dict.fromkeys(turns, 0)
        frames: list[tuple[float, Frame]] = []
        deadline = time.monotonic() + 300
        while min(seen.values()) < tokens:
            if time.monotonic() > deadline:
                raise RuntimeError("the models benchmark did not finish in 5 minutes")
            at, event = self.events.get(timeout=60)
            if not isinstance(event, Frame):
                raise RuntimeError(f"the decode loop failed: {event.error}")
            frames.append((at, event))
            for chat_id, delta in event.deltas.items():
                if chat_id in seen and delta.text:
                    seen[chat_id] += 1
                if chat_id in turns and delta.finished is not None:
                    group.submit(SendTurn(chat_id, turns[chat_id]))
        self.frames = frames
        return [f for _, f in frames]

    def gaps(self, *, chat: str | None = None, model: str | None = None) -> list[float]:
        """Times between consecutive frames with text for ``chat`` (or from ``model``)."""
        times = [
            at
            for at, f in self.frames
            if (chat is not None and chat in f.deltas and f.deltas[chat].text)
            or (model is not None and f.model == model and any(d.text for d in f.deltas.values()))
        ]
        return [b - a for a, b in itertools.pairwise(times)][2:]  # past the prefill

    def most_frames_between(self, model: str, other: str) -> int:
        """The most frames ``other`` decoded between two consecutive frames of ``model``, from
        the frame numbers each engine's frames carry (so frames that showed nothing and were
        not handed out still count).

        A gap is counted only where both ends are known: until the first of ``other``'s
        frames in this collection, where ``other`` stands is not known (its frame numbers run
        on from earlier phases: counting from 0 once gave "10 frames between" after a phase
        in which the slow model ran alone). And a frame that ends one of ``model``'s replies
        leaves it with nothing to decode until :meth:`collect` sends the turn again: that
        wait is the benchmark's, not the scheduler's, so the gap after it is not counted."""
        other_at: int | None = None
        most = 0
        previous: tuple[int, int | None] | None = None  # model's last frame, other's then
        for _, frame in self.frames:
            if frame.model == other:
                other_at = frame.stats.frame
            elif frame.model == model:
                number = frame.stats.frame
                if (
                    previous is not None
                    and number == previous[0] + 1
                    and previous[1] is not None
                    and other_at is not None
                ):
                    most = max(most, other_at - previous[1])
                ended = any(d.finished is not None for d in frame.deltas.values())
                previous = None if ended else (number, other_at)
        return most


def measure_models(
    weights: LlamaWeights,
    model_path: str,
    base: ContextParams,
    *,
    slow_chats: int = 8,
    tokens: int = 40,
) -> ModelsResult:
    fast_params = replace(base, n_ctx=2048, n_seq_max=2)
    slow_params = replace(base, n_ctx=4096, n_seq_max=slow_chats)
    executor = BatchedExecutor(weights, fast_params)
    recorder = FrameRecorder()
    template = replace(TRANSCRIPT, stop_strings=())  # replies run to max_tokens
    group = ChatEngineGroup(
        ChatEngine(executor, template),
        recorder.emit,
        specs={SLOW: ModelSpec(SLOW, model_path, slow_params, template="transcript")},
    )
    greedy = SamplingParams(temperature=0.0)
    fast = ChatConfig("fast", "", greedy, max_tokens=tokens * 4)
    slow = [
        ChatConfig(f"slow {i}", "", greedy, max_tokens=tokens * 4, model=SLOW)
        for i in range(slow_chats)
    ]
    prompts = short_prompts(slow_chats + 1)
    group.start()
    try:
        group.submit(*(OpenChat(c.name, c) for c in slow))
        deadline = time.monotonic() + 120
        while SLOW not in group.loaded_models():  # loaded before anything is timed
            if time.monotonic() > deadline:
                raise RuntimeError("the second model did not load in 2 minutes")
            time.sleep(0.05)
        group.submit(OpenChat("fast", fast), SendTurn("fast", prompts[0]))
        recorder.collect(group, {"fast": prompts[0]}, tokens)
        fast_alone = recorder.gaps(chat="fast")
        group.submit(StopChat("fast"))
        slow_turns = {c.name: prompts[i + 1] for i, c in enumerate(slow)}
        group.submit(*(SendTurn(name, text) for name, text in slow_turns.items()))
        recorder.collect(group, slow_turns, tokens)
        slow_alone = recorder.gaps(model=SLOW)
        group.submit(SendTurn("fast", prompts[0]))
        recorder.collect(group, {"fast": prompts[0], **slow_turns}, tokens)
        fast_together, slow_together = recorder.gaps(chat="fast"), recorder.gaps(model=SLOW)
        between = recorder.most_frames_between(DEFAULT, SLOW)
    finally:
        if group.shutdown(timeout=30):  # else a decode may still run: the exit frees them
            group.close()
            executor.close()
    return ModelsResult(
        slow_chats=slow_chats,
        fast_gap_alone_median=statistics.median(fast_alone),
        fast_gap_alone_max=max(fast_alone),
        slow_frame_alone_median=statistics.median(slow_alone),
        slow_frame_alone_max=max(slow_alone),
        fast_gap_together_median=statistics.median(fast_together),
        fast_gap_together_max=max(fast_together),
        slow_frame_together_median=statistics.median(slow_together),
        slow_frames_between=between,
    )
