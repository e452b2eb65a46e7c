"""A raw prompt's continuation as OpenAI's completions API writes it: the whole
``text_completion``, or the stream's chunks of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.completion import Completion, likeliest, logprob
from core.chat.frames import ChatDelta
from core.chat.token_stats import TokenStat


def legacy_logprobs(tokens: list[TokenStat], top: int, offset: int) -> dict[str, Any]:
    """The completions API's ``logprobs``: parallel lists, ``text_offset`` counting from
    ``offset`` (the reply's characters before these tokens)."""
    offsets: list[int] = []
    for stat in tokens:
        offsets.append(offset)
        offset += len(stat.piece)
    return {
        "tokens": [stat.piece for stat in tokens],
        "token_logprobs": [logprob(stat.probability) for stat in tokens],
        "top_logprobs": [dict(likeliest(stat, top)) for stat in tokens],
        "text_offset": offsets,
    }


@dataclass(slots=True)
class TextCompletion:
    """One raw completion as it comes; ``reply`` assembles it (keeping its first blank: the
    text continues the prompt)."""

    reply: Completion
    offset: int = 0  # characters of logprobs already sent

    def _choice(self, text: str, tokens: list[TokenStat], finish: str | None) -> dict[str, Any]:
        request = self.reply.request
        odds = (
            legacy_logprobs(tokens, request.top_logprobs, self.offset) if request.logprobs else None
        )
        self.offset += sum(len(stat.piece) for stat in tokens)
        return {"index": 0, "text": text, "logprobs": odds, "finish_reason": finish}

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.reply.id.replace("chatcmpl-", "cmpl-"),
            "object": "text_completion",
            "created": self.reply.created,
            "model": self.reply.request.model,
        }

    def add(self, delta: ChatDelta) -> None:
        self.reply.add(delta)

    def opening(self) -> list[dict[str, Any]]:
        """Nothing opens a completion's stream: its first chunk has text."""
        return []

    def whole(self) -> dict[str, Any]:
        choice = self._choice(self.reply.text, self.reply.tokens, self.reply.finish_reason)
        return {**self._head(), "choices": [choice], "usage": self.reply.usage()}

    def chunks_for(self, delta: ChatDelta) -> list[dict[str, Any]]:
        before = len(self.reply.text)
        self.reply.add(delta)
        text = self.reply.text[before:]
        if not text and not delta.tokens and self.reply.stop is None:
            return []
        chunk = {
            **self._head(),
            "choices": [self._choice(text, delta.tokens, self.reply.finish_reason)],
        }
        if self.reply.request.include_usage:
            chunk["usage"] = None
        return [chunk]

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._head(), "choices": [], "usage": self.reply.usage()}
