"""What ``POST /v1/chat/completions`` accepts and refuses, read without a model: the chat a
body opens, the sampling it asks for, and the 400 (with the parameter named) for the rest."""

from __future__ import annotations

from typing import Any

import pytest

from api.chat_request import read_chat_request
from api.errors import ApiError
from core.chat.config import ChatConfig
from core.sampling.sampling import SamplingParams

DEFAULTS = ChatConfig("defaults", "", SamplingParams(temperature=0.7, top_k=40), 200, ("\n\n",))
MODELS = ("embedded", "other")


def read(**body: Any) -> Any:
    body.setdefault("model", "embedded")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return read_chat_request(body, DEFAULTS, MODELS, 8192)


def refused(**body: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        read(**body)
    assert caught.value.status == 400
    return caught.value


def test_a_conversation_becomes_system_prompt_earlier_turns_and_the_turn_to_answer() -> None:
    request = read(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Salut"}]},
            {"role": "user", "content": "Capital of Italy?"},
        ]
    )
    assert request.system == "Be brief.\n\nUse French."
    assert request.history == (("user", "Hi"), ("assistant", "Salut"))
    assert request.turn == "Capital of Italy?"
    assert request.config.system == "Be brief.\n\nUse French."


def test_sampling_not_given_is_the_configs_and_given_is_the_requests() -> None:
    plain = read()
    assert plain.config.sampling == DEFAULTS.sampling
    assert plain.config.stop == ("\n\n",) and plain.config.max_tokens == 8192
    asked = read(
        temperature=0, top_p=0.5, top_k=7, min_p=0.1, seed=2**40 + 3, max_tokens=12, stop="END"
    )
    sampling = asked.config.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p) == (
        0.0,
        0.5,
        7,
        0.1,
    )
    assert sampling.seed == 3  # any integer seed, reduced to llama.cpp's 32 bits
    assert asked.config.max_tokens == 12 and asked.config.stop == ("END",)
    assert read(max_completion_tokens=5, max_tokens=9).config.max_tokens == 5
    assert read(repeat_penalty=1.3).config.sampling.repeat_penalty == 1.3  # llama.cpp's extension
    assert read(stop=[]).config.stop == ()


def test_streaming_usage_and_logprobs_flags() -> None:
    request = read(
        stream=True, stream_options={"include_usage": True}, logprobs=True, top_logprobs=3
    )
    assert (request.stream, request.include_usage, request.logprobs, request.top_logprobs) == (
        True,
        True,
        True,
        3,
    )


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"model": "gpt-4"}, "model", "unknown model 'gpt-4': this server has embedded, other"),
        ({"model": None}, "model", "'model' is required"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages", "last message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "not supported"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
            "only text parts",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "system", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "messages[1]",
            "before the first user message",
        ),
        ({"temperature": 3}, "temperature", "between 0 and 2"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"top_p": 0}, "top_p", "top_p must be in (0, 1]"),
        ({"top_k": -1}, "top_k", "at least 0"),
        ({"repeat_penalty": 0}, "repeat_penalty", "between 0.01 and 10"),
        ({"max_tokens": 0}, "max_tokens", "at least 1"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"n": 2}, "n", "only n = 1"),
        ({"stop": [1]}, "stop", "up to 4 strings"),
        ({"logprobs": "yes"}, "logprobs", "true or false"),
        ({"top_logprobs": 2}, "top_logprobs", "needs logprobs"),
        ({"logprobs": True, "top_logprobs": 6}, "top_logprobs", "between 0 and 5"),
        ({"tools": [{"type": "function"}]}, "tools", "not supported"),
        ({"response_format": {"type": "json_object"}}, "response_format", "only"),
    ],
)
def test_a_bad_parameter_is_a_400_that_names_it(
    body: dict[str, Any], param: str | None, says: str
) -> None:
    error = refused(**body)
    assert says in error.message and error.param == param
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ApiError, match="JSON object"):
        read_chat_request([1, 2], DEFAULTS, MODELS, 10)
