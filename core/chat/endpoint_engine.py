"""The chats on a model served by an OpenAI-compatible endpoint (another ``panechat api``,
llama-server, a hosted API): a :class:`~core.chat.model_engine.ModelEngine` whose frames come
from each reply's stream instead of a local batch.

A chat is its tree, as on a local model; each reply is one streamed request carrying the
branch shown (the endpoint keeps nothing between requests). The streams run as tasks of one
asyncio loop in a thread of the engine's own; the thread that steps the engine (the group's)
takes what they received at each step and turns it into frames. Stopping a reply cancels its
request."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from core.chat.commands import (
    BranchAtToken,
    ClearChat,
    CloseChat,
    Command,
    EditMessage,
    ForkChat,
    OpenChat,
    Regenerate,
    SendTurn,
    ShowMessage,
    Shutdown,
    StopChat,
    TakeOutChat,
)
from core.chat.config import ChatConfig
from core.chat.endpoint_spec import EndpointSpec
from core.chat.engine import TakenOut
from core.chat.frames import ChatDelta, Frame, FrameStats
from core.chat.notices import Notice, NoticeKind
from core.chat.state import ChatSnapshot
from core.chat.tree import ChatTree, Role
from core.errors import NamedModelError, PanechatError, one_line
from core.sampling.sampling import RANDOM_SEED
from core.text.reasoning import split_reply
from core.text.reply_stream import StopReason

#: Seconds a step waits for a stream's next piece before it lets the group step others.
POLL = 0.005  # as a model in a child process waits for its frame
#: Seconds to reach the endpoint when the model is loaded (its /models).
CONNECT_TIMEOUT = 10.0
FINISH_REASONS = {"length": StopReason.MAX_TOKENS}


@dataclass(frozen=True, slots=True)
class _Piece:
    """Text a reply's stream brought: its answer's and its reasoning's."""

    chat_id: str
    reply: int
    answer: str = ""
    reasoning: str = ""


@dataclass(frozen=True, slots=True)
class _Ended:
    chat_id: str
    reply: int
    stop: StopReason
    tokens: int
    error: str = ""  # why the request failed ("" it did not)


@dataclass(slots=True)
class _Chat:
    config: ChatConfig
    tree: ChatTree
    reply: int | None = None  # the reply streaming, by id
    answer: str = ""
    reasoning: str = ""
    pieces: int = 0  # stream events with text: the reply's tokens, about
    started_at: float = 0.0
    turns: list[int] = field(default_factory=list)  # user messages sent while a reply streamed
    request: Future[None] | None = None

    last_rate: float = 0.0  # the last reply's, once it ended

    def text(self) -> str:
        """The reply's text as a tree keeps it: its reasoning between markers, then its answer."""
        return f"<think>{self.reasoning}</think>{self.answer}" if self.reasoning else self.answer

    @property
    def rate(self) -> float:
        """Pieces a second of the reply streaming (the stream's events: tokens, about)."""
        if self.reply is None:
            return self.last_rate
        elapsed = time.monotonic() - self.started_at
        return self.pieces / elapsed if elapsed > 0 else 0.0


def check_endpoint(spec: EndpointSpec, name: str) -> None:
    """Reach the endpoint's ``/models`` once, so that a wrong address, a server that is not
    running or a refused key is one line when the model is loaded, not a failed reply later."""
    try:
        request = urllib.request.Request(f"{spec.base}/models", headers=spec.headers())
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT):
            pass
    except urllib.error.HTTPError as e:
        raise NamedModelError.could_not(
            name, "be reached", f"{spec.base} answered {e.code} {e.reason}"
        ) from None
    except OSError as e:  # URLError (refused, no such host) or a timeout
        reason = getattr(e, "reason", e)
        raise NamedModelError.could_not(
            name, "be reached", f"{spec.base}: {reason} — is the server running?"
        ) from None
    except PanechatError as e:
        raise NamedModelError.could_not(name, "be reached", str(e)) from None


