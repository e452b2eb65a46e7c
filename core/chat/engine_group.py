"""Chats on several models side by side, decoded by one thread.

Each model has its own executor and :class:`ChatEngine`: chats on one model share its batch.
A model on RPC servers runs in a child process (:class:`EngineProcess`): a server that goes
away kills that process, not the app, and its chats are told so.
The group's thread steps the engines that have work in turn, one frame each, so a chat on a
slow model holds up chats on a fast one by at most one of the slow model's frames. A named
model is loaded when the first chat on it opens, in a loader thread (the other chats keep
streaming meanwhile), and freed when the last chat on it closes. A model that cannot be
loaded gives its chats a notice; the others go on.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from core.chat.chat_context import ChatContext
from core.chat.chat_model import ModelSpec
from core.chat.commands import (
    ClearChat,
    CloseChat,
    Command,
    ForkChat,
    OpenChat,
    Restore,
    Shutdown,
    StopChat,
    TakeOutChat,
)
from core.chat.config import ChatConfig
from core.chat.endpoint_engine import EndpointEngine
from core.chat.engine import ChatEngine
from core.chat.engine_process import EngineProcess
from core.chat.frames import ChatDelta, EngineEvent, EngineFailure, Frame
from core.chat.model_engine import ModelEngine
from core.chat.model_loader import LoadedModel, engine_of, load_model
from core.chat.model_loading import ModelLoading
from core.chat.notices import Notice, NoticeKind
from core.chat.state import ChatSnapshot
from core.chat.tree import ChatTree
from core.errors import NamedModelError, PanechatError, one_line
from core.executor.thread_priority import lower_this_thread
from core.models.load_progress import ProgressObserver
from core.models.model_path import EMBEDDED_MODEL_NAME

T = TypeVar("T")

#: The default model's name: the one the group is given loaded (``--model``, ``[model]``).
DEFAULT = ""
#: Seconds, at shutdown, for a model in a child process to hand in the frame in flight.
DRAIN_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class SwitchModel:
    """Move a chat to another model: its history is read again there (the chat must be idle).
    A chat whose own model could not load has no history in any model: it is opened on the
    new one with ``config`` and the ``tree`` the caller shows."""

    chat_id: str
    model: str
    config: ChatConfig | None = None
    tree: ChatTree = field(default_factory=ChatTree)


@dataclass(frozen=True, slots=True)
class _ReadChat(Generic[T]):
    """A caller in another thread reads a chat (its tree, its KV) between two frames."""

    chat_id: str
    read: Callable[[ChatEngine | EndpointEngine], T | None]
    answer: Future[T | None]

    def run(self, engine: ModelEngine | None) -> None:
        """In the group's thread: read the chat's engine, or say why it cannot be read."""
        if engine is None:
            self.answer.set_result(None)
        elif isinstance(engine, ChatEngine | EndpointEngine):
            try:
                self.answer.set_result(self.read(engine))
            except Exception as e:  # the caller hears it; the loop goes on
                self.answer.set_exception(e)
        else:
            self.answer.set_exception(
                PanechatError(
                    f"chat {self.chat_id!r} is on a model in a child process: "
                    "follow its frames' tree changes"
                )
            )


GroupCommand = Command | SwitchModel
#: What the group's thread takes in: commands, and whether they came from :meth:`submit`.
_Inbox = tuple[tuple[GroupCommand | _ReadChat[Any], ...], bool]

#: What a loader thread hands the group's thread: a model, or why it could not be loaded.
Loaded = LoadedModel | PanechatError


class ChatEngineGroup:
    """Runs chats on several models, one decode thread for all. The default model (an engine
    the caller owns) is always there; ``specs`` name the others, loaded on demand and owned by
    the group. Offers what the app needs of a decode loop: start, submit, shutdown,
    snapshot; then :meth:`close` frees the models it loaded. ``on_loading`` hears how the
    load of a named model goes, in whole percents (called in the loader thread)."""

    def __init__(
        self,
        engine: ModelEngine,
        emit: Callable[[EngineEvent], object],
        *,
        specs: Mapping[str, ModelSpec] | None = None,
        default_name: str = "",
        nice: int = 0,
        on_loading: Callable[[ModelLoading], object] | None = None,
    ) -> None:
        self.specs = dict(specs or {})
        self._on_loading = on_loading  # told how a model's load goes, from its loader thread
        self.default_name = default_name  # another name of the default model ("embedded")
        self.nice = nice
        self._emit = emit
        self._subscribers: tuple[Callable[[EngineEvent], object], ...] = ()
        self._engines: dict[str, ModelEngine] = {DEFAULT: engine}
        self._models: dict[str, LoadedModel] = {}  # loaded by the group
        self._inbox: queue.SimpleQueue[_Inbox] = queue.SimpleQueue()
        self._unrouted = 0  # submitted commands not yet handed to an engine (under _lock)
        self._loaded: queue.SimpleQueue[tuple[str, Loaded]] = queue.SimpleQueue()
        self._waiting: dict[str, list[Command]] = {}  # for models being loaded
        self._switches: dict[str, SwitchModel] = {}  # chats to move once their model loads
        self._moving: dict[str, SwitchModel] = {}  # chats their engine is closing for a switch
        self._held: dict[str, list[Command]] = {}  # commands for them meanwhile, in order
        self._failed: dict[str, str] = {}  # models that could not be loaded: why
        self._chat_model: dict[str, str] = {}  # which model each chat is on
        self._turn = 0  # round robin over the engines with work
        self._warming = False  # a loaded model is being warmed up, its chats not handed on
        self._lock = threading.Lock()  # guards _engines for submit()'s interrupts
        self._thread = threading.Thread(target=self._run, name="panechat-decode", daemon=True)
        self._running = False

    # -- the caller's side -----------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def subscribe(self, listener: Callable[[EngineEvent], object]) -> None:
        """Hand every event to ``listener`` too, after ``emit`` (in the group's thread: hand
        it on and return). What records the chats (a session store) subscribes itself."""
        self._subscribers = (*self._subscribers, listener)

    def _publish(self, event: EngineEvent) -> None:
        self._emit(event)
        for listener in self._subscribers:
            listener(event)

    def submit(self, *commands: GroupCommand, interrupt: bool = True) -> None:
        """Queue commands (applied together, in order, at the group's next turn). A stop,
        clear, close or switch cancels the decode in flight so that it applies at once; its
        chats decode that step again. ``interrupt=False`` lets the step finish: for closing a
        chat that is idle (a server's finished request), where nothing needs to be quick."""
        stops = (StopChat, ClearChat, CloseChat, SwitchModel)
        if interrupt and any(isinstance(c, stops) for c in commands):
            with self._lock:
                engines = list(self._engines.values())
            for engine in engines:
                engine.interrupt()  # a long prefill must not hold the command up
        with self._lock:
            self._unrouted += 1
        self._inbox.put((commands, True))

    @property
    def busy(self) -> bool:
        """Something is left to do: a command not applied yet, a reply streaming, a model
        loading or a chat moving to another (a script waits for it to be False)."""
        if self._thread.ident is not None and not self._thread.is_alive():
            return False  # the loop has ended: nothing will be done any more
        with self._lock:
            if self._unrouted or self._warming:
                return True
            engines = list(self._engines.values())
        return any(e.busy for e in engines) or bool(self._waiting or self._moving or self._held)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop the thread (a decode in flight is cancelled) and wait up to ``timeout`` s;
        returns whether it stopped (until then no model may be freed)."""
        if self._running:
            with self._lock:
                engines = list(self._engines.values())
            for engine in engines:
                engine.interrupt()
            self._inbox.put(((Shutdown(),), False))
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def tree(self, chat_id: str, timeout: float = 10.0) -> ChatTree | None:
        """A copy of a chat's tree (as :meth:`ChatEngine.tree`), or None for a chat not open.
        From any thread: while the group runs, its thread answers between two frames
        (PanechatError after ``timeout`` s, when the group has stopped, or for a chat on a
        model in a child process, whose tree a caller follows from the frames)."""
        return self._read(chat_id, lambda engine: engine.tree(chat_id), timeout)

    def context(self, chat_id: str, timeout: float = 10.0) -> ChatContext | None:
        """What a chat's KV holds (as :meth:`ChatEngine.context`), read as :meth:`tree` is."""
        return self._read(chat_id, lambda engine: engine.context(chat_id), timeout)

    def _read(
        self, chat_id: str, read: Callable[[ChatEngine | EndpointEngine], T | None], timeout: float
    ) -> T | None:
        request = _ReadChat(chat_id, read, Future())
        if not self._thread.is_alive():
            request.run(self._engines.get(self._chat_model.get(chat_id, DEFAULT)))
            return request.answer.result()
        self._inbox.put(((request,), False))
        try:
            return request.answer.result(timeout)
        except FutureTimeout:
            raise PanechatError(
                "the engine did not answer: it has stopped, or a frame is taking too long"
            ) from None

    @property
    def thread_id(self) -> int | None:
        """The decode thread's native id while it runs (to watch or pin it), else None."""
        return self._thread.native_id if self._thread.is_alive() else None

    def snapshot(self, chat_id: str, path: Path | None) -> ChatSnapshot:
        """As :meth:`ChatEngine.snapshot`, on the chat's model (after :meth:`shutdown`)."""
        if self._thread.is_alive():
            raise PanechatError("snapshot() needs the group stopped first (shutdown())")
        engine = self._engines.get(self._chat_model.get(chat_id, DEFAULT))
        return engine.snapshot(chat_id, path) if engine else ChatSnapshot(None)

    def close(self) -> None:
        """Free the models the group loaded (after a :meth:`shutdown` that stopped), and
        any whose load ended after the group's thread did."""
        for model in self._models.values():
            model.close()
        self._models.clear()
        while not self._loaded.empty():
            _, result = self._loaded.get()
            if not isinstance(result, PanechatError):
                result.close()

    @property
    def tokens_sampled(self) -> int:
        """Reply tokens sampled by the models loaded now (for the bench)."""
        return sum(e.tokens_sampled for e in list(self._engines.values()))

    def loaded_models(self) -> tuple[str, ...]:
        """The models loaded now, the default ("") first (read it between frames)."""
        return tuple(self._engines)

    def model_of(self, chat_id: str) -> str | None:
        """The model a chat is on (None: no such chat); for tests, between frames."""
        return self._chat_model.get(chat_id)

    def engine(self, model: str) -> ModelEngine | None:
        """A loaded model's engine (for tests and diagnostics; read it between frames)."""
        return self._engines.get(model)

    # -- the group's thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            lower_this_thread(self.nice)  # before the first decode starts llama.cpp's threads
            self._engines[DEFAULT].warm_up()
            while self._running:
                self._take_loaded()
                self._take_commands(block=not self._has_work())
                engine = self._next_busy()
                if engine is not None:
                    frame = engine.step()
                    if frame is not None:
                        self._publish(frame)
                    self._moved(engine)
                self._free_unused()
            for engine in list(self._engines.values()):  # a child's last frame, for the record
                last = engine.drain(DRAIN_WAIT)
                if last is not None:
                    self._publish(last)
        except Exception as e:  # keep the app alive and say what broke
            self._publish(EngineFailure(f"the decode loop stopped: {type(e).__name__}: {e}"))
        finally:
            self._running = False
            self._refuse_reads()

    def _refuse_reads(self) -> None:
        """Once the loop has ended, a read still queued is answered: it will not be read."""
        while True:
            try:
                items, _ = self._inbox.get_nowait()
            except queue.Empty:
                return
            for item in items:
                if isinstance(item, _ReadChat):
                    item.answer.set_exception(PanechatError("the decode loop has stopped"))

    def _has_work(self) -> bool:
        return any(e.busy for e in self._engines.values()) or not self._loaded.empty()

    def _next_busy(self) -> ModelEngine | None:
        engines = list(self._engines.values())
        for i in range(len(engines)):
            engine = engines[(self._turn + i) % len(engines)]
            if engine.busy:
                self._turn = (self._turn + i + 1) % len(engines)
                return engine
        return None

    def _take_commands(self, block: bool) -> None:
        while self._running:
            try:
                commands, submitted = self._inbox.get(block=block, timeout=0.25 if block else None)
            except queue.Empty:
                if block and not self._has_work() and self._loaded.empty():
                    for engine in self._engines.values():
                        engine.watch_cpu()
                    continue
                return
            block = False
            for command in commands:
                self._route(command)
            if submitted:
                with self._lock:
                    self._unrouted -= 1

    def _key(self, model: str) -> str:
        return DEFAULT if model == self.default_name else model

    def _route(self, command: GroupCommand | _ReadChat[Any]) -> None:
        match command:
            case _ReadChat(chat_id=chat_id):
                command.run(self._engines.get(self._chat_model.get(chat_id, DEFAULT)))
            case Shutdown():
                self._running = False
            case SwitchModel():
                self._switch(command)
            case OpenChat(chat_id=chat_id, config=config):
                self._chat_model[chat_id] = self._key(config.model)
                self._to_model(self._key(config.model), command)
            case ForkChat(source_id=source, chat_id=chat_id, config=config):
                model = self._chat_model.get(source, self._key(config.model))
                self._chat_model[chat_id] = model
                self._to_model(model, replace(command, config=replace(config, model=model)))
            case CloseChat(chat_id=chat_id):
                self._switches.pop(chat_id, None)
                self._held.pop(chat_id, None)
                closing = self._chat_model.pop(chat_id, None)
                if closing is not None:
                    self._to_model(closing, command)
            case _ if command.chat_id in self._moving:  # to wherever the chat ends up
                self._held.setdefault(command.chat_id, []).append(command)
            case _:  # a chat not open goes to the default model, which says so
                self._to_model(self._chat_model.get(command.chat_id, DEFAULT), command)

    def _to_model(self, model: str, command: Command) -> None:
        engine = self._engines.get(model)
        if engine is not None:
            engine.submit(command)
        elif model in self._failed:
            self._tell(command, Notice(NoticeKind.MODEL_FAILED, self._failed[model]))
        else:
            self._start_loading(model)
            self._waiting[model].append(command)

    def _start_loading(self, model: str) -> None:
        """Load ``model`` in a loader thread, unless it is loading already."""
        if model in self._waiting:
            return
        self._waiting[model] = []
        beside = tuple(self._engines)
        threading.Thread(
            target=self._load, args=(model, beside), name=f"panechat-load-{model}", daemon=True
        ).start()

    def _load(self, model: str, beside: tuple[str, ...]) -> None:
        """In a loader thread: load the model and hand it to the group's thread."""
        spec = self.specs.get(model)
        result: Loaded
        others = tuple(n or "default" for n in beside)
        if spec is None:
            known = ", ".join(repr(n) for n in self.specs) or "none besides the default"
            result = PanechatError(f"no model is named {model!r} (known: {known})")
        else:
            try:
                progress = self._progress(model, spec)
                result = load_model(
                    spec, model=model, nice=self.nice, beside=others, progress=progress
                )
            except PanechatError as e:
                result = e
            except Exception as e:  # any other failure is that model's, not the app's
                result = NamedModelError.could_not(model, "be loaded", one_line(e))
            self._tell_loading(ModelLoading(model, _file_name(spec), 1.0, done=True))
        self._loaded.put((model, result))
        self._inbox.put(((), False))  # wake the group's thread

    def _progress(self, model: str, spec: ModelSpec) -> ProgressObserver:
        """What a load tells: each new whole percent, to ``on_loading``; it stops (the load
        is cancelled) once the group is shutting down."""
        shown = -1
        file = _file_name(spec)

        def observe(fraction: float) -> bool:
            nonlocal shown
            loading = ModelLoading(model, file, fraction)
            if loading.percent > shown:
                shown = loading.percent
                self._tell_loading(loading)
            return self._running

        return observe

    def _tell_loading(self, loading: ModelLoading) -> None:
        if self._on_loading is not None:
            with contextlib.suppress(Exception):  # a view that fails must not lose the model
                self._on_loading(loading)

    def _take_loaded(self) -> None:
        while not self._loaded.empty():
            with self._lock:
                self._warming = True  # busy until its chats are handed to it
            try:
                self._take_one_loaded(*self._loaded.get())
            finally:
                with self._lock:
                    self._warming = False

    def _take_one_loaded(self, name: str, result: Loaded) -> None:
        """A model a loader thread has loaded (or could not): its chats go to it."""
        waiting = self._waiting.pop(name, [])
        switches = [c for c in self._switches.values() if self._key(c.model) == name]
        for switch in switches:
            del self._switches[switch.chat_id]
        if isinstance(result, PanechatError):
            self._failed[name] = str(result)
            for switch in switches:  # the chat stays where it is
                self._notify(switch.chat_id, Notice(NoticeKind.MODEL_FAILED, str(result)))
            told: set[str] = set()
            for command in waiting:  # once for each chat, whatever it had sent
                chat_id = getattr(command, "chat_id", "")
                if chat_id not in told:
                    told.add(chat_id)
                    self._tell(command, Notice(NoticeKind.MODEL_FAILED, str(result)))
            return
        if not self._running:
            result.close()
            return
        engine = engine_of(result, name)
        try:
            engine.warm_up()  # here: this thread does all the decoding
        except Exception as e:
            result.close()
            self._loaded.put((name, NamedModelError.could_not(name, "warm up", one_line(e))))
            self._waiting[name] = waiting
            self._switches.update({s.chat_id: s for s in switches})
            return
        self._models[name] = result
        with self._lock:
            self._engines[name] = engine
        engine.submit(*waiting)
        for switch in switches:
            self._switch(switch)

    def _tell(self, command: Command, notice: Notice) -> None:
        """A notice for the chat a command was for (a model it cannot reach, say)."""
        chat_id = getattr(command, "chat_id", None)
        if not isinstance(chat_id, str) or isinstance(command, CloseChat):
            return
        self._notify(chat_id, notice)

    def _notify(self, chat_id: str, notice: Notice) -> None:
        self._publish(Frame({chat_id: ChatDelta(notice=notice)}))

    def _switch(self, command: SwitchModel) -> None:
        """Move a chat: its engine closes it in turn with its other commands (or says it is
        busy), then :meth:`_moved` opens it on the target, once that model is loaded."""
        chat_id, target = command.chat_id, self._key(command.model)
        current = self._chat_model.get(chat_id)
        if current is None or current == target:
            return
        if target in self._failed:
            self._notify(chat_id, Notice(NoticeKind.MODEL_FAILED, self._failed[target]))
            return
        stopped = self._engines[target].stopped if target in self._engines else None
        if stopped is not None:  # the chat stays where it answers
            self._notify(chat_id, Notice(NoticeKind.MODEL_FAILED, stopped))
            return
        if target not in self._engines:  # moved once the model is there (or told it is not)
            self._start_loading(target)
            self._switches[chat_id] = command  # a later switch of the chat replaces it
            return
        engine = self._engines.get(current)
        if engine is None or engine.stopped is not None:
            self._open_afresh(command, engine)
            return
        self._moving[chat_id] = command
        engine.submit(TakeOutChat(chat_id))

    def _moved(self, engine: ModelEngine) -> None:
        """Open the chats ``engine`` has closed for a switch on their new model."""
        for chat_id, taken in engine.taken_out().items():
            command = self._moving.pop(chat_id, None)
            if command is None:
                continue
            if taken is not None:
                self._open_moved(command, taken.config, taken.tree)
            elif engine.stopped is not None:  # its process ended first
                self._open_afresh(command, engine)
            elif held := self._held.pop(chat_id, []):  # it was busy and stays: so do these
                engine.submit(*held)

    def _open_afresh(self, command: SwitchModel, engine: ModelEngine | None) -> None:
        """Its own model could not load, or its process ended: the model holds nothing of
        the chat, which is opened on the target from what the caller shows."""
        if engine is not None:
            engine.submit(CloseChat(command.chat_id))
        self._open_moved(command, command.config, command.tree)

    def _open_moved(
        self,
        command: SwitchModel,
        config: ChatConfig | None,
        tree: ChatTree,
    ) -> None:
        """Open the chat on its new model, which reads the branch of ``tree`` shown again."""
        if config is None:
            return
        chat_id, target = command.chat_id, self._key(command.model)
        self._chat_model[chat_id] = target
        name = command.model or "the default model"
        delta = ChatDelta(notice=Notice(NoticeKind.MODEL_SWITCHED, name), model=command.model)
        self._publish(Frame({chat_id: delta}, model=target))
        moved = replace(config, model=command.model)
        self._to_model(target, OpenChat(chat_id, moved, Restore(tree)))
        for later in self._held.pop(chat_id, []):
            self._to_model(target, later)

    def _free_unused(self) -> None:
        """Free a loaded model once no chat is on it (the default one stays)."""
        for name in [n for n in self._models if n not in self._chat_model.values()]:
            engine = self._engines[name]
            if engine.busy or engine.chat_count:
                continue
            with self._lock:
                del self._engines[name]
            model = self._models.pop(name)
            if isinstance(model, EngineProcess):  # it may wait on a server: not here
                threading.Thread(target=model.close, name=f"panechat-free-{name}").start()
            else:
                model.close()


def _file_name(spec: ModelSpec) -> str:
    """The GGUF a spec loads, as a user knows it: its file's name."""
    if spec.endpoint is not None:
        return spec.endpoint.base
    return Path(spec.path).name if spec.path else EMBEDDED_MODEL_NAME
