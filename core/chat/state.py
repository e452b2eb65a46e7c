"""A pane's decode state as a value: where its turns stand in its KV cache. A fork copies it;
a saved session keeps it, with the file of KV cells, to continue without decoding again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.chat.tree import TreeChange


@dataclass(frozen=True, slots=True)
class Exchange:
    """One user turn the KV cache holds, and the reply to it as the model wrote it ("" while
    it streams, or when it was stopped before a word)."""

    user: str
    reply: str = ""


@dataclass(frozen=True, slots=True)
class TurnState:
    """What a pane knows beyond its tokens (see :class:`core.chat.session.ChatSession`)."""

    reply_base: int = 0  # token count where the current reply starts
    turn_base: int = -1  # where the last turn's decoded tokens begin (-1: none to take back)
    turn_starts: tuple[int, ...] = ()  # KV position where each exchange begins
    exchanges: tuple[Exchange, ...] = ()  # the turns the KV holds, oldest first
    dropped_turns: int = 0  # turns shifted out of the KV (the transcript still shows them)


@dataclass(frozen=True, slots=True)
class SavedState:
    """What a pane leaves on quit: its turn state, the file holding its KV cells
    (``Conversation.save``), and how many tokens those cells hold."""

    turns: TurnState
    kv_path: str
    tokens: int

    def to_json(self) -> str:
        """One flat JSON object: the turn fields ("exchanges" as [user, reply] pairs), "kv"
        and "tokens" (store schema 1)."""
        turns = asdict(self.turns)
        turns["exchanges"] = [[e.user, e.reply] for e in self.turns.exchanges]
        return json.dumps({**turns, "kv": self.kv_path, "tokens": self.tokens})

    @classmethod
    def from_json(cls, text: str) -> SavedState | None:
        """The saved state, or None when it is damaged (the chat is then read again)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        kv, tokens = data.get("kv"), data.get("tokens")
        if not isinstance(kv, str) or not kv or type(tokens) is not int:
            return None
        turns = _turn_state(data)
        if turns is None or not _consistent(turns, tokens):
            return None
        return cls(turns, kv, tokens)


@dataclass(frozen=True, slots=True)
class ChatSnapshot:
    """What ``ChatEngine.snapshot`` leaves of a chat: its decode state (None: nothing worth
    keeping, the chat is read again on resume), and what its tree gained since the last
    frame (a reply cut short at quit, which belongs in the saved transcript)."""

    state: SavedState | None
    tree_change: TreeChange | None = None


def _consistent(turns: TurnState, tokens: int) -> bool:
    """Positions that fit the saved tokens: a state that does not would break a later shift."""
    starts = list(turns.turn_starts)
    return (
        tokens >= 0
        and starts == sorted(starts)
        and all(0 <= start <= tokens for start in starts)
        and -1 <= turns.turn_base <= tokens
        and 0 <= turns.reply_base <= tokens
        and turns.dropped_turns >= 0
        and len(turns.exchanges) == len(starts)
    )


def _exchanges(value: Any) -> tuple[Exchange, ...] | None:
    """[user, reply] pairs of strings as exchanges; None if ``value`` is anything else."""
    if not isinstance(value, list):
        return None
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(p) is str for p in pair)):
            return None
        pairs.append(Exchange(pair[0], pair[1]))
    return tuple(pairs)


def _turn_state(data: dict[str, Any]) -> TurnState | None:
    """The turn fields present in ``data``, each of its field's type; None if one is not.
    A state saved before exchanges were kept has none, and does not match its turn starts."""
    values: dict[str, Any] = {}
    for f in fields(TurnState):
        if f.name not in data:
            continue
        value, default = data[f.name], f.default
        if f.name == "exchanges":
            value = _exchanges(value)
            if value is None:
                return None
        elif isinstance(default, tuple):
            if not isinstance(value, list) or any(type(v) is not int for v in value):
                return None
            value = tuple(value)
        elif type(value) is not type(default):
            return None
        values[f.name] = value
    return TurnState(**values)


def exchanges(messages: Iterable[tuple[str, str]]) -> list[Exchange]:
    """(role, text) messages as the turns a model reads: each user message with the reply
    after it ("" when none came)."""
    turns: list[Exchange] = []
    for role, text in messages:
        if role == "user":
            turns.append(Exchange(text))
        elif role == "assistant" and turns and not turns[-1].reply:
            turns[-1] = Exchange(turns[-1].user, text)
    return turns
