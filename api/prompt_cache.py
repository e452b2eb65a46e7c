"""Finished requests' chats, kept open with their KV cells so that the next turn of the same
conversation (a chat client sends the whole conversation each time) decodes only what is new.

A request whose earlier messages are exactly a kept chat's messages, on the same model with
the same system prompt, is answered by a branch of that chat (``ForkChat``: it shares the
chat's cells) and the kept chat is closed. The kept chats are bounded by sequences (a new
request's chat always gets one: the least recently used kept chat is closed for it) and by
tokens (at most half the context), least recently used out first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

Messages = tuple[tuple[str, str], ...]


def comparable(messages: Iterable[tuple[str, str]]) -> Messages:
    """Messages as a kept chat is matched by: clients trim the replies they send back."""
    return tuple((role, text.strip()) for role, text in messages)


@dataclass(frozen=True, slots=True)
class KeptChat:
    chat_id: str
    model: str  # the decode loop's name for it
    system: str
    messages: Messages  # every message, the last reply included (as ``comparable`` gives)
    tokens: int  # what its KV holds, about: the last prompt and reply


class PromptCache:
    """The kept chats, least recently used first; ``max_tokens`` 0 keeps none."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._kept: OrderedDict[str, KeptChat] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, chat_id: object) -> bool:
        return chat_id in self._kept

    @property
    def tokens(self) -> int:
        return sum(chat.tokens for chat in self._kept.values())

    def take(self, model: str, system: str, messages: Messages) -> KeptChat | None:
        """The kept chat whose messages are ``messages``, taken out (its caller branches it
        and closes it); None when there is none."""
        for chat in self._kept.values():
            if (chat.model, chat.system, chat.messages) == (model, system, messages):
                del self._kept[chat.chat_id]
                self.hits += 1
                return chat
        self.misses += 1
        return None

    def keep(self, chat: KeptChat) -> list[str]:
        """Keep ``chat`` (the most recently used); returns the chats to close for it to fit."""
        if chat.tokens > self.max_tokens:
            return [chat.chat_id]
        closing = [  # one kept chat per conversation: a newer one replaces it
            old.chat_id
            for old in self._kept.values()
            if (old.model, old.system, old.messages) == (chat.model, chat.system, chat.messages)
        ]
        for chat_id in closing:
            del self._kept[chat_id]
        self._kept[chat.chat_id] = chat
        while self.tokens > self.max_tokens:
            closing.append(self._kept.popitem(last=False)[0])
        return closing

    def drop(self, chat_id: str) -> bool:
        """Forget a kept chat (its KV changed under it: turns shifted out); whether it was."""
        return self._kept.pop(chat_id, None) is not None

    def oldest(self) -> str | None:
        """Take out the least recently used kept chat, to close it; None when none is kept."""
        if not self._kept:
            return None
        return self._kept.popitem(last=False)[0]
