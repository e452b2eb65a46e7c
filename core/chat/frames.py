"""What the chat engine hands out: one frame per decode step, with every chat's new text and
the frame's figures; or, once, why the engine stopped."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.chat.notices import Notice
from core.chat.token_stats import TokenStat
from core.chat.tree import TreeChange
from core.text.reply_stream import StopReason


@dataclass(slots=True)
class ChatDelta:
    """What happened to one pane during one frame."""

    message_id: int | None = None  # the reply (its id in the chat's tree) the text belongs to
    tree_changes: list[TreeChange] = field(default_factory=list)  # the chat's tree, in order
    text: str = ""  # the answer's new text
    reasoning: str = ""  # new reasoning text (a reasoning model's thoughts, before its answer)
    started: bool = False  # a new reply began (the UI opens a new message block)
    replaces_last: bool = False  # ...as another version of the last reply (regenerate)
    finished: StopReason | None = None  # why the reply ended, if it ended this frame
    reply_tokens: int = 0  # the finished reply's length in tokens
    prompt_tokens: int = 0  # the tokens the reply started from (set in the frame it starts)
    notice: Notice | None = None  # something to tell the user (context full, error)
    tokens: list[TokenStat] = field(default_factory=list)  # the reply's new tokens, with odds
    model: str | None = None  # the chat now answers with this model (a switch)
    tokens_per_second: float = 0.0
    context_used: int = 0
    generating: bool = False

    def absorb(self, later: ChatDelta) -> bool:
        """Fold a later frame's delta into this one, unless that would reorder a reply's end and
        the next one's start; returns whether it did."""
        if self.finished is not None or later.started:
            return False
        self.message_id = later.message_id if later.message_id is not None else self.message_id
        self.tree_changes += later.tree_changes
        self.text += later.text
        self.reasoning += later.reasoning
        self.tokens += later.tokens
        self.finished = later.finished
        self.reply_tokens = later.reply_tokens
        self.prompt_tokens = later.prompt_tokens or self.prompt_tokens
        self.notice = later.notice or self.notice
        self.model = later.model if later.model is not None else self.model
        self.tokens_per_second = later.tokens_per_second
        self.context_used = later.context_used
        self.generating = later.generating
        return True


@dataclass(slots=True)
class FrameStats:
    frame: int = 0  # the engine's frame number; 0: no decode step (a notice of its own)
    batch_tokens: int = 0
    generating: int = 0
    tokens_per_second: float = 0.0  # aggregate over chats, smoothed
    kv_used: int = 0
    kv_total: int = 0
    decode_share: float = 0.0  # share of the frame spent inside llama_decode

    @property
    def decoded(self) -> bool:
        """The figures of a decode step (a notice-only frame has none)."""
        return self.frame > 0


@dataclass(frozen=True, slots=True)
class Frame:
    """One decode step: new text for every chat that produced some, plus the step's figures,
    and which model decoded it ("" the default one)."""

    deltas: dict[str, ChatDelta] = field(default_factory=dict)
    stats: FrameStats = field(default_factory=FrameStats)
    model: str = ""


@dataclass(frozen=True, slots=True)
class EngineFailure:
    """The engine hit an unexpected error and stopped; ``error`` says what."""

    error: str


#: What the engine's ``emit`` callback receives.
EngineEvent = Frame | EngineFailure
