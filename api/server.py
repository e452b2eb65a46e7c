"""The HTTP side of ``panechat api``: OpenAI's chat-completions routes on aiohttp.

aiohttp because it is already here (the browser mode, ``panechat serve``, runs on it), it is
maintained, and it streams server-sent events with a plain ``StreamResponse``: nothing else
is needed for a server whose work is done by the decode loop's thread."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from api.chat_request import read_chat_request
from api.chat_runs import ChatRuns
from api.completion import Completion
from api.errors import ApiError, ErrorType, bad_request
from core.chat.config import ChatConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Says whether a request was answered from its conversation's kept chat ("hit") or not.
CACHE_HEADER = "X-Panechat-Prompt-Cache"
RUNS = web.AppKey("runs", ChatRuns)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What requests are checked against: the key they must bear (None: none), the defaults
    a request's missing sampling comes from, and the reply cap when it gives none."""

    defaults: ChatConfig
    max_tokens: int
    api_key: str | None = None
    max_body: int = 4 * 1024 * 1024  # bytes


SETTINGS = web.AppKey("settings", ServerSettings)


def error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in OpenAI's error shape, and the key checked first."""
    key = request.app[SETTINGS].api_key
    try:
        if key is not None and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                raise ApiError(
                    401,
                    "a valid API key is needed: send 'Authorization: Bearer KEY'",
                    code="invalid_api_key",
                    kind=ErrorType.AUTHENTICATION,
                )
        return await handler(request)
    except ApiError as e:
        return error_response(e)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body
        return error_response(ApiError(413, f"the request body is over {limit} bytes"))
    except web.HTTPNotFound:
        message = f"no route {request.method} {request.path}: see /v1/models, /v1/chat/completions"
        return error_response(ApiError(404, message, kind=ErrorType.NOT_FOUND))
    except web.HTTPMethodNotAllowed:
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.path}"))


async def health(request: web.Request) -> web.Response:
    runs = request.app[RUNS]
    return web.json_response({"status": "ok", "chats": runs.open_chats, "kept": len(runs.cache)})


async def models(request: web.Request) -> web.Response:
    runs = request.app[RUNS]
    created = int(time.time())
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "panechat"}
                for name in runs.models.names
            ],
        }
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    runs, settings = request.app[RUNS], request.app[SETTINGS]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    chat = read_chat_request(body, settings.defaults, runs.models.names, settings.max_tokens)
    completion = Completion(chat)
    async with runs.chat(chat) as run:
        deltas = run.deltas()
        first = await anext(deltas)  # a refusal (the prompt does not fit) is still a 400 here
        cache = {CACHE_HEADER: "hit" if run.cached else "miss"}
        if not chat.stream:
            completion.add(first)
            async for delta in deltas:
                if request.transport is None or request.transport.is_closing():
                    return web.Response(status=499)  # nobody to answer: the chat is closed
                completion.add(delta)
            run.answered(completion.text, completion.prompt_tokens + completion.completion_tokens)
            return web.json_response(completion.whole(), headers=cache)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **cache}
        )
        await response.prepare(request)
        try:
            await _send(response, completion.chunk({"role": "assistant", "content": ""}))
            for chunk in completion.chunks_for(first):
                await _send(response, chunk)
            async for delta in deltas:
                for chunk in completion.chunks_for(delta):
                    await _send(response, chunk)
            if chat.include_usage:
                await _send(response, completion.usage_chunk())
            await response.write(b"data: [DONE]\n\n")
            run.answered(completion.text, completion.prompt_tokens + completion.completion_tokens)
        except ApiError as e:  # after the headers: said in the stream, as OpenAI does
            await _send(response, e.body())
        except ConnectionError:  # the client went away: its chat is closed on the way out
            return response
        await response.write_eof()
        return response


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")


def build_app(
    settings: ServerSettings, start: Callable[[web.Application], Awaitable[None]]
) -> web.Application:
    """The server's routes. ``start`` runs in the server's event loop before the first
    request: it puts the :class:`ChatRuns` under ``RUNS`` (they need that loop)."""
    app = web.Application(middlewares=[openai_errors], client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app.on_startup.append(start)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app
