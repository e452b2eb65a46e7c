"""A model's chat engine in a child process, for models whose weights live on RPC servers.

llama.cpp's RPC client aborts the process it runs in when a server goes away mid-decode
(``GGML_ABORT("Remote RPC server crashed or returned malformed response")``), so such a model
must not run in the app's process: here, only the child dies, and its chats get a notice and
a stopped reply (the text so far kept) while the other models' chats carry on.

The parent never writes while the child may be writing: each frame is one request (the
commands queued since the last one, then a step) and one reply. Interrupts travel on a second
pipe the child always reads. :meth:`EngineProcess.step` does not wait for the child's frame,
so the group's other models decode meanwhile, and a child that hangs (a server that stopped
answering without closing its socket) hangs only its own chats. A command for a child whose
step is in flight interrupts that step (it goes in at once); a child that does not answer for
:data:`STOP_GRACE` seconds after that is taken for hung and killed, and its chats are told.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from core.chat.chat_model import ChatModel, ModelSpec
from core.chat.commands import (
    CloseChat,
    Command,
    EditMessage,
    ForkChat,
    OpenChat,
    SendTurn,
    StopChat,
    TakeOutChat,
)
from core.chat.engine import ChatEngine, TakenOut
from core.chat.frames import ChatDelta, Frame
from core.chat.notices import Notice, NoticeKind
from core.chat.state import ChatSnapshot
from core.chat.tree import ChatTree, Role
from core.errors import (
    ModelLoadCancelledError,
    ModelLoadError,
    NamedModelError,
    PanechatError,
    one_line,
)
from core.executor.thread_priority import lower_this_thread
from core.models.load_progress import ProgressObserver
from core.native.amx_trial import killing_signal
from core.text.reply_stream import StopReason

#: How long step() waits for the child's frame before it lets the group step other models.
POLL = 0.005
#: How the default model's chats come back once its child died (``start``'s default).
RESTART_HINT = "restart to go on with these chats"
#: Seconds an interrupted step may take to come back before the child is taken for hung.
STOP_GRACE = 30.0
#: Seconds to wait for the child at quit (a frame to finish, a snapshot to be written).
QUIT_WAIT = 10.0
#: While idle, the child re-measures the machine's load this often (AdaptiveThreads).
IDLE_WATCH = 0.25


# -- the messages between the two processes ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    chat_id: str
    path: Path | None


@dataclass(frozen=True, slots=True)
class _Close:
    pass


@dataclass(frozen=True, slots=True)
class _Loaded:
    display_name: str
    offloaded: bool  # some weights went to a device (a GPU or an RPC server)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str
    load_error: NamedModelError | None = None  # the load's own error, raised in the parent


@dataclass(frozen=True, slots=True)
class _Progress:
    """How far the child's load has got (sent at each new whole percent, before _Loaded)."""

    fraction: float


@dataclass(frozen=True, slots=True)
class _Stepped:
    frame: Frame | None
    busy: bool
    taken: dict[str, TakenOut | None]
    chat_count: int
    tokens_sampled: int


# -- the parent's side ------------------------------------------------------------------------


