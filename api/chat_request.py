"""A ``POST /v1/chat/completions`` body, checked and read into typed values: the chat the
engine opens for it (system prompt, earlier turns, the turn to answer) and how it samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from api.errors import bad_request
from api.parameters import (
    flag,
    include_usage,
    integer,
    json_object,
    model_name,
    refuse_unsupported,
    sampling_params,
    stop_strings,
    tokens_limit,
)
from core.chat.config import ChatConfig
from core.sampling.token_choice import ALTERNATIVES

#: Roles a request's messages may have; "developer" is OpenAI's newer name for "system".
SYSTEM_ROLES = ("system", "developer")
TURN_ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What one request asks for. ``history`` holds the turns before the one to answer, as
    (role, text) pairs; ``turn`` is the last user message."""

    model: str
    system: str
    history: tuple[tuple[str, str], ...]
    turn: str
    config: ChatConfig
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


def read_chat_request(
    body: object, defaults: ChatConfig, models: Sequence[str], max_tokens: int
) -> ChatRequest:
    """``body`` (parsed JSON) as a :class:`ChatRequest`, or an :class:`ApiError` (400) that
    names the parameter at fault. Sampling not given comes from ``defaults`` (llama.cpp's own
    sampler, see ``ServerSettings``); so do the stop strings when ``stop`` is absent.
    ``max_tokens``: the cap when the request gives none (the model's context)."""
    fields = json_object(body)
    model = model_name(fields, models)
    system, history, turn = _messages(fields.get("messages"))
    refuse_unsupported(fields)
    limit = tokens_limit(fields, max_tokens)
    sampler = sampling_params(fields, defaults.sampling)
    stop = stop_strings(fields.get("stop"), defaults.stop)
    logprobs = flag(fields, "logprobs")
    top = integer(fields, "top_logprobs", 0, 0, ALTERNATIVES)
    if top and not logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    config = replace(
        defaults, system=system, sampling=sampler, max_tokens=limit, stop=stop, model=model
    )
    return ChatRequest(
        model=model,
        system=system,
        history=history,
        turn=turn,
        config=config,
        stream=flag(fields, "stream"),
        include_usage=include_usage(fields),
        logprobs=logprobs,
        top_logprobs=top,
    )


def _messages(value: object) -> tuple[str, tuple[tuple[str, str], ...], str]:
    """(system prompt, earlier turns, the user turn to answer)."""
    if not isinstance(value, list) or not value:
        raise bad_request("'messages' must be a non-empty list of messages", "messages")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise bad_request(f"{param} must be an object with 'role' and 'content'", param)
        role = message.get("role")
        text = _content(message.get("content"), f"{param}.content")
        if role in SYSTEM_ROLES:
            if turns:
                raise bad_request(
                    f"{param}: a system message must come before the first user message", param
                )
            system.append(text)
        elif role in TURN_ROLES:
            if message.get("tool_calls"):
                raise bad_request(f"{param}: tool calls are not supported", param)
            turns.append((str(role), text))
        else:
            raise bad_request(
                f"{param}: role {role!r} is not supported (system, developer, user, assistant)",
                f"{param}.role",
            )
    if not turns or turns[-1][0] != "user":
        raise bad_request("the last message must be the user's: the one to answer", "messages")
    return "\n\n".join(system), tuple(turns[:-1]), turns[-1][1]


def _content(value: object, param: str) -> str:
    """A message's text: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts: list[str] = []
        for part in value:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise bad_request(f"{param}: only text parts are supported", param)
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{param}: a text part needs a string 'text'", param)
            texts.append(text)
        return "".join(texts)
    if value is None:
        return ""
    raise bad_request(f"{param} must be a string or a list of text parts", param)
