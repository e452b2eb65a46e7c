"""One reply as it streams: tokens in, visible text out, and where the reply really ended."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from core.models.weights import LlamaWeights
from core.text.detokenizer import IncrementalDetokenizer
from core.text.stop_strings import StopStringMatcher


class StopReason(StrEnum):
    """Why a reply ended (the value is what a user is shown)."""

    END_OF_GENERATION = "eog"  # the model's end-of-generation token
    STOP_STRING = "stop"  # one of the pane's stop strings
    MAX_TOKENS = "length"  # max_tokens reached
    CANCELLED = "cancelled"  # stopped, cleared or closed by the user
    CONTEXT_FULL = "context full"  # no room left in the context, even after a shift


@dataclass(slots=True)
class ReplyStream:
    """Turns sampled tokens into display text, stopping at end-of-generation tokens, stop
    strings, or ``max_tokens``.

    When a stop string ends the reply, the tokens that spelled it may already be in the KV
    cache; :meth:`settle` says how many to rewind, so that the KV holds no text the user did
    not see (the next turn's render decodes whatever shown text the KV then lacks).
    """

    weights: LlamaWeights
    stop_strings: Iterable[str] = ()
    max_tokens: int = 512
    #: A reply's leading whitespace is not part of its answer; a raw prompt's continuation
    #: keeps it (" Paris" after "The capital of France is").
    trims_lead: bool = True
    text: str = ""
    token_count: int = 0
    stop_reason: StopReason | None = None
    _detok: IncrementalDetokenizer = field(init=False)
    _stops: StopStringMatcher = field(init=False)
    _raw_len_after: list[int] = field(init=False, default_factory=list)
    _raw_len: int = field(init=False, default=0)
    _lead: str = field(init=False, default="")  # whitespace before the first visible character

    def __post_init__(self) -> None:
        self._detok = IncrementalDetokenizer(self.weights.token_piece)
        self._stops = StopStringMatcher(self.stop_strings)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def feed(self, token: int) -> str:
        """Add one sampled token; return the newly visible text. After it, check :attr:`done`:
        a finished reply's last token (EOG or stop) must not be prompted back."""
        if self.done:
            return ""
        if self.weights.is_eog(token):
            return self._finish(StopReason.END_OF_GENERATION)
        self.token_count += 1
        raw = self._detok.feed(token)
        self._raw_len += len(raw)
        self._raw_len_after.append(self._raw_len)
        if self.trims_lead and not self.text and not self._stops.pending:
            # Leading whitespace is not part of the answer, and must not trip a "\n\n" stop.
            stripped = raw.lstrip()
            self._lead += raw[: len(raw) - len(stripped)]
            raw = stripped
        shown = self._stops.feed(raw)
        self.text += shown
        if self._stops.stopped:
            return shown + self._finish(StopReason.STOP_STRING)
        if self.token_count >= self.max_tokens:
            return shown + self._finish(StopReason.MAX_TOKENS)
        return shown

    def cancel(self) -> str:
        """The user stopped the reply; flush what is held back."""
        return "" if self.done else self._finish(StopReason.CANCELLED)

    def _finish(self, reason: StopReason) -> str:
        self.stop_reason = reason
        tail = ""
        if reason is not StopReason.STOP_STRING:
            tail = self._stops.feed(self._detok.flush()) + self._stops.flush()
            self.text += tail
        return tail

    @property
    def written(self) -> str:
        """The reply as the model wrote it, leading whitespace included: rendered back into
        the chat, it spells the tokens the KV cache holds."""
        return self._lead + self.text

    @property
    def tokens_shown(self) -> int:
        """How many of the reply's tokens spell text the user sees (the first ones: a stop
        string's tokens, held back and then dropped, are not)."""
        return bisect.bisect_right(self._raw_len_after, len(self.written))

    def settle(self, tokens_in_kv: int) -> tuple[int, str]:
        """After the reply ended, with ``tokens_in_kv`` of its tokens decoded: return how many
        of them to rewind (they spell text the user never saw, like a stop string) and the
        shown text that lies after the kept tokens (not in the KV once they are rewound)."""
        full = self.written
        shown = len(full)
        keep = 0
        limit = min(tokens_in_kv, len(self._raw_len_after))
        while keep < limit and self._raw_len_after[keep] <= shown:
            keep += 1
        kept_chars = self._raw_len_after[keep - 1] if keep else 0
        return tokens_in_kv - keep, full[kept_chars:]