class EngineProcess:
    """A :class:`~core.chat.engine.ChatEngine` in a child process, stepped like one (see
    :class:`~core.chat.model_engine.ModelEngine`). Make it with :meth:`start`."""

    def __init__(
        self,
        model: str,
        spec: ModelSpec,
        loaded: _Loaded,
        process: BaseProcess,
        requests: Connection,
        interrupts: Connection,
        log: Path,
        restart_hint: str,
    ) -> None:
        self.model = model
        self._restart_hint = restart_hint
        self.spec = spec
        self.display_name = loaded.display_name
        self.offloaded = loaded.offloaded
        self._process = process
        self._requests = requests  # steps, snapshots and closes; one reply each
        self._interrupts = interrupts
        self._log = log  # the child's native output
        self._queued: list[Command] = []  # sent with the next step
        self._in_flight = False  # a step sent, its reply not taken yet
        self._child_busy = False
        self._chat_count = 0
        self._tokens_sampled = 0
        self._taken: dict[str, TakenOut | None] = {}
        self._chats: set[str] = set()  # to tell, should the child die
        self._streaming: set[str] = set()  # chats with a reply in flight, as the frames said
        # Each chat's tree as the frames told it, to keep a turn the child never took should
        # it die (the turn goes in the tree, so the pane keeps it and the session saves it).
        self._trees: dict[str, ChatTree] = {}
        self._stopped: str | None = None
        self._notices: dict[str, ChatDelta] = {}  # for chats of a child that is gone
        self._sent: tuple[Command, ...] = ()  # the commands of the step in flight
        self._interrupted_at: float | None = None  # the first stop since the last reply
        self._signalled_at = 0.0  # when the child was last told to cancel
        self._interrupt_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        spec: ModelSpec,
        *,
        model: str = "",
        nice: int = 0,
        beside: tuple[str, ...] = (),
        restart_hint: str = RESTART_HINT,
        progress: ProgressObserver | None = None,
    ) -> EngineProcess:
        """Load ``spec`` in a new child process and wait until it is ready (any load error
        is raised here, as ModelLoadError); ``model`` is the name its frames carry.
        ``restart_hint`` ends the default model's notice should the child die (it is not
        loaded again while the caller runs): how its user gets the chats back. ``progress``
        hears how the child's load goes (in this thread); returning False kills the child
        (ModelLoadCancelledError)."""
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        requests, child_requests = context.Pipe()
        interrupts, child_interrupts = context.Pipe()
        handle, log_name = tempfile.mkstemp(prefix="panechat-model-", suffix=".log")
        os.close(handle)
        log = Path(log_name)
        process = context.Process(
            target=_serve,
            args=(
                spec,
                model,
                nice,
                beside,
                child_requests,
                child_interrupts,
                str(log),
                progress is not None,
            ),
            name=f"panechat-model-{spec.name or 'default'}",
            daemon=True,
        )
        process.start()
        child_requests.close()
        child_interrupts.close()
        try:
            message = _load_answer(process, requests, progress)
        except (EOFError, OSError):
            process.join(1.0)
            why = _ending(process.exitcode, log)
            log.unlink(missing_ok=True)
            raise NamedModelError.could_not(spec.name, "be loaded", why) from None
        except BaseException:  # Ctrl+C or a cancelled load: take the child down too
            process.kill()
            process.join(1.0)
            requests.close()
            interrupts.close()
            log.unlink(missing_ok=True)
            raise
        if isinstance(message, _Failed):
            process.join(5.0)
            log.unlink(missing_ok=True)
            raise message.load_error or ModelLoadError(message.error)
        assert isinstance(message, _Loaded)
        return cls(model, spec, message, process, requests, interrupts, log, restart_hint)

    # -- what the group asks (ModelEngine) ------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._in_flight or self._child_busy or bool(self._queued) or bool(self._notices)

    @property
    def chat_count(self) -> int:
        return len(self._chats) if self._stopped is not None else self._chat_count

    @property
    def tokens_sampled(self) -> int:
        return self._tokens_sampled

    @property
    def stopped(self) -> str | None:
        return self._stopped

    def warm_up(self) -> None:
        """Nothing to do: the child warmed its threads up before it said it was ready."""

    def watch_cpu(self) -> None:
        """Nothing to do: the child measures the load itself while it waits."""

    def submit(self, *commands: Command) -> None:
        for command in commands:
            match command:
                case OpenChat(chat_id=chat_id, restore=restore):
                    self._chats.add(chat_id)
                    self._trees[chat_id] = _follower(restore.tree if restore else None)
                case ForkChat(source_id=source, chat_id=chat_id):
                    self._chats.add(chat_id)
                    branch = self._trees.get(source)
                    along = ChatTree.along(branch.path()) if branch is not None else None
                    self._trees[chat_id] = _follower(along)
                case CloseChat(chat_id=chat_id):
                    self._chats.discard(chat_id)
                    self._streaming.discard(chat_id)
                    self._trees.pop(chat_id, None)
            if self._stopped is not None:
                self._answer_stopped(command)
            else:
                self._queued.append(command)

    def interrupt(self) -> None:
        if self._stopped is not None:
            return
        with self._interrupt_lock:
            # The clock starts at the first stop; between steps the child needs no signal
            # (the commands go before its next decode), but the step that carries them is
            # timed from its start: it may hang on a silent server all the same.
            if self._interrupted_at is None:
                self._interrupted_at = time.monotonic()
                if self._in_flight:
                    self._signal()

    def _signal(self) -> None:
        """Tell the child to cancel its decode (with the interrupt lock held)."""
        self._signalled_at = time.monotonic()
        with contextlib.suppress(OSError):  # the child is gone: the next step says so
            self._interrupts.send(None)

    def step(self) -> Frame | None:
        if self._stopped is not None:
            return self._stopped_frame()
        if not self._in_flight:
            with self._interrupt_lock:
                if self._interrupted_at is not None:  # this step carries the stop
                    self._interrupted_at = self._signalled_at = time.monotonic()
                try:
                    self._requests.send(_Step(tuple(self._queued)))
                except OSError:
                    return self._stop(self._why_ended())
                self._sent, self._queued = tuple(self._queued), []
                self._in_flight = True
        try:
            if self._requests.poll(POLL):
                return self._take_reply(self._requests.recv())
        except (EOFError, OSError):
            return self._stop(self._why_ended())
        if not self._process.is_alive():
            return self._stop(self._why_ended())
        with self._interrupt_lock:
            since, now = self._interrupted_at, time.monotonic()
            if since is not None and now - since > STOP_GRACE:
                return self._stop(
                    f"it did not answer for {STOP_GRACE:.0f} s after a stop — "
                    f"{self._servers_hint()}"
                )
            if since is not None and now - self._signalled_at > 1.0:
                self._signal()  # again: a decode begun after the first one is cut too
        return None

    def drain(self, timeout: float) -> Frame | None:
        """At shutdown: the frame of the step still in flight (up to ``timeout`` s), whose
        text (a reply that ended in it) belongs in the transcript."""
        return self._settle(timeout)[1]

    def taken_out(self) -> dict[str, TakenOut | None]:
        taken, self._taken = self._taken, {}
        return taken

    def snapshot(self, chat_id: str, path: Path | None) -> ChatSnapshot:
        """As ChatEngine.snapshot, written by the child (after the group stopped). A child
        that is gone or does not answer leaves no state: the chat is read again on resume,
        and a reply it was streaming is kept as far as its frames showed it."""
        snapshot: object = None
        if self._stopped is None and self._settle(QUIT_WAIT)[0]:
            try:
                self._requests.send(_Snapshot(chat_id, path))
                if self._requests.poll(QUIT_WAIT):
                    snapshot = self._requests.recv()
            except (EOFError, OSError):
                pass
        self._streaming.discard(chat_id)
        if isinstance(snapshot, ChatSnapshot):
            return snapshot
        if self._stopped is None:  # gone or hung: the other chats must not wait on it too
            self._stop("it did not answer at quit")
        return ChatSnapshot(None)  # a reply cut short: as far as the frames showed it

    def close(self) -> None:
        """End the child (its model freed there), waiting a moment, then not."""
        if self._process.is_alive():
            self.interrupt()
            if self._settle(5.0)[0]:
                with contextlib.suppress(OSError):
                    self._requests.send(_Close())
                self._process.join(10.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5.0)
        self._requests.close()
        self._interrupts.close()
        self._log.unlink(missing_ok=True)

    # -- inside ---------------------------------------------------------------------------

    def _settle(self, timeout: float) -> tuple[bool, Frame | None]:
        """Take the reply to a step in flight, if any (waiting up to ``timeout`` s): whether
        the child is ready for the next request, and the reply's frame."""
        if not self._in_flight:
            return self._stopped is None and self._process.is_alive(), None
        try:
            if not self._requests.poll(timeout):
                return False, None
            frame = self._take_reply(self._requests.recv())
        except (EOFError, OSError):
            return False, None
        return self._stopped is None, frame

    def _take_reply(self, message: object) -> Frame | None:
        with self._interrupt_lock:
            self._in_flight = False
            self._interrupted_at = None
            self._sent = ()
        if isinstance(message, _Failed):
            return self._stop(message.error)
        assert isinstance(message, _Stepped)
        self._child_busy = message.busy
        self._chat_count = message.chat_count
        self._tokens_sampled = message.tokens_sampled
        for chat_id, taken in message.taken.items():
            self._taken[chat_id] = taken
            if taken is not None:
                self._chats.discard(chat_id)
                self._trees.pop(chat_id, None)
        frame = message.frame
        if frame is not None:
            for chat_id, delta in frame.deltas.items():
                self._follow(chat_id, delta)
                if delta.started:
                    self._streaming.add(chat_id)
                if delta.finished is not None:
                    self._streaming.discard(chat_id)
        return frame

    def _stop(self, why: str) -> Frame:
        """The child is gone: every chat hears why, a streaming reply ends with its text."""
        self._stopped = f"model {self.spec.name or 'default'!r} stopped: {why}"
        if self._process.is_alive():  # hung: it has nothing left to give
            self._process.kill()
        lost, self._sent, self._queued = (*self._sent, *self._queued), (), []
        self._in_flight = self._child_busy = False
        notice = Notice(NoticeKind.MODEL_FAILED, self._stopped)
        for chat_id in sorted(self._chats):
            delta = ChatDelta(notice=notice)
            if chat_id in self._streaming:  # its text as far as the frames showed it stays
                delta.finished = StopReason.CANCELLED
            self._notices[chat_id] = delta
        for command in lost:
            if isinstance(command, TakeOutChat):  # a switch waits on it: not taken out
                self._taken[command.chat_id] = None
            self._keep_turn(command)
        return self._stopped_frame()

    def _follow(self, chat_id: str, delta: ChatDelta) -> None:
        """Keep the chat's tree as the frames tell it. A change this copy cannot follow (a
        bug) drops the copy, not the model: only a kept turn would need it."""
        for change in delta.tree_changes:
            tree = self._trees.get(chat_id)
            if tree is None:
                if not change.reset:
                    continue
                tree = self._trees[chat_id] = ChatTree()
            try:
                tree.apply(change)
            except KeyError:
                del self._trees[chat_id]

    def _keep_turn(self, command: Command) -> None:
        """A turn the child never took (sent in the step it died in, or after): it goes in
        the chat's tree all the same, unanswered, with the notice that says why."""
        if not isinstance(command, SendTurn | EditMessage) or command.chat_id not in self._chats:
            return
        tree = self._trees.get(command.chat_id)
        if tree is None:  # not followed (see _follow): a reset here would empty the view's
            return
        if isinstance(command, SendTurn):
            tree.add(tree.head, Role.USER, command.text)
        elif command.message_id in tree:  # an edit: a new version beside the message
            tree.add(tree[command.message_id].parent, Role.USER, command.text)
        change = tree.take_change()
        if change is not None:
            delta = self._notices.setdefault(command.chat_id, ChatDelta())
            delta.tree_changes.append(change)

    def _stopped_frame(self) -> Frame:
        """The notices queued for the chats of a child that is gone; a reply they end is
        no longer the snapshot's to cut."""
        deltas, self._notices = self._notices, {}
        for chat_id, delta in deltas.items():
            if delta.finished is not None:
                self._streaming.discard(chat_id)
        return Frame(deltas, model=self.model)

    def _answer_stopped(self, command: Command) -> None:
        """A command for a chat of a child that is gone: say so (a close needs no answer)."""
        assert self._stopped is not None
        if isinstance(command, CloseChat | StopChat):
            return
        chat_id = getattr(command, "chat_id", "")
        if isinstance(command, TakeOutChat):
            self._taken[chat_id] = None
        self._notices.setdefault(chat_id, ChatDelta()).notice = Notice(
            NoticeKind.MODEL_FAILED, self._stopped
        )
        self._keep_turn(command)

    def _why_ended(self) -> str:
        self._process.join(2.0)
        return _ending(self._process.exitcode, self._log) + f" — {self._servers_hint()}"

    def _servers_hint(self) -> str:
        servers = ", ".join(str(e) for e in self.spec.placement.rpc)
        check = f"check its RPC servers ({servers}); once they run again, " if servers else ""
        if self.model == "":  # the default model is not loaded again while the app runs
            return f"{check}{self._restart_hint}"
        return f"{check}switch this chat to another model and back"


