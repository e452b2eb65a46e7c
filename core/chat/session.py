"""The engine's side of one chat: its conversation, queued turns and the reply in flight."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from core import ChatMessage, ChatTemplate, Conversation, PanechatError, ReplyStream
from core.chat.config import ChatConfig
from core.chat.notices import Notice, NoticeKind
from core.chat.state import TurnState

#: Share of the context a shift frees at least, so chats do not shift on every turn.
SHIFT_SHARE = 0.25


class ContextFullError(PanechatError):
    """The chat's conversation has no room for the next turn."""


@dataclass(slots=True)
class ChatSession:
    chat_id: str
    config: ChatConfig
    conversation: Conversation
    template: ChatTemplate
    turns: deque[str] = field(default_factory=deque)
    reply: ReplyStream | None = None
    carry: str = ""  # shown reply text that is not in the KV cache yet
    replied_before: bool = False
    reply_base: int = 0  # token count where the current reply starts
    first_token_at: float = 0.0
    last_rate: float = 0.0
    # Where the last user turn began, to take it back (edit and resend): the token count
    # before its prompt, and the carried text and reply state at that point.
    turn_base: int = -1
    turn_carry: str = ""
    turn_replied_before: bool = False
    last_user_text: str = ""
    turn_starts: list[int] = field(default_factory=list)  # KV position where each turn begins
    dropped_turns: int = 0  # turns shifted out of the KV (the transcript still shows them)
    shift_notice: Notice | None = None  # set by make_room, for the engine to hand out once

    @property
    def generating(self) -> bool:
        return self.reply is not None

    def turn_text(self, user_text: str) -> str:
        """The prompt text for the next user turn, continuing what the KV cache holds."""
        if self.conversation.token_count == 0 and not self.conversation.requires_inference:
            return self.first_turn_text(user_text)
        return self.carry + self.template.next_turn(user_text, after_reply=self.replied_before)

    def first_turn_text(self, user_text: str) -> str:
        """The whole opening of a chat: the system prompt (if any) and the first user turn."""
        messages = []
        if self.config.system.strip():
            messages.append(ChatMessage("system", self.config.system))
        messages.append(ChatMessage("user", user_text))
        return self.template.render(messages)

    def begin_reply(self, user_text: str, context_limit: int) -> None:
        """Queue the turn and open a reply; raises ContextFullError (queuing nothing, keeping
        the carried text) when the turn would not fit in ``context_limit`` tokens."""
        text = self.turn_text(user_text)
        conv = self.conversation
        conv.prompt(text)
        room = max(self.config.max_tokens, int(context_limit * SHIFT_SHARE))
        over = conv.token_count + conv.pending_count + min(room, context_limit // 2) - context_limit
        if over > 0:
            self.make_room(over, whole_history=True)
            if conv.token_count + conv.pending_count >= context_limit:
                conv.discard_pending()
                raise ContextFullError("context full: the turn does not fit")
        self.turn_starts.append(conv.token_count)
        self.turn_base, self.turn_carry = conv.token_count, self.carry
        self.turn_replied_before, self.last_user_text = self.replied_before, user_text
        self.carry = ""
        self.reply_base = self.conversation.token_count + self.conversation.pending_count
        self._open_reply()

    def _open_reply(self) -> None:
        self.reply = ReplyStream(
            self.conversation.executor.model,
            self.template.with_stops(self.config.stop),
            self.config.max_tokens,
        )
        self.first_token_at = 0.0

    def make_room(self, needed: int, *, whole_history: bool = False) -> int:
        """Context shift: drop the oldest turns (at least ``needed`` tokens if possible) but
        keep the system prompt, and close the gap in the KV (shifted in place when llama.cpp
        can, else the kept tail is decoded again). Queued tokens stay queued. With
        ``whole_history`` every earlier turn may go (a new turn is about to start), else the
        turn being answered stays. Returns the number of tokens dropped (0: nothing could go).
        """
        conv = self.conversation
        starts = self.turn_starts
        # With the system prompt folded into the first user turn (Gemma), that turn stays.
        first = 1 if self.template.system_in_user and self.config.system.strip() else 0
        if len(starts) <= first:
            return 0
        keep = max(starts[first], 1 if conv.executor.model.add_bos else 0)
        cuts = [c for c in starts[first + 1 :] if c > keep]
        if whole_history and conv.token_count > keep:
            cuts.append(conv.token_count)
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
        kept = [s for s in starts if s >= cut]
        dropped = len(starts) - first - len(kept)
        self.dropped_turns += dropped
        self.shift_notice = Notice(NoticeKind.TURNS_DROPPED, count=dropped)
        self.turn_starts = [*starts[:first], *(s - discard for s in kept)]
        self.turn_base = self.turn_base - discard if self.turn_base >= cut else -1
        self.reply_base = max(self.reply_base - discard, 0) if self.reply_base >= cut else 0
        return discard

    def state(self) -> TurnState:
        """The turn state, as a value (a fork or a saved session gets its own copy)."""
        return TurnState(
            carry=self.carry,
            replied_before=self.replied_before,
            reply_base=self.reply_base,
            turn_base=self.turn_base,
            turn_carry=self.turn_carry,
            turn_replied_before=self.turn_replied_before,
            last_user_text=self.last_user_text,
            turn_starts=tuple(self.turn_starts),
            dropped_turns=self.dropped_turns,
        )

    def restore_state(self, state: TurnState) -> None:
        self.carry = state.carry
        self.replied_before = state.replied_before
        self.reply_base = state.reply_base
        self.turn_base = state.turn_base
        self.turn_carry = state.turn_carry
        self.turn_replied_before = state.turn_replied_before
        self.last_user_text = state.last_user_text
        self.turn_starts = list(state.turn_starts)
        self.dropped_turns = state.dropped_turns

    def replay(self, messages: list[tuple[str, str]]) -> int:
        """Queue a saved transcript for decoding (when its KV state cannot be loaded), turn by
        turn as it was first prompted, so turn starts are known again. Returns the tokens."""
        conv = self.conversation
        model = conv.executor.model
        tokens: list[int] = list(conv.tokens)  # a shared system prompt may be there already
        pending = list(conv.pending_tokens)
        conv.discard_pending()
        tokens += pending
        replied = False
        space = " " if not self.template.assistant_prefix[-1:].isspace() else ""
        for role, text in messages:
            if role == "user":
                if not tokens:
                    new = model.tokenize(self.first_turn_text(text), add_special=model.add_bos)
                else:
                    piece = self.template.next_turn(text, after_reply=replied)
                    new = model.tokenize(piece, add_special=False)
                self.turn_starts.append(len(tokens))
                self.turn_base, self.last_user_text = len(tokens), text
                tokens += new
                self.reply_base, replied = len(tokens), False
            elif role == "assistant" and text.strip():
                tokens += model.tokenize(space + text.strip(), add_special=False)
                replied = True
        self.replied_before = replied
        queued = tokens[conv.token_count :]
        if queued:
            conv.prompt(queued)
        return len(queued)

    def feed(self, token: int) -> str:
        assert self.reply is not None
        if not self.first_token_at:
            self.first_token_at = time.perf_counter()
        return self.reply.feed(token)

    @property
    def tokens_per_second(self) -> float:
        if self.reply is None or not self.first_token_at:
            return self.last_rate
        elapsed = time.perf_counter() - self.first_token_at
        return self.reply.token_count / elapsed if elapsed > 0 else 0.0

    def end_reply(self) -> str:
        """Close the reply: drop undecoded tokens, rewind what the user never saw, and keep the
        rest of the shown text to prompt with the next turn. Returns any last text to show."""
        assert self.reply is not None
        conv = self.conversation
        tail = self.reply.cancel()  # no-op if the reply already ended by itself
        self.last_rate = self.tokens_per_second
        if conv.token_count < self.reply_base:
            # The turn's prompt is still being decoded: let it finish, with an empty reply.
            self.replied_before = True
            self.reply = None
            return tail
        conv.discard_pending()
        rewind, carry = self.reply.settle(conv.token_count - self.reply_base)
        conv.rewind(rewind)
        self.carry = carry
        self.replied_before = True
        self.reply = None
        return tail

    def fork(self, chat_id: str, config: ChatConfig) -> ChatSession:
        """A session for a new pane continuing from this one's current point: the new
        conversation shares this one's KV cells (nothing is decoded again) and samples with
        ``config.sampling`` (a fresh sampler, so replies can differ)."""
        branch = ChatSession(
            chat_id, config, self.conversation.fork(config.sampling), self.template
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
        self.carry = ""
        self._open_reply()

    def take_back_last_turn(self) -> str:
        """Rewind to before the last user turn (its reply goes too) and return its text, for
        the user to edit and send again."""
        conv = self.conversation
        if self.generating or self.turn_base < 0 or conv.token_count < self.turn_base:
            raise PanechatError("there is no finished turn to edit in this chat")
        conv.rewind(conv.token_count - self.turn_base)
        self.carry, self.replied_before = self.turn_carry, self.turn_replied_before
        self.reply_base, self.turn_base = 0, -1  # one step back only
        if self.turn_starts:
            self.turn_starts.pop()
        return self.last_user_text

    def reset(self, conversation: Conversation) -> None:
        """Start over on a fresh conversation (clear)."""
        self.conversation = conversation
        self.turns.clear()
        self.reply = None
        self.carry = ""
        self.replied_before = False
        self.last_rate = 0.0
        self.turn_base, self.turn_carry, self.turn_replied_before = -1, "", False
        self.turn_starts, self.dropped_turns = [], 0
