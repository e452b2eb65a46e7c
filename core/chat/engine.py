"""The chat engine: the chats on one model, served with one batch per frame.

Callers never touch llama.cpp: they submit commands (from any thread), and each
:meth:`ChatEngine.step` applies them, decodes every chat's pending tokens in one batch and
returns the :class:`Frame`: every chat's new text and what changed in its tree. A script steps
it itself; the app runs it in :class:`~core.chat.engine_group.ChatEngineGroup`'s thread, the
one decode loop (``llama_decode`` releases the GIL, so a UI thread stays responsive).
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from pathlib import Path

from core.chat.chat_context import ChatContext
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
from core.chat.frames import ChatDelta, Frame, FrameStats
from core.chat.notices import Notice, NoticeKind
from core.chat.session import SHIFT_SHARE, ChatSession, ContextFullError, QueuedTurn
from core.chat.state import ChatSnapshot, SavedState, exchanges
from core.chat.token_stats import Alternative, TokenStat, piece_text, token_stat
from core.chat.tree import ChatTree, Role, TreeMessage
from core.errors import PanechatError
from core.executor.cancellation import CancellationToken
from core.executor.conversation import Conversation
from core.executor.decode_result import DecodeResult
from core.executor.executor import BatchedExecutor
from core.executor.shared_prefix import PrefillInFlight, PrefixSharing, SharedPrefixes
from core.templates.chat_template import ChatFormat
from core.templates.raw_prompt import RAW_PROMPT
from core.text.reply_stream import StopReason


@dataclass(frozen=True, slots=True)
class TakenOut:
    """A chat :class:`TakeOutChat` closed: its settings and its tree (another model reads
    the branch shown again)."""

    config: ChatConfig
    tree: ChatTree


#: Commands a pane waits on an answer for (it shows itself busy until a frame comes).
_ANSWERED = (
    SendTurn,
    Regenerate,
    EditMessage,
    ShowMessage,
    BranchAtToken,
)
#: Commands that move the chat to another branch: applied once no reply is in flight.
_BRANCHING = (EditMessage, ShowMessage, BranchAtToken)


class ChatEngine:
    """Steps frames: take commands, start queued turns, one ``infer()``, sample, return what
    changed. One thread steps it (the group's, or a script's); commands come from any."""

    def __init__(
        self,
        executor: BatchedExecutor,
        template: ChatFormat,
        *,
        model: str = "",
    ) -> None:
        self.executor = executor
        self.model = model  # the name its frames carry (ChatEngineGroup runs several)
        self.template = template
        self._commands: queue.SimpleQueue[tuple[Command, ...]] = queue.SimpleQueue()
        self._sessions: dict[str, ChatSession] = {}
        self._waiting_forks: list[ForkChat] = []
        self._waiting_opens: dict[str, OpenChat] = {}  # chats waiting for a shared prefix
        self._early_turns: dict[str, list[str]] = {}  # turns sent to them meanwhile
        self._deferred: list[Command] = []  # applied at the start of the next frame
        self._taken: dict[str, TakenOut | None] = {}  # TakeOutChat's results, for taken_out()
        self._prefixes = SharedPrefixes(executor)
        self._cancel = CancellationToken()
        self._rate = 0.0
        self.frames = 0
        self.tokens_sampled = 0  # every chat's reply tokens since the loop started

    # -- the caller's side -----------------------------------------------------------------

    def step(self) -> Frame | None:
        """Run one frame in the calling thread and return it (None: nothing happened)."""
        return self._frame()

    @property
    def busy(self) -> bool:
        """Something is left to do: a reply streaming, a turn queued, a chat opening (safe to
        ask from another thread: a group's caller does)."""
        return (
            not self._commands.empty()
            or bool(self._deferred)
            or any(s.generating or s.turns for s in list(self._sessions.values()))
            or bool(self.executor.batched_token_count)
            or bool(self._waiting_forks)
            or bool(self._waiting_opens)
        )

    def submit(self, *commands: Command) -> None:
        """Queue commands; several given at once are applied in the same frame (a broadcast
        starts every chat's turn in one batch, not one chat per frame)."""
        if any(isinstance(c, StopChat | ClearChat | CloseChat) for c in commands):
            self.interrupt()
        self._commands.put(commands)

    def warm_up(self) -> None:
        """Spin llama.cpp's threads up in the calling thread, the one that will decode."""
        self.executor.warm_up()

    def watch_cpu(self) -> None:
        """While idle: keep the thread count in step with the machine's load."""
        self.executor.watch_cpu()

    def drain(self, timeout: float) -> Frame | None:
        """None: a frame here is never left in flight (step() returns it)."""
        return None

    @property
    def stopped(self) -> str | None:
        """Always None: an engine in this process is there as long as the process is."""
        return None

    def interrupt(self) -> None:
        """Cancel the decode in flight (a long prefill), so the next commands apply at once;
        the frame's chats keep their tokens and go on at the next frame. Any thread."""
        self._cancel.cancel()

    def snapshot(self, chat_id: str, path: Path | None) -> ChatSnapshot:
        """Save a chat's KV cells to ``path`` and return its decode state, ending a reply in
        flight (its text comes back, to be saved with the transcript; ``path`` None: only
        that). In the thread that steps the engine, or once nothing steps it any more."""
        session = self._sessions.get(chat_id)
        if session is None:
            return ChatSnapshot(None)
        if session.reply is not None:
            session.end_reply(StopReason.CANCELLED)
        change = session.tree.take_change()
        conv = session.conversation
        if path is None or conv.requires_inference or session.turns:
            # A prompt not decoded, or turns the model has not seen: the transcript holds
            # more than the cells, so the chat is read again on resume.
            return ChatSnapshot(None, change)
        try:
            conv.save(path)
        except (PanechatError, OSError):
            return ChatSnapshot(None, change)
        return ChatSnapshot(SavedState(session.state(), str(path), conv.token_count), change)

    def tree(self, chat_id: str) -> ChatTree | None:
        """A copy of a chat's tree (every message, every branch, which one is shown; a reply
        streaming holds its text so far), or None for a chat not open. Between two steps, in
        the thread that steps the engine (:meth:`ChatEngineGroup.tree` asks that thread)."""
        session = self._sessions.get(chat_id)
        if session is None:
            return None
        session.show_reply_so_far()
        return session.tree.copy()

    def context(self, chat_id: str) -> ChatContext | None:
        """What a chat's KV holds (None: a chat not open); as :meth:`tree`, between steps."""
        session = self._sessions.get(chat_id)
        return session.context() if session is not None else None

    def prefix_sharing(self) -> PrefixSharing:
        """How many chats shared a decoded system prompt, and how many decoded their own."""
        return self._prefixes.sharing()

    def taken_out(self) -> dict[str, TakenOut | None]:
        """The chats :class:`TakeOutChat` closed since the last call (None: it was busy and
        stays), for the caller to open elsewhere. In the thread that steps the engine."""
        taken, self._taken = self._taken, {}
        return taken

    def _take_out(self, session: ChatSession, delta: ChatDelta) -> None:
        chat_id = session.chat_id
        queued = any(getattr(c, "chat_id", None) == chat_id for c in self._deferred)
        if session.generating or session.turns or queued:
            delta.notice = Notice(NoticeKind.BUSY, "switching the model")
            self._taken[chat_id] = None
            return
        del self._sessions[chat_id]
        session.conversation.dispose()
        self._taken[chat_id] = TakenOut(session.config, session.tree)

    @property
    def chat_count(self) -> int:
        """Chats open or opening (a group frees a model that has none)."""
        return len(self._sessions) + len(self._waiting_opens) + len(self._waiting_forks)

    def _drain(self, deltas: dict[str, ChatDelta]) -> None:
        """Apply the commands deferred from the last frame, then those queued since."""
        deferred, self._deferred = self._deferred, []
        for command in deferred:
            self._apply(command, deltas)
        while True:
            try:
                commands = self._commands.get_nowait()
            except queue.Empty:
                return
            for command in commands:
                self._apply(command, deltas)

    def _delta(self, deltas: dict[str, ChatDelta], chat_id: str) -> ChatDelta:
        return deltas.setdefault(chat_id, ChatDelta())

    def _apply(self, command: Command, deltas: dict[str, ChatDelta]) -> None:
        """Apply one command (in the stepping thread, at the start of a frame)."""
        match command:
            case Shutdown():
                pass  # the loop that steps the engine stops (ChatEngineGroup)
            case ForkChat():
                self._waiting_forks.append(command)
                self._fork_ready(deltas)
            case OpenChat():
                self._waiting_opens[command.chat_id] = command
                self._open_ready(deltas)
            case _ if command.chat_id in self._waiting_opens:
                self._apply_while_opening(command, self._delta(deltas, command.chat_id))
            case _:
                session = self._sessions.get(command.chat_id)
                if session is not None:
                    self._apply_to(session, command, self._delta(deltas, command.chat_id))
                elif isinstance(command, _ANSWERED):  # the pane waits for an answer: say why
                    self._delta(deltas, command.chat_id).notice = Notice(NoticeKind.NOT_OPEN)

    def _apply_while_opening(self, command: Command, delta: ChatDelta) -> None:
        """A chat still waiting for its shared system prompt keeps its turns for later; a
        stop or a clear drops them, as it drops an open chat's queued turns."""
        match command:
            case SendTurn(chat_id=chat_id, text=text):
                self._early_turns.setdefault(chat_id, []).append(text)
            case StopChat(chat_id=chat_id) | ClearChat(chat_id=chat_id):
                self._early_turns.pop(chat_id, None)
            case CloseChat(chat_id=chat_id):
                del self._waiting_opens[chat_id]
                self._early_turns.pop(chat_id, None)
            case _ if isinstance(command, _BRANCHING):
                self._deferred.append(command)  # it names what it needs: later is fine
            case Regenerate():
                delta.notice = Notice(NoticeKind.OPENING)
            case TakeOutChat(chat_id=chat_id):
                delta.notice = Notice(NoticeKind.OPENING)
                self._taken[chat_id] = None

    def _apply_to(self, session: ChatSession, command: Command, delta: ChatDelta) -> None:
        match command:
            case SendTurn(text=text):
                self._queue_turn(session, text, session.tree.head)
            case StopChat():
                session.turns.clear()
                if session.reply is not None:
                    self._end_reply(session, delta, StopReason.CANCELLED)
            case ClearChat() | CloseChat():
                if session.reply is not None:
                    self._end_reply(session, delta, StopReason.CANCELLED, shown=False)
                session.conversation.dispose()
                if isinstance(command, CloseChat):
                    del self._sessions[session.chat_id]
                else:
                    session.reset(self._open_conversation(session.config, wait=False))
            case Regenerate() if delta.finished is not None:
                self._deferred.append(command)  # one frame ends a reply, the next starts one
            case Regenerate() if session.conversation.requires_inference and not (
                session.generating or session.turns
            ):
                self._deferred.append(command)  # a branch shown is still being read
            case Regenerate():
                if session.generating or session.turns:
                    delta.notice = Notice(NoticeKind.BUSY, "regenerating")
                elif not session.can_regenerate:
                    delta.notice = Notice(NoticeKind.NOTHING_TO_REGENERATE)
                else:
                    try:
                        session.regenerate()
                    except PanechatError as e:
                        delta.notice = Notice(NoticeKind.FAILED, str(e))
                        return
                    tree, head = session.tree, session.tree.head
                    last_is_reply = head is not None and tree[head].role is Role.ASSISTANT
                    asked = tree[head].parent if last_is_reply and head is not None else head
                    self._open_reply_message(session, delta, asked)
                    delta.started = True
                    delta.replaces_last = True
            case TakeOutChat():
                self._take_out(session, delta)
            case _ if isinstance(command, _BRANCHING) and (
                session.generating or session.turns or delta.finished is not None
            ):
                # The pane shows the new branch already: apply it once the reply in flight
                # (the app lets none start meanwhile) has ended, never refuse it.
                self._deferred.append(command)
            case EditMessage(message_id=message_id, text=text):
                self._edit(session, message_id, text, delta)
            case ShowMessage(message_id=message_id):
                self._show(session, message_id, delta)
            case BranchAtToken(message_id=message_id, index=index, token=token):
                self._branch_at_token(session, message_id, index, token, delta)

    @staticmethod
    def _message(
        session: ChatSession, message_id: int, role: Role | None, delta: ChatDelta
    ) -> bool:
        """Whether the chat has message ``message_id`` (of ``role``); else a notice says so."""
        tree = session.tree
        if message_id in tree and (role is None or tree[message_id].role is role):
            return True
        kind = "" if role is None else f"{role.value} "
        delta.notice = Notice(NoticeKind.FAILED, f"this chat has no {kind}message {message_id}")
        return False

    def _edit(self, session: ChatSession, message_id: int, text: str, delta: ChatDelta) -> None:
        """A sibling of user message ``message_id`` with ``text``, answered in turn."""
        if not self._message(session, message_id, Role.USER, delta):
            return
        parent = session.tree[message_id].parent
        history = session.tree.messages(parent) if parent is not None else []
        if self._adopt(session, history, delta, decode=True):
            self._queue_turn(session, text, parent)

    @staticmethod
    def _queue_turn(session: ChatSession, text: str, parent: int | None) -> None:
        """A turn goes in the tree at once, after ``parent`` (a turn sent: the last message;
        one queued behind a reply not started yet moves below that reply when it starts; an
        edit: the message before the one edited), and in the queue: nothing typed is lost,
        whatever happens to the turn."""
        message = session.tree.add(parent, Role.USER, text)
        session.turns.append(QueuedTurn(text, message.id))

    def _show(self, session: ChatSession, message_id: int, delta: ChatDelta) -> None:
        """The branch through ``message_id`` becomes the chat (the KV follows it)."""
        if not self._message(session, message_id, None, delta):
            return
        tree = session.tree
        before = tree.head
        tree.show(message_id)
        if not self._adopt(session, tree.messages(), delta, decode=True) and before is not None:
            tree.show(before)

    def _branch_at_token(
        self, session: ChatSession, message_id: int, index: int, token: int, delta: ChatDelta
    ) -> None:
        """A new version of reply ``message_id`` that takes ``token`` at ``index``."""
        if not self._message(session, message_id, Role.ASSISTANT, delta):
            return
        reply = session.tree[message_id]
        model = self.executor.model
        if not 0 <= index < len(reply.tokens):
            delta.notice = Notice(
                NoticeKind.FAILED,
                f"reply {message_id} has {len(reply.tokens)} tokens with their odds: "
                f"choose an index below that, not {index}",
            )
            return
        if not 0 <= token < model.n_vocab:
            delta.notice = Notice(
                NoticeKind.FAILED, f"token {token} is not in this model's vocabulary"
            )
            return
        chosen = reply.tokens[index]
        alternative = next((a for a in chosen.alternatives if a.token == token), None)
        if alternative is None:  # not among the odds kept: the user's own choice
            alternative = Alternative(token, piece_text(model, token), 0.0)
        prefix = [*reply.tokens[:index], chosen.replaced_by(alternative)]
        history = session.tree.messages(reply.parent)
        self._continue(session, history, prefix, delta, reply.parent)

    def _open_reply_message(
        self, session: ChatSession, delta: ChatDelta, asked: int | None
    ) -> TreeMessage:
        """The reply about to stream, as a new message after user message ``asked``."""
        message = session.tree.add(asked, Role.ASSISTANT)
        message.model = self.model
        session.reply_message = delta.message_id = message.id
        return message

    def _continue(
        self,
        session: ChatSession,
        history: list[tuple[str, str]],
        prefix: list[TokenStat],
        delta: ChatDelta,
        asked: int | None,
    ) -> None:
        """Start a new version of a reply from ``prefix`` after user message ``asked`` (the
        last of ``history``); it ends at once when the prefix already ends it (an
        end-of-turn token, a stop string)."""
        before = session.state()
        try:
            text = session.continue_reply(history, prefix, self.executor.n_ctx_seq)
        except PanechatError as e:
            session.reply = None
            session.restore_state(before)
            delta.notice = Notice(NoticeKind.FAILED, str(e))
            return
        self._open_reply_message(session, delta, asked).tokens = list(prefix)
        delta.started = True
        delta.text += text.answer
        delta.reasoning += text.reasoning
        delta.tokens.extend(prefix)
        reply = session.reply
        if reply is not None and reply.done:
            self._end_reply(session, delta, reply.stop_reason or StopReason.STOP_STRING)

    @staticmethod
    def _adopt(
        session: ChatSession, history: list[tuple[str, str]], delta: ChatDelta, *, decode: bool
    ) -> bool:
        """The chat goes on from ``history`` (another branch); a template that refuses it
        leaves the chat as it was, with a notice (False)."""
        before = session.state()
        try:
            session.adopt(history, decode=decode)
        except PanechatError as e:
            session.restore_state(before)
            delta.notice = Notice(NoticeKind.FAILED, str(e))
            return False
        return True

    @staticmethod
    def _end_reply(
        session: ChatSession, delta: ChatDelta, reason: StopReason, *, shown: bool = True
    ) -> None:
        """End the chat's reply in this frame: its last text (not for a chat being cleared),
        why it ended, and its length in tokens."""
        reply = session.reply
        assert reply is not None
        if session.reply_message is not None:
            delta.message_id = session.reply_message
        tail = session.end_reply(reason)
        delta.finished = reason
        delta.reply_tokens = reply.token_count
        if shown:
            delta.text += tail.answer
            delta.reasoning += tail.reasoning

    def _format(self, config: ChatConfig) -> ChatFormat:
        """How a chat's turns become its prompt: the model's format, or none (a completion)."""
        return RAW_PROMPT if config.raw_prompt else self.template

    def _open_conversation(self, config: ChatConfig, *, wait: bool = True) -> Conversation:
        """A conversation for a chat: with a system prompt, one that shares its decoded
        tokens with other chats that have the same one (may raise PrefillInFlight)."""
        prefix = self._format(config).system_prefix(config.system)
        if prefix is None:
            return self.executor.create(config.sampling)
        tokens = self.executor.model.tokenize_prompt(prefix)
        return self._prefixes.open(tokens, config.sampling, wait=wait)

    def _restore(self, command: OpenChat, delta: ChatDelta) -> ChatSession | None:
        """A saved chat's session from its KV state file, without decoding its history; None
        (with a notice) when the state is missing, corrupt, or from other weights/settings."""
        restore = command.restore
        if restore is None or restore.state is None:
            return None
        state = restore.state
        try:
            conv = self.executor.load(state.kv_path, command.config.sampling)
        except PanechatError as e:
            delta.notice = Notice(NoticeKind.STATE_NOT_USED, str(e))
            return None
        if conv.token_count != state.tokens:
            conv.dispose()
            delta.notice = Notice(NoticeKind.STATE_NOT_USED, "it does not match the chat's tokens")
            return None
        held = [e.user for e in state.turns.exchanges]
        shown = [e.user for e in exchanges(restore.tree.messages())]
        if held and shown[-len(held) :] != held:  # cells of another branch than the one shown
            conv.dispose()
            delta.notice = Notice(NoticeKind.STATE_NOT_USED, "it holds another branch")
            return None
        tree = restore.tree.copy()
        template = self._format(command.config)
        session = ChatSession(command.chat_id, command.config, conv, template, tree)
        session.restore_state(state.turns)
        return session

    def _open_ready(self, deltas: dict[str, ChatDelta]) -> None:
        """Open the chats that can be opened now; the others wait for a shared prefix."""
        for chat_id, command in list(self._waiting_opens.items()):
            if command.restore is not None:
                restored = self._restore(command, self._delta(deltas, chat_id))
                if restored is not None:
                    del self._waiting_opens[chat_id]
                    for text in self._early_turns.pop(chat_id, []):
                        self._queue_turn(restored, text, restored.tree.head)
                    self._sessions[chat_id] = restored
                    continue
            try:
                conv = self._open_conversation(command.config)
            except PrefillInFlight:
                continue
            except PanechatError as e:
                self._delta(deltas, chat_id).notice = Notice(NoticeKind.FAILED, str(e))
                conv = None
            del self._waiting_opens[chat_id]
            turns = self._early_turns.pop(chat_id, [])
            if conv is not None:
                tree = ChatTree() if command.restore is None else command.restore.tree.copy()
                template = self._format(command.config)
                session = ChatSession(chat_id, command.config, conv, template, tree)
                if len(tree):
                    try:
                        session.replay(tree.messages())
                    except PanechatError as e:  # a template that refuses the saved chat
                        self._delta(deltas, chat_id).notice = Notice(NoticeKind.FAILED, str(e))
                for text in turns:
                    self._queue_turn(session, text, session.tree.head)
                self._sessions[chat_id] = session

    def _fork_ready(self, deltas: dict[str, ChatDelta]) -> None:
        """Apply the forks whose source is idle; drop those whose source is gone."""
        waiting, self._waiting_forks = self._waiting_forks, []
        for command in waiting:
            source = self._sessions.get(command.source_id)
            delta = self._delta(deltas, command.chat_id)
            if source is None and command.source_id in self._waiting_opens:
                self._waiting_forks.append(command)  # the source is still opening
                continue
            if source is None:
                delta.notice = Notice(NoticeKind.BRANCH_SOURCE_CLOSED)
                continue
            if source.generating or source.turns or source.conversation.requires_inference:
                self._waiting_forks.append(command)  # branch once its reply is complete
                continue
            try:
                self._sessions[command.chat_id] = source.fork(command.chat_id, command.config)
            except PanechatError as e:
                delta.notice = Notice(NoticeKind.FAILED, f"could not branch: {e}")

    def _frame(self) -> Frame | None:
        """Commands in, turns started, one decode, every reply sampled: the frame's events."""
        deltas: dict[str, ChatDelta] = {}
        self._drain(deltas)
        if self._waiting_opens:
            self._open_ready(deltas)
        if self._waiting_forks:
            self._fork_ready(deltas)
        self._cancel.reset()
        for session in self._sessions.values():
            # A chat whose system prompt is still queued starts its turn after that decode; one
            # whose reply ended in this frame starts the next in the next frame (a frame's
            # delta says at most one reply ended, then perhaps another started).
            ended = session.chat_id in deltas and deltas[session.chat_id].finished is not None
            if (
                not session.generating
                and session.turns
                and not session.conversation.pending_count
                and not ended
            ):
                self._start_turn(session, deltas)
        started = time.perf_counter()
        decode_before = self.executor.stats.decode_seconds
        if self.executor.batched_token_count:
            result = self.executor.infer_sync(self._cancel)
            if result is DecodeResult.NO_KV_SLOT:
                self._make_room_in_cache(deltas)
            elif not result.ok and result is not DecodeResult.COMPUTE_ABORTED:
                raise PanechatError(f"llama_decode failed: {result.name}")
        sampled = self._sample_all(deltas)
        self.tokens_sampled += sampled
        elapsed = time.perf_counter() - started
        self.frames += 1
        if elapsed > 0 and sampled:
            rate = sampled / elapsed
            self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
        generating = sum(1 for s in self._sessions.values() if s.generating)
        if not generating and not sampled:
            self._rate = 0.0
        for chat_id, session in self._sessions.items():
            session.show_reply_so_far()
            change = session.tree.take_change(session.reply_message)
            if change is not None:
                self._delta(deltas, chat_id).tree_changes.append(change)
            if session.generating or chat_id in deltas:
                d = self._delta(deltas, chat_id)
                d.generating = session.generating
                d.tokens_per_second = session.tokens_per_second
                d.context_used = session.conversation.token_count
        if not deltas:
            return None
        decode = self.executor.stats.decode_seconds - decode_before
        stats = FrameStats(
            frame=self.frames,
            batch_tokens=self.executor.stats.last_batch_tokens if sampled else 0,
            generating=generating,
            tokens_per_second=self._rate,
            kv_used=self.executor.tokens_in_kv,
            kv_total=self.executor.n_ctx,
            decode_share=decode / elapsed if elapsed > 0 else 0.0,
        )
        return Frame(deltas, stats, self.model)

    def _start_turn(self, session: ChatSession, deltas: dict[str, ChatDelta]) -> None:
        """The next queued turn's reply starts; its user message is in the tree (and stays,
        with a notice, should the turn not fit or the template refuse it)."""
        turn = session.turns.popleft()
        delta = self._delta(deltas, session.chat_id)
        asked = turn.message_id
        try:
            session.begin_reply(turn.text, self.executor.n_ctx_seq)
        except ContextFullError:
            delta.notice = Notice(NoticeKind.CONTEXT_FULL)
            return
        except PanechatError as e:
            delta.notice = Notice(NoticeKind.FAILED, str(e))
            return
        delta.prompt_tokens = session.reply_base
        reply = self._open_reply_message(session, delta, asked)
        tree = session.tree
        following = session.turns[0].message_id if session.turns else None
        if following is not None and tree[following].parent == asked:
            tree.move(following, reply.id)  # the next turn follows this reply
            tree.show(reply.id)  # the path goes on to the last turn queued
        delta.started = True
        self._take_shift_notice(session, delta)

    @staticmethod
    def _take_shift_notice(session: ChatSession, delta: ChatDelta) -> None:
        if session.shift_notice is not None:
            delta.notice, session.shift_notice = session.shift_notice, None

    def _sample_all(self, deltas: dict[str, ChatDelta]) -> int:
        sampled = 0
        limit = self.executor.n_ctx_seq - 1
        for session in self._sessions.values():
            conv = session.conversation
            if session.reply is None or not conv.requires_sampling:
                continue
            token = conv.sample()
            sampled += 1
            delta = self._delta(deltas, session.chat_id)
            delta.message_id = session.reply_message
            if conv.last_choice is not None and not self.executor.model.is_eog(token):
                stat = token_stat(self.executor.model, conv.last_choice)
                delta.tokens.append(stat)
                if session.reply_message is not None:
                    session.tree[session.reply_message].tokens.append(stat)
            split = session.feed(token)
            delta.text += split.answer
            delta.reasoning += split.reasoning
            reply = session.reply
            if reply.done:
                self._end_reply(session, delta, reply.stop_reason or StopReason.STOP_STRING)
            elif conv.token_count >= limit and not session.make_room(int(limit * SHIFT_SHARE)):
                self._end_reply(session, delta, StopReason.CONTEXT_FULL)
                delta.notice = Notice(NoticeKind.CONTEXT_FULL)
            else:
                self._take_shift_notice(session, delta)
                queued = conv.pending_tokens  # a tail to decode again after a shift
                conv.discard_pending()
                conv.prompt([*queued, token])
        return sampled

    def _make_room_in_cache(self, deltas: dict[str, ChatDelta]) -> None:
        """The shared KV cache is full: shift the oldest turns out of the chat holding the most
        tokens; if no chat has turns to drop, stop the biggest one and tell it."""
        by_size = sorted(
            self._sessions.values(),
            key=lambda s: s.conversation.token_count + s.conversation.pending_count,
            reverse=True,
        )
        need = max(1, int(self.executor.n_ctx * SHIFT_SHARE / 2))
        for session in by_size:
            if session.make_room(need, whole_history=not session.generating):
                self._take_shift_notice(session, self._delta(deltas, session.chat_id))
                return
        candidates = [s for s in self._sessions.values() if s.conversation.requires_inference]
        if not candidates:
            return
        victim = max(
            candidates, key=lambda s: s.conversation.token_count + s.conversation.pending_count
        )
        delta = self._delta(deltas, victim.chat_id)
        if victim.reply is not None:
            self._end_reply(victim, delta, StopReason.CONTEXT_FULL)
        victim.conversation.discard_pending()
        victim.turns.clear()
        delta.notice = Notice(NoticeKind.CONTEXT_FULL)