def _follower(tree: ChatTree | None) -> ChatTree:
    """The parent's copy of a chat's tree as the child starts it (a restored or forked
    chat's messages, else none), with nothing left to hand out: the frames say what changes."""
    follower = tree.copy() if tree is not None else ChatTree()
    follower.take_change()
    return follower


def _ending(exitcode: int | None, log: Path) -> str:
    """How the child ended, in a few words: the native error it printed, and the signal."""
    if exitcode is None:
        how = "it stopped answering"
    elif exitcode < 0:
        killer = killing_signal(exitcode)
        how = f"its process was ended by {killer.name if killer else f'signal {-exitcode}'}"
    else:
        how = f"its process exited with code {exitcode}"
    said = _native_error(log)
    return f"{how} ({said})" if said else how


_SOURCE_LINE = re.compile(r"^\S+\.(?:c|cpp|h):\d+: ")


def _native_error(log: Path) -> str:
    """The line a GGML_ABORT or GGML_ASSERT printed (its source path cut), if any."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        if _SOURCE_LINE.match(line):
            return " ".join(_SOURCE_LINE.sub("", line).split())[:200]
    return ""


# -- the child's side -------------------------------------------------------------------------


def _load_answer(
    process: BaseProcess, requests: Connection, progress: ProgressObserver | None
) -> object:
    """The child's word on its load (_Loaded or _Failed), its _Progress told to ``progress``
    meanwhile. Raises EOFError when the child died first."""
    while True:
        while not requests.poll(0.25):
            if not process.is_alive():
                break
        message = requests.recv()
        if not isinstance(message, _Progress):
            return message
        if progress is not None and progress(message.fraction) is False:
            raise ModelLoadCancelledError("the model's load was cancelled")


def _progress_sender(requests: Connection) -> ProgressObserver:
    """In the child: each new whole percent of the load, to the parent."""
    shown = -1

    def send(fraction: float) -> None:
        nonlocal shown
        percent = int(fraction * 100)
        if percent > shown:
            shown = percent
            requests.send(_Progress(fraction))

    return send


def _serve(
    spec: ModelSpec,
    model: str,
    nice: int,
    beside: tuple[str, ...],
    requests: Connection,
    interrupts: Connection,
    log: str,
    reports_progress: bool = False,
) -> None:
    """The child: load, say so, then answer requests until told to close or orphaned.
    Native messages go to ``log``, never to the app's terminal."""
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.environ["GGML_NO_BACKTRACE"] = "1"  # an abort must not wait for a debugger
    lower_this_thread(nice)
    try:
        progress = _progress_sender(requests) if reports_progress else None
        loaded = ChatModel.load(spec, beside, progress)
    except NamedModelError as e:
        requests.send(_Failed(str(e), e))
        return
    except PanechatError as e:
        requests.send(_Failed(str(e)))
        return
    except Exception as e:
        error = NamedModelError.could_not(spec.name, "be loaded", one_line(e))
        requests.send(_Failed(str(error), error))
        return
    engine = ChatEngine(loaded.executor, loaded.template, model=model)
    try:
        engine.warm_up()
    except Exception as e:
        error = NamedModelError.could_not(spec.name, "warm up", one_line(e))
        requests.send(_Failed(str(error), error))
        return
    threading.Thread(target=_forward_interrupts, args=(interrupts, engine), daemon=True).start()
    requests.send(_Loaded(loaded.display_name, loaded.offloaded))
    try:
        _answer(requests, engine)
    except (EOFError, OSError):
        return  # the app is gone
    loaded.close()


def _answer(requests: Connection, engine: ChatEngine) -> None:
    while True:
        if not requests.poll(IDLE_WATCH):
            engine.watch_cpu()
            continue
        message = requests.recv()
        match message:
            case _Step(commands=commands):
                if commands:
                    engine.submit(*commands)
                try:
                    frame = engine.step()
                    taken = engine.taken_out()
                    reply = _Stepped(
                        frame, engine.busy, taken, engine.chat_count, engine.tokens_sampled
                    )
                    requests.send(reply)
                except (EOFError, OSError):
                    raise  # the app is gone
                except Exception as e:  # llama_decode failed, say: this model's chats stop
                    requests.send(_Failed(f"the decode failed: {one_line(e)}"))
                    return
            case _Snapshot(chat_id=chat_id, path=path):
                try:
                    snapshot = engine.snapshot(chat_id, path)
                except PanechatError:
                    snapshot = ChatSnapshot(None)
                requests.send(snapshot)
            case _Close():
                return


def _forward_interrupts(interrupts: Connection, engine: ChatEngine) -> None:
    while True:
        try:
            interrupts.recv()
        except (EOFError, OSError):
            return
        engine.interrupt()