class EndpointEngine:
    """Chats on one model behind an OpenAI-compatible endpoint. Owns a thread running the
    streams' event loop; :meth:`close` ends it."""

    def __init__(self, spec: EndpointSpec, *, model: str = "") -> None:
        self.spec = spec
        self._model = model
        self._chats: dict[str, _Chat] = {}
        self._queued: list[Command] = []
        self._events: queue.SimpleQueue[_Piece | _Ended] = queue.SimpleQueue()
        self._taken: dict[str, TakenOut | None] = {}
        self._forks: list[ForkChat] = []  # waiting for their source's reply to end
        self._early: dict[str, list[str]] = {}  # turns sent to a fork not made yet
        self._deferred: list[Command] = []  # branch moves waiting for the reply to end
        self.tokens_sampled = 0
        self.frames = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"panechat-endpoint-{model}", daemon=True
        )
        self._thread.start()

    # -- ModelEngine ------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self._model

    @property
    def busy(self) -> bool:
        chats = list(self._chats.values())  # read from other threads too
        return bool(self._queued or self._forks or self._deferred) or any(
            c.reply is not None or c.turns for c in chats
        )

    @property
    def chat_count(self) -> int:
        return len(self._chats)

    @property
    def stopped(self) -> str | None:
        return None

    def submit(self, *commands: Command) -> None:
        self._queued.extend(commands)

    def interrupt(self) -> None:
        """Nothing to cut short here: a step waits at most :data:`POLL`."""

    def warm_up(self) -> None:
        """Nothing to warm up: the endpoint's model is loaded there."""

    def watch_cpu(self) -> None:
        """No local decode threads to adapt."""

    def drain(self, timeout: float) -> Frame | None:
        return None

    def taken_out(self) -> dict[str, TakenOut | None]:
        taken, self._taken = self._taken, {}
        return taken

    def snapshot(self, chat_id: str, path: Path | None) -> ChatSnapshot:
        """No KV cells to save: the chat is read again by the endpoint on resume. A reply in
        flight ends here, its text so far kept."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return ChatSnapshot(None)
        if chat.reply is not None:
            self._end(chat, ChatDelta(), StopReason.CANCELLED)
        return ChatSnapshot(None, chat.tree.take_change())

    def tree(self, chat_id: str) -> ChatTree | None:
        chat = self._chats.get(chat_id)
        return chat.tree.copy() if chat is not None else None

    def context(self, chat_id: str) -> None:
        """No KV here: the endpoint reads the branch again for each reply."""
        return None

    def step(self) -> Frame | None:
        deltas: dict[str, ChatDelta] = {}
        commands, self._queued = self._queued, []
        deferred, self._deferred = self._deferred, []
        for command in (*deferred, *commands):
            self._apply(command, deltas)
        self._fork_ready(deltas)
        streaming = any(c.reply is not None for c in self._chats.values())
        wait = POLL if streaming and not deltas else 0.0
        self._take_events(deltas, wait)
        for chat_id, chat in self._chats.items():
            ended = chat_id in deltas and deltas[chat_id].finished is not None
            if chat.reply is None and chat.turns and not ended:  # one reply ends per frame
                user = chat.turns.pop(0)
                if user in chat.tree:
                    self._open_reply(chat_id, chat, user, self._delta(deltas, chat_id))
            change = chat.tree.take_change(chat.reply)
            if change is not None:
                self._delta(deltas, chat_id).tree_changes.append(change)
            if chat.reply is not None or chat_id in deltas:
                delta = self._delta(deltas, chat_id)
                delta.generating = chat.reply is not None or bool(chat.turns)
                delta.tokens_per_second = chat.rate
        if not deltas:
            return None
        self.frames += 1
        replying = [c for c in self._chats.values() if c.reply is not None]
        rate = sum(c.rate for c in replying)
        stats = FrameStats(frame=self.frames, generating=len(replying), tokens_per_second=rate)
        return Frame(deltas, stats, self._model)

    def close(self) -> None:
        """Cancel every request and end the streams' thread."""
        for chat in self._chats.values():
            if chat.request is not None:
                chat.request.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    # -- commands ---------------------------------------------------------------------------

    @staticmethod
    def _delta(deltas: dict[str, ChatDelta], chat_id: str) -> ChatDelta:
        return deltas.setdefault(chat_id, ChatDelta())

    def _apply(self, command: Command, deltas: dict[str, ChatDelta]) -> None:
        if isinstance(command, Shutdown):
            return
        if isinstance(command, OpenChat):
            tree = command.restore.tree.copy() if command.restore is not None else ChatTree()
            self._chats[command.chat_id] = _Chat(command.config, tree)
            return
        if isinstance(command, ForkChat):
            self._forks.append(command)
            self._fork_ready(deltas)  # at once when its source is idle, as a local fork
            return
        chat = self._chats.get(command.chat_id)
        delta = self._delta(deltas, command.chat_id)
        if chat is None:
            if any(f.chat_id == command.chat_id for f in self._forks):  # its source streams
                if isinstance(command, SendTurn):
                    self._early.setdefault(command.chat_id, []).append(command.text)
                else:
                    self._deferred.append(command)
            elif not isinstance(command, CloseChat | StopChat | ClearChat):
                delta.notice = Notice(NoticeKind.NOT_OPEN)
            return
        match command:
            case SendTurn(text=text):
                self._send(command.chat_id, chat, text, delta)
            case StopChat():
                chat.turns.clear()
                if chat.reply is not None:
                    self._end(chat, delta, StopReason.CANCELLED)
            case ClearChat():
                chat.turns.clear()
                if chat.reply is not None:
                    self._end(chat, delta, StopReason.CANCELLED)
                chat.tree = ChatTree()
            case CloseChat():
                if chat.reply is not None:
                    self._end(chat, delta, StopReason.CANCELLED)
                del self._chats[command.chat_id]
            case TakeOutChat():
                if chat.reply is not None:
                    delta.notice = Notice(NoticeKind.BUSY, "switching models")
                    self._taken[command.chat_id] = None
                    return
                self._taken[command.chat_id] = TakenOut(chat.config, chat.tree.copy())
                del self._chats[command.chat_id]
            case EditMessage() | ShowMessage() if chat.reply is not None or chat.turns:
                self._deferred.append(command)  # the view shows it already: once idle
            case Regenerate() if chat.reply is not None:
                delta.notice = Notice(NoticeKind.BUSY, "regenerating")
            case Regenerate():
                self._regenerate(command.chat_id, chat, deltas)
            case EditMessage(message_id=message_id, text=text):
                if message_id in chat.tree and chat.tree[message_id].role is Role.USER:
                    parent = chat.tree[message_id].parent  # None: the chat's first turn
                    user = chat.tree.add(parent, Role.USER, text)
                    self._open_reply(command.chat_id, chat, user.id, delta)
            case ShowMessage(message_id=message_id):
                if message_id in chat.tree:
                    chat.tree.show(message_id)
            case BranchAtToken():
                delta.notice = Notice(
                    NoticeKind.FAILED,
                    "a reply from an endpoint cannot be branched at a token: "
                    "its tokens are not known here",
                )

    def _send(self, chat_id: str, chat: _Chat, text: str, delta: ChatDelta) -> None:
        """A user turn after the branch's last message: in the tree at once, answered now,
        or once the reply in flight (or one ending in this frame) is done."""
        user = chat.tree.add(chat.tree.head, Role.USER, text)
        if chat.reply is not None or chat.turns or delta.finished is not None:
            chat.turns.append(user.id)
        else:
            self._open_reply(chat_id, chat, user.id, delta)

    def _fork_ready(self, deltas: dict[str, ChatDelta]) -> None:
        """Forks whose source is idle: a copy of its branch shown, with its own settings, and
        the turns sent to it meanwhile."""
        waiting, self._forks = self._forks, []
        for fork in waiting:
            source = self._chats.get(fork.source_id)
            if source is None:
                self._delta(deltas, fork.chat_id).notice = Notice(NoticeKind.BRANCH_SOURCE_CLOSED)
                self._early.pop(fork.chat_id, None)
            elif source.reply is not None or source.turns:
                self._forks.append(fork)
            else:
                chat = _Chat(fork.config, ChatTree.along(source.tree.path()))
                self._chats[fork.chat_id] = chat
                for text in self._early.pop(fork.chat_id, []):
                    self._send(fork.chat_id, chat, text, self._delta(deltas, fork.chat_id))

    def _regenerate(self, chat_id: str, chat: _Chat, deltas: dict[str, ChatDelta]) -> None:
        """Another version of the last reply: a new sibling after the same user turn."""
        path = chat.tree.path()
        if not path or path[-1].role is not Role.ASSISTANT or path[-1].parent is None:
            self._delta(deltas, chat_id).notice = Notice(NoticeKind.NOTHING_TO_REGENERATE)
            return
        delta = self._delta(deltas, chat_id)
        delta.replaces_last = True
        self._open_reply(chat_id, chat, path[-1].parent, delta)

    def _open_reply(self, chat_id: str, chat: _Chat, user: int, delta: ChatDelta) -> None:
        """The reply to user message ``user`` begins; a turn queued after that message now
        follows the reply (as in :class:`~core.chat.engine.ChatEngine`)."""
        reply = chat.tree.add(user, Role.ASSISTANT)
        reply.model = self._model
        following = chat.turns[0] if chat.turns else None
        if following is not None and chat.tree[following].parent == user:
            chat.tree.move(following, reply.id)
            chat.tree.show(reply.id)  # the path goes on to the last turn queued
        chat.reply, chat.answer, chat.reasoning, chat.pieces = reply.id, "", "", 0
        chat.started_at = time.monotonic()
        delta.started, delta.message_id = True, reply.id
        body = self._body(chat, user)
        chat.request = asyncio.run_coroutine_threadsafe(
            self._stream(chat_id, reply.id, body), self._loop
        )

    def _body(self, chat: _Chat, user: int) -> dict[str, Any]:
        """The request for the reply to user message ``user``: the branch up to it, and the
        chat's settings in OpenAI's terms (only those every such endpoint takes)."""
        messages = [{"role": "system", "content": chat.config.system}] if chat.config.system else []
        for role, text in chat.tree.messages(user):
            answer = split_reply(text).answer if role == Role.ASSISTANT.value else text
            messages.append({"role": role, "content": answer})
        sampling = chat.config.sampling
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            "stream": True,
            "max_tokens": chat.config.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if chat.config.stop:
            body["stop"] = list(chat.config.stop[:4])
        if sampling.seed != RANDOM_SEED:
            body["seed"] = sampling.seed
        if sampling.frequency_penalty:
            body["frequency_penalty"] = sampling.frequency_penalty
        if sampling.presence_penalty:
            body["presence_penalty"] = sampling.presence_penalty
        return body

    # -- streams ----------------------------------------------------------------------------

    async def _stream(self, chat_id: str, reply: int, body: dict[str, Any]) -> None:
        """In the streams' thread: one reply's request, its pieces put on the queue as they
        come, then how it ended."""
        stop, error = StopReason.END_OF_GENERATION, ""
        tokens = 0
        try:
            headers = self.spec.headers()
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    f"{self.spec.base}/chat/completions", json=body, headers=headers
                ) as response,
            ):
                if response.status != 200:
                    error = f"{response.status}: {_error_text(await response.text())}"
                else:
                    async for raw in response.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:") or line == "data: [DONE]":
                            continue
                        event = json.loads(line[5:])
                        if not isinstance(event, dict):
                            continue
                        if "error" in event:
                            error = _error_text(json.dumps(event))
                            break
                        choice = (event.get("choices") or [{}])[0]
                        part = choice.get("delta") or {}
                        answer = part.get("content") or ""
                        thought = part.get("reasoning_content") or ""
                        if answer or thought:
                            tokens += 1
                            self._events.put(_Piece(chat_id, reply, answer, thought))
                        if choice.get("finish_reason"):
                            stop = FINISH_REASONS.get(choice["finish_reason"], stop)
        except asyncio.CancelledError:
            return  # stopped here: the step that stopped it has ended the reply
        except Exception as e:  # whatever the endpoint sent: the reply ends, with why
            error = one_line(e) or type(e).__name__
        self._events.put(
            _Ended(chat_id, reply, StopReason.CANCELLED if error else stop, tokens, error)
        )

    def _take_events(self, deltas: dict[str, ChatDelta], wait: float) -> None:
        try:
            event = self._events.get(timeout=wait) if wait else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            chat = self._chats.get(event.chat_id)
            if chat is not None and chat.reply == event.reply:  # else: stopped, or gone
                delta = self._delta(deltas, event.chat_id)
                delta.message_id = event.reply
                if isinstance(event, _Piece):
                    chat.answer += event.answer
                    chat.reasoning += event.reasoning
                    chat.pieces += 1
                    self.tokens_sampled += 1
                    delta.text += event.answer
                    delta.reasoning += event.reasoning
                    chat.tree.set_text(event.reply, chat.text())
                else:
                    if event.error:
                        delta.notice = Notice(
                            NoticeKind.FAILED, f"{self.spec.base} refused the reply: {event.error}"
                        )
                    self._end(chat, delta, event.stop, event.tokens)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _end(self, chat: _Chat, delta: ChatDelta, stop: StopReason, tokens: int = -1) -> None:
        """End the chat's reply: its text kept, why it ended; its request cancelled."""
        chat.last_rate = chat.rate
        reply, chat.reply = chat.reply, None
        if chat.request is not None:
            chat.request.cancel()
            chat.request = None
        if reply is None:
            return
        chat.tree.finish(reply, chat.text(), stop)
        delta.message_id = reply
        delta.finished = stop
        delta.reply_tokens = chat.pieces if tokens < 0 else tokens


def _error_text(body: str) -> str:
    """An error body's message (OpenAI's shape), else the body, on one line."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body
    return " ".join(str(message).split())[:300]
