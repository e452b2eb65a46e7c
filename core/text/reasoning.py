"""A reasoning model's thoughts, kept apart from its answer as the reply streams.

Reasoning models (DeepSeek-R1, Qwen3, QwQ, Magistral, …) write their thinking between markers
before the answer: ``<think>…</think>`` for most. Some chat templates open the block in the
generation prompt themselves, so the reply starts inside it and only the closing marker comes.
:class:`ReasoningSplitter` takes the reply's text as it streams and hands back what is
reasoning and what is answer, holding back a partial marker until it is whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

#: Marker pairs of the reasoning models we know, the common one first.
KNOWN_MARKERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("[THINK]", "[/THINK]"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
    ("<seed:think>", "</seed:think>"),
)


@dataclass(frozen=True, slots=True)
class ReasoningMarkers:
    opening: str = "<think>"
    closing: str = "</think>"

    @classmethod
    def in_template(cls, source: str) -> ReasoningMarkers:
        """The pair a chat template's text uses, else the common one."""
        for opening, closing in KNOWN_MARKERS:
            if closing in source:
                return cls(opening, closing)
        return cls()

    def join(self, reasoning: str, answer: str) -> str:
        """A reply as one text, its reasoning (if any) between the markers, then the answer:
        how a transcript keeps it, so that :func:`split_reply` gives the same two parts."""
        if not reasoning.strip():
            return answer.strip()
        return f"{self.opening}{reasoning.strip()}{self.closing}\n\n{answer.strip()}".strip()

    def in_own_markers(self, text: str) -> str:
        """A saved reply whose reasoning is between another known pair (one saved
        mid-stream, which the app writes with the common pair), rewritten with this pair, so
        a template that looks for its own markers finds it; any other text as it is."""
        stripped = text.lstrip()
        if stripped.startswith(self.opening):
            return text
        for opening, _ in KNOWN_MARKERS:
            if stripped.startswith(opening):
                split = split_reply(stripped)
                return self.join(split.reasoning, split.answer)
        return text

    def opened_by(self, prompt: str) -> bool:
        """Whether ``prompt`` (a generation prompt) ends inside a reasoning block."""
        return prompt.rstrip().endswith(self.opening)


@dataclass(slots=True)
class Split:
    """One piece of a reply, split: its reasoning text and its answer text."""

    reasoning: str = ""
    answer: str = ""


class Part(Enum):
    """Where in the reply the splitter is."""

    START = "start"  # nothing seen yet but whitespace: a reasoning block may open
    REASONING = "reasoning"
    ANSWER = "answer"


@dataclass(slots=True)
class ReasoningSplitter:
    """Splits a streaming reply. Reasoning counts only as the reply's first block: markers
    later in an answer are answer text (a model explaining the format, say)."""

    markers: ReasoningMarkers = field(default_factory=ReasoningMarkers)
    inside: bool = False  # the prompt opened the block: the reply starts in it
    _state: Part = field(init=False, default=Part.START)
    _held: str = field(init=False, default="")
    _after_thoughts: bool = field(init=False, default=False)
    reasoning: str = field(init=False, default="")  # all reasoning so far
    answer: str = field(init=False, default="")  # all answer text so far

    def __post_init__(self) -> None:
        self._state = Part.REASONING if self.inside else Part.START

    def feed(self, text: str) -> Split:
        """Add streamed reply text; return what it adds to the reasoning and to the answer."""
        out = Split()
        text = self._held + text
        self._held = ""
        while text:
            if self._state is Part.START:
                text = self._start(text, out)
            elif self._state is Part.REASONING:
                text = self._in_reasoning(text, out)
            else:
                if self._after_thoughts:  # the blank line after the thoughts is not answer
                    text = text.lstrip()
                    self._after_thoughts = not text
                out.answer += text
                text = ""
        self.reasoning += out.reasoning
        self.answer += out.answer
        return out

    def _start(self, text: str, out: Split) -> str:
        stripped = text.lstrip()
        opening = self.markers.opening
        if not stripped:
            self._held = text  # only whitespace so far: wait
            return ""
        if stripped.startswith(opening):
            self._state = Part.REASONING
            return stripped[len(opening) :]
        if opening.startswith(stripped):
            self._held = text  # a marker may be arriving
            return ""
        self._state = Part.ANSWER
        return text

    def _in_reasoning(self, text: str, out: Split) -> str:
        closing = self.markers.closing
        at = text.find(closing)
        if at >= 0:
            out.reasoning += text[:at]
            self._state, self._after_thoughts = Part.ANSWER, True
            return text[at + len(closing) :]
        keep = _partial_suffix(text, closing)
        out.reasoning += text[: len(text) - keep]
        self._held = text[len(text) - keep :]
        return ""

    def flush(self) -> Split:
        """The reply ended: what was held back (an unfinished marker) goes where it was."""
        held, self._held = self._held, ""
        if self._state is Part.REASONING:
            out = Split(reasoning=held)
        else:  # before any text: whitespace is nothing, a cut-off marker is answer text
            out = Split(answer=held if held.strip() else "")
        self.reasoning += out.reasoning
        self.answer += out.answer
        return out

    @property
    def thinking(self) -> bool:
        """Inside the reasoning block now."""
        return self._state is Part.REASONING

    def record(self) -> str:
        """The whole reply as one text (see :meth:`ReasoningMarkers.join`)."""
        return self.markers.join(self.reasoning, self.answer)


def split_reply(text: str) -> Split:
    """A saved reply's reasoning and answer, for any of the known marker pairs."""
    stripped = text.lstrip()
    for opening, closing in KNOWN_MARKERS:
        if stripped.startswith(opening):
            splitter = ReasoningSplitter(ReasoningMarkers(opening, closing))
            splitter.feed(stripped)
            splitter.flush()
            return Split(splitter.reasoning.strip(), splitter.answer.strip())
    return Split(answer=text)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
