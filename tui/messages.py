"""Messages from the decode loop to the UI: one per frame, carrying every pane's new text."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from core import StopReason


@dataclass(slots=True)
class PaneDelta:
    """What happened to one pane during one frame."""

    text: str = ""
    started: bool = False  # a new reply began (the UI opens a new message block)
    replaces_last: bool = False  # ...as another version of the last reply (regenerate)
    taken_back: str | None = None  # the last user turn was rewound: its text, to edit
    finished: StopReason | None = None  # why the reply ended, if it ended this frame
    reply_tokens: int = 0  # the finished reply's length in tokens
    notice: str | None = None  # something to tell the user (context full, error)
    tokens_per_second: float = 0.0
    context_used: int = 0
    generating: bool = False

    def absorb(self, later: PaneDelta) -> bool:
        """Fold a later frame's delta into this one, unless that would reorder a reply's end and
        the next one's start; returns whether it did."""
        if (
            self.finished is not None
            or later.started
            or self.taken_back is not None
            or later.taken_back is not None
        ):
            return False
        self.text += later.text
        self.finished = later.finished
        self.reply_tokens = later.reply_tokens
        self.notice = later.notice or self.notice
        self.tokens_per_second = later.tokens_per_second
        self.context_used = later.context_used
        self.generating = later.generating
        return True


@dataclass(slots=True)
class FrameStats:
    frame: int = 0
    batch_tokens: int = 0
    generating: int = 0
    tokens_per_second: float = 0.0  # aggregate over panes, smoothed
    kv_used: int = 0
    kv_total: int = 0
    decode_share: float = 0.0  # share of the frame spent inside llama_decode


class FrameUpdate(Message):
    """One decode frame: new text for every pane that produced some, plus frame stats."""

    def __init__(self, deltas: dict[str, PaneDelta], stats: FrameStats) -> None:
        super().__init__()
        self.deltas = deltas
        self.stats = stats


class EngineFailed(Message):
    """The decode loop hit an unexpected error and stopped; the message says what."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
