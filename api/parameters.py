"""Request parameters both completion endpoints take, checked: a 400 that names the parameter
at fault (:class:`ApiError`), or the value in panechat's terms."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from api.errors import ApiError, bad_request
from core.errors import InvalidParamsError
from core.sampling.sampling import SamplingParams

SEED_RANGE = 2**32


def json_object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    return body


def model_name(body: Mapping[str, Any], models: Sequence[str]) -> str:
    """The request's ``model``: one this server has (400 ``model_not_found`` otherwise)."""
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
    return model


def refuse_unsupported(body: Mapping[str, Any]) -> None:
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


def tokens_limit(body: Mapping[str, Any], default: int) -> int:
    names = [n for n in ("max_completion_tokens", "max_tokens") if body.get(n) is not None]
    if not names:
        return default
    return integer(body, names[0], default, 1, None)


def sampling_params(body: Mapping[str, Any], base: SamplingParams) -> SamplingParams:
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad_request("seed must be an integer", "seed")
    try:
        return replace(
            base,
            temperature=number(body, "temperature", base.temperature, 0.0, 2.0),
            top_p=number(body, "top_p", base.top_p, 0.0, 1.0),
            top_k=integer(body, "top_k", base.top_k, 0, None),
            min_p=number(body, "min_p", base.min_p, 0.0, 1.0),
            frequency_penalty=number(body, "frequency_penalty", base.frequency_penalty, -2, 2),
            presence_penalty=number(body, "presence_penalty", base.presence_penalty, -2, 2),
            repeat_penalty=number(body, "repeat_penalty", base.repeat_penalty, 0.01, 10.0),
            seed=base.seed if seed is None else seed % SEED_RANGE,
        )
    except InvalidParamsError as e:  # "top_p must be in (0, 1]": the first word names it
        raise bad_request(str(e), str(e).split()[0]) from None


def include_usage(body: Mapping[str, Any]) -> bool:
    """``stream_options.include_usage``: a last chunk with the counts."""
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise bad_request("stream_options must be an object", "stream_options")
    return bool(options and options.get("include_usage") is True)


def stop_strings(value: object, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise bad_request("stop must be a string or a list of up to 4 strings", "stop")


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", name)
    return value


def number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number", name)
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}", name)
    return float(value)


def integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int | None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer", name)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_request(f"{name} must be {bounds}", name)
    return value
