"""The engine's side of one chat: its conversation, its history, queued turns and the reply in
flight."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.chat.chat_context import ChatContext, HeldTurn
from core.chat.config import ChatConfig
from core.chat.notices import Notice, NoticeKind
from core.chat.state import Exchange, TurnState, exchanges
from core.chat.token_stats import TokenStat, piece_text
from core.chat.tree import ChatTree
from core.errors import PanechatError, TemplateError
from core.executor.conversation import Conversation
from core.templates.chat_template import ChatFormat, ChatMessage
from core.text.reasoning import ReasoningSplitter, Split
from core.text.reply_stream import ReplyStream, StopReason

#: Share of the context a shift frees at least, so chats do not shift on every turn.
SHIFT_SHARE = 0.25


class ContextFullError(PanechatError):
    """The chat's conversation has no room for the next turn."""


@dataclass(frozen=True, slots=True)
class QueuedTurn:
    """A user turn waiting for its reply to start: its text, and its message in the chat's
    tree (put there when the turn was sent)."""

    text: str
    message_id: int


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(slots=True)
class ChatSession:
    """One chat's history in the KV cache, kept in step with its template.

    Every turn renders the whole chat through the template and decodes only the tokens that
    differ from those already in the KV (the common prefix stays, as llama.cpp's server does
    with cached prompts): a template that only appends costs the new turn alone, and one that
    rewrites an earlier turn is decoded again from the first token that differs.
    """

    chat_id: str
    config: ChatConfig
    conversation: Conversation
    template: ChatFormat
    tree: ChatTree = field(default_factory=ChatTree)  # every message, every branch: the chat
    turns: deque[QueuedTurn] = field(default_factory=deque)  # sent, not started yet
    reply: ReplyStream | None = None
    reply_message: int | None = None  # the reply streaming, by its id in the tree
    reply_base: int = 0  # token count where the current reply starts
    first_token_at: float = 0.0
    last_rate: float = 0.0
    turn_base: int = -1  # where the last turn's decoded tokens begin (-1: none to take back)
    exchanges: list[Exchange] = field(default_factory=list)  # the turns the KV holds
    turn_starts: list[int] = field(default_factory=list)  # KV position of each exchange
    dropped_turns: int = 0  # turns shifted out of the KV (the transcript still shows them)
    shift_notice: Notice | None = None  # set by make_room, for the engine to hand out once
    thinking: ReasoningSplitter = field(default_factory=ReasoningSplitter)  # the last reply's

    def __post_init__(self) -> None:
        self.conversation.records_choices = True  # each reply token's odds, for the pane

    @property
    def generating(self) -> bool:
        return self.reply is not None

    def messages(self, exchanges: Sequence[Exchange], user: str | None = None) -> list[ChatMessage]:
        """The chat as messages: the system prompt, ``exchanges``, and a new ``user`` turn."""
        messages = []
        if self.config.system.strip():
            messages.append(ChatMessage("system", self.config.system))
        for exchange in exchanges:
            messages.append(ChatMessage("user", exchange.user))
            messages.append(ChatMessage("assistant", exchange.reply))
        if user is not None:
            messages.append(ChatMessage("user", user))
        return messages

    def prompt_text(self, exchanges: Sequence[Exchange], user: str | None = None) -> str:
        """The chat rendered through the template; with a ``user`` turn, up to the point where
        the model answers it (raises TemplateError when the template refuses the chat)."""
        return self.template.render(self.messages(exchanges, user), user is not None)

    def prompt_tokens(self, exchanges: Sequence[Exchange], user: str | None = None) -> list[int]:
        """:meth:`prompt_text`, tokenized as the model reads it."""
        text = self.prompt_text(exchanges, user)
        return self.conversation.executor.model.tokenize_prompt(text)

    def begin_reply(self, user_text: str, context_limit: int) -> None:
        """Queue the turn and open a reply; raises ContextFullError (queuing nothing) when the
        turn would not fit in ``context_limit`` tokens even after dropping old turns."""
        prompt = self.prompt_text(self.exchanges, user_text)
        target = self.conversation.executor.model.tokenize_prompt(prompt)
        room = min(
            max(self.config.max_tokens, int(context_limit * SHIFT_SHARE)), context_limit // 2
        )
        over = len(target) + room - context_limit
        if over > 0 and self.make_room(over, whole_history=True):
            target = self.prompt_tokens(self.exchanges, user_text)
        if len(target) >= context_limit:
            raise ContextFullError("context full: the turn does not fit")
        start = self._turn_start(self.exchanges, target)
        self.turn_base = self._sync(target)
        self.turn_starts.append(start)
        self.exchanges.append(Exchange(user_text))
        self.reply_base = len(target)
        self._open_reply(prompt)

    def _sync(self, target: Sequence[int]) -> int:
        """Make the conversation hold ``target``: keep the common prefix, rewind the rest, and
        queue what is new (at least the last token: its logits are needed). Returns where the
        queued tokens begin."""
        if not target:
            raise TemplateError("the chat template rendered nothing for this chat")
        conv = self.conversation
        conv.discard_pending()
        keep = min(common_prefix(conv.tokens, target), len(target) - 1)
        conv.rewind(conv.token_count - keep)
        conv.prompt(list(target[keep:]))
        return keep

    def _turn_start(self, before: Sequence[Exchange], target: Sequence[int]) -> int:
        """The position in ``target`` where the turn after ``before`` begins: the end of the
        chat rendered up to there, or of the shared system prompt for the first turn."""
        model = self.conversation.executor.model
        if before:
            try:
                head = self.prompt_tokens(before)
            except TemplateError:  # no boundary to cut at: the last known one
                return self.turn_starts[-1] if self.turn_starts else 0
            return max(common_prefix(head, target), self.turn_starts[-1] if self.turn_starts else 0)
        prefix = self.template.system_prefix(self.config.system)
        if prefix is not None:
            return common_prefix(model.tokenize_prompt(prefix), target)
        return 1 if target and model.add_bos and target[0] == model.bos_token else 0

    def _open_reply(self, prompt: str | None = None) -> None:
        """A reply to the last exchange; ``prompt`` is the text that asks for it (rendered
        again when not given: a regeneration, after a fork, a resume or a switch)."""
        self.reply = ReplyStream(
            self.conversation.executor.model,
            self.template.with_stops(self.config.stop),
            self.config.max_tokens,
            trims_lead=not self.config.raw_prompt,
        )
        if prompt is None:
            last = self.exchanges[-1]
            prompt = self.prompt_text(self.exchanges[:-1], last.user)
        markers = self.template.reasoning_markers
        self.thinking = ReasoningSplitter(markers, markers.opened_by(prompt))
        self.first_token_at = 0.0

    @property
    def _system_in_first_turn(self) -> bool:
        """The template folds the system prompt into the first user turn (Gemma's do)."""
        system = self.config.system
        return bool(system.strip()) and self.template.system_prefix(system) is None

    def make_room(self, needed: int, *, whole_history: bool = False) -> int:
        """Context shift: drop the oldest turns (at least ``needed`` tokens if possible) but
        keep the system prompt, and close the gap in the KV (shifted in place when llama.cpp
        can, else the kept tail is decoded again). Queued tokens stay queued. With
        ``whole_history`` every earlier turn may go (a new turn is about to start), else the
        turn being answered stays. Returns the number of tokens dropped (0: nothing could go).
        """
        conv = self.conversation
        starts = self.turn_starts
        first = 1 if self._system_in_first_turn else 0  # that turn holds the system prompt
        if len(starts) <= first:
            return 0
        keep = max(starts[first], 1 if conv.executor.model.add_bos else 0)
        end = conv.token_count
        cuts = [c for c in starts[first + 1 :] if keep < c <= end]
        if whole_history and end > keep:
            cuts.append(end)
        if not cuts:
            return 0
        cut = next((c for c in cuts if c - keep >= needed), cuts[-1])
        discard = cut - keep
        queued = conv.pending_tokens
        conv.discard_pending()
        conv.kv.remove(keep, discard)
        requeue = conv.pending_tokens + queued  # the tail, when it had to be decoded again
        conv.discard_pending()
        if requeue:
            conv.prompt(list(requeue))
        kept = [i for i in range(first, len(starts)) if starts[i] >= cut]
        dropped = len(starts) - first - len(kept)
        self.dropped_turns += dropped
        self.shift_notice = Notice(NoticeKind.TURNS_DROPPED, count=dropped)
        self.exchanges = [*self.exchanges[:first], *(self.exchanges[i] for i in kept)]
        self.turn_starts = [*starts[:first], *(starts[i] - discard for i in kept)]
        self.turn_base = self.turn_base - discard if self.turn_base >= cut else -1
        self.reply_base = max(self.reply_base - discard, 0) if self.reply_base >= cut else 0
        return discard

    def state(self) -> TurnState:
        """The turn state, as a value (a fork or a saved session gets its own copy)."""
        return TurnState(
            reply_base=self.reply_base,
            turn_base=self.turn_base,
            turn_starts=tuple(self.turn_starts),
            exchanges=tuple(self.exchanges),
            dropped_turns=self.dropped_turns,
        )

    def context(self) -> ChatContext:
        """What the KV holds now (see :class:`ChatContext`)."""
        conv = self.conversation
        try:
            rendered = tuple(self.prompt_tokens(self.exchanges))
        except PanechatError:
            rendered = ()
        held = zip(self.exchanges, self.turn_starts, strict=True)
        return ChatContext(
            tuple(HeldTurn(e.user, e.reply, start) for e, start in held),
            tuple(conv.tokens),
            rendered,
            conv.executor.seq_pos_max(conv.sequence_id) + 1,
            self.reply_base,
            self.dropped_turns,
        )

    def restore_state(self, state: TurnState) -> None:
        self.reply_base = state.reply_base
        self.turn_base = state.turn_base
        self.turn_starts = list(state.turn_starts)
        self.exchanges = list(state.exchanges)
        self.dropped_turns = state.dropped_turns

    def replay(self, messages: Sequence[tuple[str, str]]) -> int:
        """Queue a saved transcript for decoding (when its KV state cannot be loaded), with
        the positions of its turns, as if it had been typed. Returns the tokens queued."""
        self.adopt(messages, decode=True)
        return self.conversation.pending_count

    def adopt(self, messages: Sequence[tuple[str, str]], *, decode: bool) -> None:
        """Make ``messages`` the chat's history (another branch of it, a saved transcript),
        with the positions of its turns. With ``decode``, the KV is brought in step at once:
        the tokens it shares with the new history stay, the rest is queued; else the next
        turn's :meth:`begin_reply` does that (an edited turn: one decode, not two)."""
        turns = [
            Exchange(e.user, self.template.reply_content(e.reply) if e.reply.strip() else "")
            for e in exchanges(messages)
        ]
        self.dropped_turns = 0
        if not turns:
            self.exchanges, self.turn_starts = [], []
            self.reply_base, self.turn_base = 0, -1
            if decode:  # back to the (shared) system prompt, or to nothing
                conv = self.conversation
                conv.discard_pending()
                conv.rewind(conv.token_count - self._turn_start([], conv.tokens))
            return
        target = self.prompt_tokens(turns)
        limit = self.conversation.executor.n_ctx_seq * 3 // 4  # room left to answer
        while len(target) > limit and len(turns) > 1:  # a smaller context: oldest go
            turns = turns[1:]
            self.dropped_turns += 1
            target = self.prompt_tokens(turns)
        last = turns[-1]
        asked = self.prompt_tokens(turns[:-1], last.user)
        self.turn_starts = []
        for i in range(len(turns)):  # each start after the one before (_turn_start)
            self.turn_starts.append(self._turn_start(turns[:i], target))
        self.exchanges = turns
        self.turn_base = self.turn_starts[-1]
        self.reply_base = common_prefix(asked, target)
        if self.reply_base < len(asked):  # the template renders the last question otherwise
            self.reply_base = 0
        if decode:
            self._sync(target)

    def continue_reply(
        self, history: Sequence[tuple[str, str]], stats: Sequence[TokenStat], context_limit: int
    ) -> Split:
        """A new version of the reply to ``history``'s last user turn, begun with the tokens
        ``stats`` (a reply's first ones, the last one the model nearly chose): the KV keeps
        what it shares with that, the rest is queued, and sampling goes on after it. Returns
        the prefix's text, the reply's first. Checks everything before the KV is touched:
        each token must read as it did when it was written, so a reply another model wrote
        (renamed in the config, or another file under the same name) is branched only where
        the vocabularies agree."""
        conv = self.conversation
        model = conv.executor.model
        prefix = [s.token for s in stats]
        if not prefix:
            raise PanechatError("no tokens to begin the reply with — choose a token to branch at")
        for i, stat in enumerate(stats):
            if not 0 <= stat.token < model.n_vocab or piece_text(model, stat.token) != stat.piece:
                raise PanechatError(
                    f"these tokens are not this model's (token {i + 1} of the reply, "
                    f"{stat.piece!r}, is another token here) — branch at a token of a reply "
                    "this model wrote"
                )
        turns = exchanges(history)
        if not turns or turns[-1].reply:
            raise PanechatError("a reply goes on from a user turn")
        prompt = self.prompt_text(turns[:-1], turns[-1].user)
        asked = conv.executor.model.tokenize_prompt(prompt)
        if len(asked) + len(prefix) >= context_limit:
            raise ContextFullError("context full: the reply does not fit")
        self.adopt(history, decode=False)
        self.reply_base = len(asked)
        self._sync([*asked, *prefix])
        conv.sampling = self.config.sampling  # a fresh sampler, as a regeneration gets
        self._open_reply(prompt)
        text = Split("", "")
        for token in prefix:
            conv.accept(token)  # the repetition penalties count the prefix too
            split = self.feed(token)
            text = Split(text.reasoning + split.reasoning, text.answer + split.answer)
        return text

    def feed(self, token: int) -> Split:
        """A sampled token in; the reply's new text out, its reasoning apart from its answer."""
        assert self.reply is not None
        if not self.first_token_at:
            self.first_token_at = time.perf_counter()
        return self.thinking.feed(self.reply.feed(token))

    @property
    def tokens_per_second(self) -> float:
        if self.reply is None or not self.first_token_at:
            return self.last_rate
        elapsed = time.perf_counter() - self.first_token_at
        return self.reply.token_count / elapsed if elapsed > 0 else 0.0

    def show_reply_so_far(self) -> None:
        """Write the streaming reply's text so far into the tree (each frame: a view that
        follows the tree, or a model's process that dies, loses nothing it showed)."""
        if self.reply_message is not None:
            text = self.thinking.record()
            if text != self.tree[self.reply_message].text:
                self.tree.set_text(self.reply_message, text)

    def end_reply(self, reason: StopReason) -> Split:
        """Close the reply: drop undecoded tokens, rewind what the user never saw (a stop
        string), and keep the reply as written in the chat's history and its tree, with why
        it ended (the next turn decodes whatever of it the KV lacks). Returns any last text
        to show."""
        reply = self.reply
        assert reply is not None
        conv = self.conversation
        last = self.thinking.feed(reply.cancel())  # cancel: no-op if the reply ended itself
        rest = self.thinking.flush()
        tail = Split(last.reasoning + rest.reasoning, last.answer + rest.answer)
        self.last_rate = self.tokens_per_second
        self.reply = None
        if self.reply_message is not None:
            unshown = reply.token_count - reply.tokens_shown  # a stop string's tokens
            self.tree.finish(self.reply_message, self.thinking.record(), reason, unshown)
            self.reply_message = None
        if self.exchanges:
            self.exchanges[-1] = Exchange(self.exchanges[-1].user, reply.written)
        if conv.token_count < self.reply_base:
            # The turn's prompt is still being decoded: let it finish, with an empty reply.
            return tail
        conv.discard_pending()
        rewind, _ = reply.settle(conv.token_count - self.reply_base)
        conv.rewind(rewind)
        return tail

    def fork(self, chat_id: str, config: ChatConfig) -> ChatSession:
        """A session for a new pane continuing from this one's current point: the new
        conversation shares this one's KV cells (nothing is decoded again) and samples with
        ``config.sampling`` (a fresh sampler, so replies can differ); its tree is the branch
        shown here."""
        branch = ChatSession(
            chat_id,
            config,
            self.conversation.fork(config.sampling),
            self.template,
            ChatTree.along(self.tree.path()),
        )
        branch.restore_state(self.state())
        return branch

    @property
    def can_regenerate(self) -> bool:
        return (
            not self.generating
            and 0 <= self.turn_base < self.reply_base <= self.conversation.token_count
        )

    def regenerate(self) -> None:
        """Forget the last reply and start another from the same point.

        The KV is rewound to before the last user turn and the turn's tokens are queued
        again, the same chunk as the first time: llama.cpp's CPU kernels give logits that
        depend (slightly) on how a batch is cut, so re-decoding only the last token could
        change the reply under a fixed seed. The sampler starts afresh from the pane's
        settings (a fixed seed gives the same reply again; the default random seed a new one).
        """
        if not self.can_regenerate:
            raise PanechatError("there is no finished reply to regenerate in this chat")
        conv = self.conversation
        turn = conv.tokens[self.turn_base : self.reply_base]
        conv.rewind(conv.token_count - self.turn_base)
        conv.prompt(turn)
        conv.sampling = self.config.sampling
        self.exchanges[-1] = Exchange(self.exchanges[-1].user)
        self._open_reply()

    def reset(self, conversation: Conversation) -> None:
        """Start over on a fresh conversation (clear)."""
        self.conversation = conversation
        conversation.records_choices = True
        self.turns.clear()
        self.tree = ChatTree()
        self.reply, self.reply_message = None, None
        self.last_rate = 0.0
        self.reply_base, self.turn_base = 0, -1
        self.exchanges, self.turn_starts, self.dropped_turns = [], [], 0
