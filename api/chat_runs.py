"""Requests as chats of the one decode loop: each request opens a chat, reads its deltas as
the loop's thread hands them over, and closes it (its KV cells freed) when it ends, fails or
its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from api.chat_request import ChatRequest
from api.errors import ApiError, ErrorType
from api.served_models import ServedModels
from core.chat.commands import CloseChat, OpenChat, Restore, SendTurn
from core.chat.engine_group import ChatEngineGroup
from core.chat.frames import ChatDelta, EngineEvent, EngineFailure, Frame
from core.chat.notices import Notice, NoticeKind
from core.chat.tree import ChatTree

#: Notices that leave the reply going: the request is answered all the same.
HARMLESS = (NoticeKind.TURNS_DROPPED, NoticeKind.STATE_NOT_USED, NoticeKind.OPENING)
#: Seconds a client told the server is full is asked to wait before it tries again.
RETRY_AFTER = 1


class ChatRun:
    """One request's chat: its deltas, in order, until its reply ends."""

    def __init__(self, chat_id: str) -> None:
        self.chat_id = chat_id
        self.inbox: asyncio.Queue[ChatDelta | EngineFailure] = asyncio.Queue()
        self.started = False

    async def deltas(self) -> AsyncIterator[ChatDelta]:
        """The reply's deltas; the last has ``finished``. Raises ApiError when the chat
        cannot answer (the prompt does not fit, the model failed, the loop stopped)."""
        while True:
            event = await self.inbox.get()
            if isinstance(event, EngineFailure):
                raise ApiError(
                    500, f"the engine stopped: {event.error}", kind=ErrorType.SERVER_BUSY
                )
            self.started = self.started or event.started
            notice = event.notice
            if notice is not None and notice.kind not in HARMLESS and not self.started:
                raise refusal(notice)
            yield event
            if event.finished is not None:
                return


def refusal(notice: Notice) -> ApiError:
    """The error a request gets for a notice that stopped its chat before its reply began."""
    if notice.kind is NoticeKind.CONTEXT_FULL:
        return ApiError(
            400,
            "the messages do not fit in the model's context: send fewer or shorter ones",
            "messages",
            "context_length_exceeded",
        )
    if notice.kind is NoticeKind.MODEL_FAILED:
        return ApiError(503, notice.text(), "model", kind=ErrorType.SERVER_BUSY)
    return ApiError(400, notice.text())


class ChatRuns:
    """The server's side of the decode loop. At most ``parallel`` chats decode at once (the
    context's sequences); up to ``queue_limit`` more requests wait for a slot, and any beyond
    get a 503 with ``Retry-After``."""

    def __init__(
        self,
        group: ChatEngineGroup,
        models: ServedModels,
        loop: asyncio.AbstractEventLoop,
        *,
        parallel: int,
        queue_limit: int,
    ) -> None:
        self.group = group
        self.models = models
        self.queue_limit = queue_limit
        self._loop = loop
        self._slots = asyncio.Semaphore(parallel)
        self._waiting = 0
        self._runs: dict[str, ChatRun] = {}
        self._ids = itertools.count(1)
        group.subscribe(self.receive)

    @property
    def open_chats(self) -> int:
        return len(self._runs)

    def receive(self, event: EngineEvent) -> None:
        """In the decode loop's thread: hand the event to the server's event loop."""
        with contextlib.suppress(RuntimeError):  # a closed event loop: the server stops
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: EngineEvent) -> None:
        if isinstance(event, Frame):
            for chat_id, delta in event.deltas.items():
                if chat_id in self._runs:
                    self._runs[chat_id].inbox.put_nowait(delta)
        else:  # the loop stopped: every open request hears why
            for run in self._runs.values():
                run.inbox.put_nowait(event)

    @asynccontextmanager
    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatRun]:
        """Open the request's chat (after waiting for a slot) and close it on the way out,
        however that comes: the reply ended, the client went away, an error."""
        if self._slots.locked() and self._waiting >= self.queue_limit:
            raise ApiError(
                503,
                "the server is busy: every slot is taken and the queue is full; try again",
                kind=ErrorType.SERVER_BUSY,
                retry_after=RETRY_AFTER,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        chat_id = f"api-{next(self._ids)}"
        run = ChatRun(chat_id)
        self._runs[chat_id] = run
        config = replace(request.config, name=chat_id, model=self.models.key(request.model))
        restore = Restore(ChatTree.linear(request.history)) if request.history else None
        try:
            self.group.submit(OpenChat(chat_id, config, restore), SendTurn(chat_id, request.turn))
            yield run
        finally:
            self.group.submit(CloseChat(chat_id))
            del self._runs[chat_id]
            self._slots.release()
