"""A ``POST /v1/completions`` body (a raw prompt, OpenAI's older API) read as a chat of one
turn that has no chat format: the prompt is decoded as it is, and the reply continues it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from api.chat_request import ChatRequest
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

#: OpenAI's reply cap for this endpoint when a request gives none.
DEFAULT_MAX_TOKENS = 16


def read_completion_request(
    body: object, defaults: ChatConfig, models: Sequence[str]
) -> ChatRequest:
    """``body`` as a one-turn raw chat, or an ApiError (400) naming the parameter at fault.
    ``logprobs`` here is a count (0 to 5: the chosen token's, and that many likeliest others)."""
    fields = json_object(body)
    model = model_name(fields, models)
    prompt = fields.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("prompt must be one non-empty string: one prompt per request", "prompt")
    refuse_unsupported(fields)
    if fields.get("echo"):
        raise bad_request("echo is not supported: the prompt is yours already", "echo")
    if fields.get("suffix"):
        raise bad_request("suffix (fill in the middle) is not supported", "suffix")
    if fields.get("best_of", 1) != 1:
        raise bad_request("only best_of = 1 is supported", "best_of")
    logprobs = fields.get("logprobs")
    top = 0 if logprobs is None else integer(fields, "logprobs", 0, 0, ALTERNATIVES)
    config = replace(
        defaults,
        system="",
        sampling=sampling_params(fields, defaults.sampling),
        max_tokens=tokens_limit(fields, DEFAULT_MAX_TOKENS),
        stop=stop_strings(fields.get("stop"), ()),
        model=model,
        raw_prompt=True,
    )
    return ChatRequest(
        model=model,
        system="",
        history=(),
        turn=prompt,
        config=config,
        stream=flag(fields, "stream"),
        include_usage=include_usage(fields),
        logprobs=logprobs is not None,
        top_logprobs=top,
    )
