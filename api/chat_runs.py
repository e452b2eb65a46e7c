"""Requests as chats of the one decode loop: each request opens a chat (or branches the kept
chat of its conversation, see :mod:`api.prompt_cache`), reads its deltas as the loop's thread
hands them over, and closes it (its KV cells freed) when it fails or its client goes away; a
finished one is kept for the conversation's next turn."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from api.chat_request import ChatRequest
from api.errors import ApiError, ErrorType
from api.prompt_cache import KeptChat, PromptCache, comparable
from api.served_models import ServedModels
from core.chat.commands import CloseChat, Command, ForkChat, OpenChat, Restore, SendTurn
from core.chat.engine_group import ChatEngineGroup
from core.chat.frames import ChatDelta, EngineEvent, EngineFailure, Frame
from core.chat.notices import Notice, NoticeKind
from core.chat.tree import ChatTree
from core.text.reply_stream import StopReason

#: Notices that leave the reply going: the request is answered all the same.
HARMLESS = (NoticeKind.TURNS_DROPPED, NoticeKind.STATE_NOT_USED, NoticeKind.OPENING)
#: Notices that end a reply that had begun: the request failed, it was not answered.
FAILURES = (NoticeKind.FAILED, NoticeKind.MODEL_FAILED)
#: Seconds a client told the server is full is asked to wait before it tries again.
RETRY_AFTER = 1


class ChatRun:
    """One request's chat: its deltas, in order, until its reply ends."""

    def __init__(self, chat_id: str, cached: bool) -> None:
        self.chat_id = chat_id
        self.cached = cached  # a branch of the conversation's kept chat
        self.inbox: asyncio.Queue[ChatDelta | EngineFailure] = asyncio.Queue()
        self.started = False
        self.shifted = False  # turns left its KV to make room: it is not kept
        self.ended: StopReason | None = None
        self.answer: str | None = None  # the reply as its client got it, once it ended
        self.branched_from: str | None = None  # the kept chat to close once the branch is made
        self.tokens = 0  # prompt and reply tokens, once it ended
        self.refused = False  # the engine refused it before a reply began: nothing decodes

    def answered(self, text: str, tokens: int) -> None:
        """The handler gave the client the whole reply: the chat may be kept."""
        self.answer, self.tokens = text, tokens

    async def deltas(self) -> AsyncIterator[ChatDelta]:
        """The reply's deltas; the last has ``finished``. Raises ApiError when the chat
        cannot answer (the prompt does not fit, the model failed, the loop stopped)."""
        while True:
            event = await self.inbox.get()
            if isinstance(event, EngineFailure):
                raise stopped(event)
            self.started = self.started or event.started
            notice = event.notice
            self.shifted = self.shifted or (
                notice is not None and notice.kind is NoticeKind.TURNS_DROPPED
            )
            self.ended = event.finished
            if notice is not None and notice.kind not in HARMLESS and not self.started:
                self.refused = True
                raise refusal(notice)
            if notice is not None and notice.kind in FAILURES and event.finished is not None:
                raise ApiError(502, notice.text(), kind=ErrorType.SERVER)  # cut short
            yield event
            if event.finished is not None:
                return


def stopped(failure: EngineFailure) -> ApiError:
    """What every request gets once the decode loop has stopped: the server cannot answer."""
    return ApiError(
        503,
        f"the decode loop stopped ({failure.error}): restart panechat api",
        kind=ErrorType.SERVER,
    )


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
        return ApiError(503, notice.text(), "model", kind=ErrorType.SERVER)
    return ApiError(400, notice.text())


