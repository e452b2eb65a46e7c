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
from typing import Any, Protocol

from aiohttp import web

from api.chat_request import ChatRequest, read_chat_request
from api.chat_runs import ChatRuns
from api.completion import Completion
from api.completion_request import read_completion_request
from api.errors import ApiError, ErrorType, bad_request
from api.text_completion import TextCompletion
from core.chat.config import ChatConfig
from core.chat.frames import ChatDelta

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Says whether a request was answered from its conversation's kept chat ("hit") or not.
CACHE_HEADER = "X-Panechat-Prompt-Cache"
RUNS = web.AppKey("runs", ChatRuns)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What requests are checked against: the key they must bear (None: none), the defaults
    a request's missing sampling and stop strings come from (llama.cpp's own sampler, as
    llama-server's: not the panes' personas), and the reply cap when it gives none."""

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
        message = (
            f"no route {request.method} {request.path}: "
            "see /v1/models, /v1/chat/completions, /v1/completions"
        )
        return error_response(ApiError(404, message, kind=ErrorType.NOT_FOUND))
    except web.HTTPMethodNotAllowed:
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.path}"))


async def health(request: web.Request) -> web.Response:
    runs = request.app[RUNS]
    if runs.failure is not None:
        return web.json_response({"status": "error", "error": runs.failure.error}, status=503)
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


class ReplyFormat(Protocol):
    """How a reply is written: a chat completion, or a raw prompt's text completion."""

    def add(self, delta: ChatDelta) -> None: ...
    def whole(self) -> dict[str, Any]: ...
    def opening(self) -> list[dict[str, Any]]: ...
    def chunks_for(self, delta: ChatDelta) -> list[dict[str, Any]]: ...
    def usage_chunk(self) -> dict[str, Any]: ...


async def body_of(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    runs, settings = request.app[RUNS], request.app[SETTINGS]
    body = await body_of(request)
    chat = read_chat_request(body, settings.defaults, runs.models.names, settings.max_tokens)
    completion = Completion(chat)
    return await respond(request, chat, completion, completion)


async def completions(request: web.Request) -> web.StreamResponse:
    """A raw prompt, continued (not kept for a next turn: it has none)."""
    runs, settings = request.app[RUNS], request.app[SETTINGS]
    body = await body_of(request)
    chat = read_completion_request(body, settings.defaults, runs.models.names)
    return await respond(request, chat, TextCompletion(Completion(chat)), None)


async def respond(
    request: web.Request, chat: ChatRequest, reply: ReplyFormat, kept: Completion | None
) -> web.StreamResponse:
    """Answer ``chat`` whole or streamed as ``reply`` writes it; ``kept``: the reply as the
    conversation's next turn will send it back (the chat is then kept for it)."""
    runs = request.app[RUNS]
    async with runs.chat(chat) as run:
        deltas = run.deltas()
        first = await anext(deltas)  # a refusal (the prompt does not fit) is still a 400 here
        cache = {CACHE_HEADER: "hit" if run.cached else "miss"}
        if not chat.stream:
            reply.add(first)
            async for delta in deltas:
                if request.transport is None or request.transport.is_closing():
                    return web.Response(status=499)  # nobody to answer: the chat is closed
                reply.add(delta)
            if kept is not None:
                run.answered(kept.text, kept.total_tokens)
            return web.json_response(reply.whole(), headers=cache)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **cache}
        )
        await response.prepare(request)
        try:
            for chunk in [*reply.opening(), *reply.chunks_for(first)]:
                await _send(response, chunk)
            async for delta in deltas:
                for chunk in reply.chunks_for(delta):
                    await _send(response, chunk)
            if chat.include_usage:
                await _send(response, reply.usage_chunk())
            await response.write(b"data: [DONE]\n\n")
            if kept is not None:
                run.answered(kept.text, kept.total_tokens)
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
    app.router.add_post("/v1/completions", completions)
    return app
