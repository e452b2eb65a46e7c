"""A reply as OpenAI's chat-completions format writes it: the whole ``chat.completion``, or
the stream's ``chat.completion.chunk`` events."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from api.chat_request import ChatRequest
from core.chat.frames import ChatDelta
from core.chat.token_stats import TokenStat
from core.text.reply_stream import StopReason

#: OpenAI's finish_reason for each way a reply ends ("length": cut short by a limit).
FINISH_REASONS = {
    StopReason.END_OF_GENERATION: "stop",
    StopReason.STOP_STRING: "stop",
    StopReason.MAX_TOKENS: "length",
    StopReason.CONTEXT_FULL: "length",
    StopReason.CANCELLED: "stop",
}


def logprob(probability: float) -> float:
    return math.log(probability) if probability > 0 else -9999.0


def likeliest(stat: TokenStat, top: int) -> list[tuple[str, float]]:
    """The ``top`` likeliest tokens at a reply token's place, the chosen one among them when
    it is one of them: (text, log-probability), likeliest first."""
    ranked = sorted(
        [(stat.piece, stat.probability)] + [(a.piece, a.probability) for a in stat.alternatives],
        key=lambda pair: pair[1],
        reverse=True,
    )
    return [(piece, logprob(p)) for piece, p in ranked[:top]]


def token_logprobs(tokens: list[TokenStat], top: int) -> list[dict[str, Any]]:
    """``logprobs.content`` for ``tokens``: each token's log-probability (the model's own, at
    temperature 1) and, with ``top``, the likeliest tokens at that place."""
    content: list[dict[str, Any]] = []
    for stat in tokens:
        content.append(
            {
                "token": stat.piece,
                "logprob": logprob(stat.probability),
                "bytes": list(stat.piece.encode("utf-8")),
                "top_logprobs": [
                    {"token": piece, "logprob": odds, "bytes": list(piece.encode("utf-8"))}
                    for piece, odds in likeliest(stat, top)
                ],
            }
        )
    return content


@dataclass(slots=True)
class Completion:
    """One request's reply as it comes: what it has said, its tokens, how it ended."""

    request: ChatRequest
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    reasoning: str = ""
    tokens: list[TokenStat] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop: StopReason | None = None

    def add(self, delta: ChatDelta) -> None:
        """A frame's text (a chat reply's leading blank is the engine's to drop: it does, as
        the app shows replies; a raw prompt's continuation keeps it)."""
        self.text += delta.text
        self.reasoning += delta.reasoning
        self.tokens += delta.tokens
        self.prompt_tokens = delta.prompt_tokens or self.prompt_tokens
        if delta.finished is not None:
            self.stop = delta.finished
            self.completion_tokens = delta.reply_tokens

    @property
    def finish_reason(self) -> str | None:
        return FINISH_REASONS[self.stop] if self.stop is not None else None

    @property
    def total_tokens(self) -> int:
        """What the chat's KV holds once the reply has ended, about: prompt and reply."""
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def _logprobs(self, tokens: list[TokenStat]) -> dict[str, Any] | None:
        if not self.request.logprobs:
            return None
        return {"content": token_logprobs(tokens, self.request.top_logprobs)}

    def whole(self) -> dict[str, Any]:
        """The ``chat.completion`` object, once the reply has ended."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": self._logprobs(self.tokens),
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
        }

    def chunk(
        self,
        delta: dict[str, Any],
        tokens: list[TokenStat] | None = None,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        """One ``chat.completion.chunk`` of the stream."""
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": self._logprobs(tokens) if tokens else None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if self.request.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self) -> list[dict[str, Any]]:
        """The stream's first chunk: the reply's role, as OpenAI sends it."""
        return [self.chunk({"role": "assistant", "content": ""})]

    def chunks_for(self, delta: ChatDelta) -> list[dict[str, Any]]:
        """The chunks one frame's delta makes: new reasoning, new text (with its tokens'
        odds), and the finishing chunk when the reply ends."""
        before = len(self.text)
        self.add(delta)
        chunks: list[dict[str, Any]] = []
        if delta.reasoning:
            chunks.append(self.chunk({"reasoning_content": delta.reasoning}))
        text = self.text[before:]
        if text or (delta.tokens and self.request.logprobs):
            chunks.append(self.chunk({"content": text}, delta.tokens))
        if self.stop is not None:
            chunks.append(self.chunk({}, finish_reason=self.finish_reason))
        return chunks

    def usage_chunk(self) -> dict[str, Any]:
        """The stream's last chunk, when the request asked for usage."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "choices": [],
            "usage": self.usage(),
        }