class ChatRuns:
    """The server's side of the decode loop. At most ``parallel`` chats decode at once; up
    to ``queue_limit`` more requests wait for a slot, and any beyond get a 503 with
    ``Retry-After``. Finished chats are kept in ``cache`` while the context's ``sequences``
    leave room for them."""

    def __init__(
        self,
        group: ChatEngineGroup,
        models: ServedModels,
        loop: asyncio.AbstractEventLoop,
        *,
        parallel: int,
        queue_limit: int,
        sequences: int,
        cache: PromptCache,
    ) -> None:
        self.group = group
        self.models = models
        self.queue_limit = queue_limit
        self.sequences = sequences
        self.cache = cache
        self._loop = loop
        self._slots = asyncio.Semaphore(parallel)
        self._waiting = 0
        self.failure: EngineFailure | None = None  # the decode loop stopped: why
        self._runs: dict[str, ChatRun] = {}
        self._ids = itertools.count(1)
        group.subscribe(self.receive)

    @property
    def open_chats(self) -> int:
        """Requests being answered (kept chats not counted)."""
        return len(self._runs)

    def receive(self, event: EngineEvent) -> None:
        """In the decode loop's thread: hand the event to the server's event loop."""
        with contextlib.suppress(RuntimeError):  # a closed event loop: the server stops
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: EngineEvent) -> None:
        if isinstance(event, Frame):
            for chat_id, delta in event.deltas.items():
                run = self._runs.get(chat_id)
                if run is not None:
                    run.inbox.put_nowait(delta)
                    if run.branched_from is not None:  # the branch is made: its source goes
                        self._close(run.branched_from, finished=True)
                        run.branched_from = None
                elif delta.notice is not None and self.cache.drop(chat_id):
                    self._close(chat_id, finished=True)  # its turns were shifted out
        else:  # the loop stopped: every open request hears why, and every later one
            self.failure = event
            for run in self._runs.values():
                run.inbox.put_nowait(event)

    def _sequences_open(self) -> int:
        """Chats holding a sequence: requests', kept ones, and kept ones being branched."""
        branching = sum(1 for run in self._runs.values() if run.branched_from is not None)
        return len(self._runs) + len(self.cache) + branching

    def _close(self, chat_id: str, *, finished: bool) -> None:
        """Close a chat; one that is idle lets the decode in flight finish."""
        self.group.submit(CloseChat(chat_id), interrupt=not finished)

    @asynccontextmanager
    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatRun]:
        """Open the request's chat (after waiting for a slot), and on the way out keep it
        for the conversation's next turn (it ended and its client got it all) or close it
        (an error, the client went away)."""
        if self.failure is not None:
            raise stopped(self.failure)
        if self._slots.locked() and self._waiting >= self.queue_limit:
            raise ApiError(
                503,
                "the server is busy: every slot is taken and the queue is full; try again",
                kind=ErrorType.SERVER,
                retry_after=RETRY_AFTER,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        model = self.models.key(request.model)
        chat_id = f"api-{next(self._ids)}"
        config = replace(request.config, name=chat_id, model=model)
        kept = self.cache.take(model, config.system, comparable(request.history))
        while self._sequences_open() + 1 + (kept is not None) > self.sequences:
            oldest = self.cache.oldest()
            if oldest is None:
                break
            self._close(oldest, finished=True)
        run = ChatRun(chat_id, cached=kept is not None)
        self._runs[chat_id] = run
        opening: tuple[Command, ...]
        if kept is not None:  # branch the kept chat: its cells are shared, not decoded again
            opening = (ForkChat(kept.chat_id, chat_id, config),)
            run.branched_from = kept.chat_id
        else:
            restore = Restore(ChatTree.linear(request.history)) if request.history else None
            opening = (OpenChat(chat_id, config, restore),)
        try:
            self.group.submit(*opening, SendTurn(chat_id, request.turn), interrupt=False)
            yield run
        finally:
            del self._runs[chat_id]
            self._slots.release()
            if run.branched_from is not None:
                self._close(run.branched_from, finished=True)
            self._finish(request, model, run)

    def _finish(self, request: ChatRequest, model: str, run: ChatRun) -> None:
        """Keep a chat whose client got its whole reply, else close it."""
        whole = run.ended in (
            StopReason.END_OF_GENERATION,
            StopReason.STOP_STRING,
            StopReason.MAX_TOKENS,
        )
        if run.answer is None or run.shifted or not whole or not self.cache.max_tokens:
            # A reply or prompt still decoding is cut at once; an idle chat waits its turn.
            self._close(run.chat_id, finished=run.ended is not None or run.refused)
            return
        messages = (*request.history, ("user", request.turn), ("assistant", run.answer))
        kept = KeptChat(run.chat_id, model, request.config.system, comparable(messages), run.tokens)
        for chat_id in self.cache.keep(kept):
            self._close(chat_id, finished=True)
