"""A ``POST /v1/chat/completions`` body, checked and read into typed values: the chat the
engine opens for it (system prompt, earlier turns, the turn to answer) and how it samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from api.errors import ApiError, bad_request
from core.chat.config import ChatConfig
from core.errors import InvalidParamsError
from core.sampling.sampling import SamplingParams
from core.sampling.token_choice import ALTERNATIVES

#: Roles a request's messages may have; "developer" is OpenAI's newer name for "system".
SYSTEM_ROLES = ("system", "developer")
TURN_ROLES = ("user", "assistant")
SEED_RANGE = 2**32


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
    names the parameter at fault. Sampling not given comes from ``defaults`` (the config's
    ``[pane_defaults]``); so do the stop strings when ``stop`` is absent. ``max_tokens``: the
    cap when the request gives none (the model's context)."""
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required: one of " + ", ".join(models), "model")
    if model not in models:
        raise ApiError(
            400,
            f"unknown model {model!r}: this server has " + ", ".join(models),
            "model",
            "model_not_found",
        )
    system, history, turn = _messages(body.get("messages"))
    _refuse_unsupported(body)
    limit = _tokens_limit(body, max_tokens)
    sampling = _sampling(body, defaults.sampling)
    stop = _stop(body.get("stop"), defaults.stop)
    logprobs = _flag(body, "logprobs")
    top = _integer(body, "top_logprobs", 0, 0, ALTERNATIVES)
    if top and not logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise bad_request("stream_options must be an object", "stream_options")
    config = replace(
        defaults, system=system, sampling=sampling, max_tokens=limit, stop=stop, model=model
    )
    return ChatRequest(
        model=model,
        system=system,
        history=history,
        turn=turn,
        config=config,
        stream=_flag(body, "stream"),
        include_usage=bool(options and options.get("include_usage") is True),
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


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """Parameters that would change the answer and that this server cannot honour: said,
    rather than ignored."""
    if body.get("n", 1) != 1:
        raise bad_request("only n = 1 is supported: send one request per choice", "n")
    if body.get("tools"):
        raise bad_request("tools are not supported by this server", "tools")
    if body.get("logit_bias"):
        raise bad_request("logit_bias is not supported by this server", "logit_bias")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, Mapping) or response_format.get("type") != "text"
    ):
        raise bad_request("only response_format {'type': 'text'} is supported", "response_format")


def _tokens_limit(body: Mapping[str, Any], default: int) -> int:
    names = [n for n in ("max_completion_tokens", "max_tokens") if body.get(n) is not None]
    if not names:
        return default
    return _integer(body, names[0], default, 1, None)


def _sampling(body: Mapping[str, Any], base: SamplingParams) -> SamplingParams:
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad_request("seed must be an integer", "seed")
    try:
        return replace(
            base,
            temperature=_number(body, "temperature", base.temperature, 0.0, 2.0),
            top_p=_number(body, "top_p", base.top_p, 0.0, 1.0),
            top_k=_integer(body, "top_k", base.top_k, 0, None),
            min_p=_number(body, "min_p", base.min_p, 0.0, 1.0),
            frequency_penalty=_number(body, "frequency_penalty", base.frequency_penalty, -2, 2),
            presence_penalty=_number(body, "presence_penalty", base.presence_penalty, -2, 2),
            repeat_penalty=_number(body, "repeat_penalty", base.repeat_penalty, 0.01, 10.0),
            seed=base.seed if seed is None else seed % SEED_RANGE,
        )
    except InvalidParamsError as e:
        raise bad_request(str(e)) from None


def _stop(value: object, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise bad_request("stop must be a string or a list of up to 4 strings", "stop")


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", name)
    return value


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number", name)
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}", name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int | None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer", name)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_request(f"{name} must be {bounds}", name)
    return value
