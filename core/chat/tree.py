"""A chat as a tree: every edit of a user message and every regenerated reply is a sibling
branch, and the chat shows (and the model holds) one path from the first message to a leaf."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from core.chat.token_stats import TokenStat
from core.text.reply_stream import StopReason


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(slots=True)
class TreeMessage:
    """One message: ``parent`` is the message it follows (None: the chat's first)."""

    id: int
    parent: int | None
    role: Role
    text: str = ""  # a reply's whole text, its reasoning between its markers
    tokens: list[TokenStat] = field(default_factory=list)  # a reply's tokens, with their odds
    model: str | None = None  # which model wrote a reply ("" the default; None: not known)
    stop: StopReason | None = None  # why a reply ended (None: streaming, or not known)


@dataclass(frozen=True, slots=True)
class Siblings:
    """Where a message stands among the messages that follow the same one: ``index`` of
    ``count``, from 1 (the pane shows "2/3")."""

    index: int
    count: int


@dataclass(slots=True)
class ChatTree:
    """Messages by id, each message's children in the order they were written, and which
    child each message continues with on the path shown (the last one visited): paging to a
    sibling and back returns to the same branch below it."""

    head: int | None = None  # the last message of the path shown (None: an empty chat)
    _messages: dict[int, TreeMessage] = field(default_factory=dict, init=False)
    _children: dict[int | None, list[int]] = field(default_factory=dict, init=False)
    _chosen: dict[int | None, int] = field(default_factory=dict, init=False)
    _next_id: int = field(default=1, init=False)

    @classmethod
    def linear(cls, messages: Iterable[tuple[str, str]]) -> ChatTree:
        """A one-branch tree (a fork's copy of another pane's path)."""
        tree = cls()
        for role, text in messages:
            tree.add(tree.head, Role(role), text)
        return tree

    @classmethod
    def along(cls, path: Sequence[TreeMessage]) -> ChatTree:
        """A one-branch tree holding copies of ``path``'s messages, their ids, odds and
        models kept (a forked chat's copy of its source's branch)."""
        tree = cls()
        for message in path:
            node = tree.add(tree.head, message.role, message.text, message_id=message.id)
            node.tokens, node.model, node.stop = list(message.tokens), message.model, message.stop
        return tree

    def copy(self) -> ChatTree:
        """A copy to read (or change) apart from this tree: what the engine hands a caller.
        Its messages and lists are its own; the token odds, frozen, are shared."""
        frozen = {id(stat): stat for m in self._messages.values() for stat in m.tokens}
        return copy.deepcopy(self, frozen)

    def graft(self, messages: Iterable[tuple[str, str]]) -> int | None:
        """The last message of the branch that reads as ``messages`` (role, text), made of the
        messages already here where they match and new ones where not (the branch last
        visited preferred among equal siblings); the branch is not shown. None: no messages."""
        node: int | None = None
        for role, text in messages:
            matches = [
                i
                for i in self._children.get(node, [])
                if self._messages[i].role == role and self._messages[i].text == text
            ]
            if not matches:
                node = self._attach(node, Role(role), text)
            else:
                chosen = self._chosen.get(node)
                node = chosen if chosen in matches else matches[-1]
        return node

    def add(
        self, parent: int | None, role: Role, text: str = "", *, message_id: int | None = None
    ) -> TreeMessage:
        """A new message after ``parent``, which becomes the path's last (the head).
        ``message_id`` keeps a saved message's id (ids given must be new)."""
        if parent is not None and parent not in self._messages:
            raise KeyError(f"no message {parent} in this chat")
        if message_id is not None and message_id in self._messages:
            raise KeyError(f"message {message_id} is already in this chat")
        message = self._messages[self._attach(parent, role, text, message_id)]
        self._chosen[parent] = message.id
        self.head = message.id
        return message

    def _attach(
        self, parent: int | None, role: Role, text: str, message_id: int | None = None
    ) -> int:
        """A new message after ``parent``, not shown."""
        if message_id is None:
            message_id = self._next_id
        self._next_id = max(self._next_id, message_id + 1)
        self._messages[message_id] = TreeMessage(message_id, parent, role, text)
        self._children.setdefault(parent, []).append(message_id)
        return message_id

    def __getitem__(self, message_id: int) -> TreeMessage:
        return self._messages[message_id]

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._messages

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[TreeMessage]:
        return iter(self._messages.values())

    def children(self, message_id: int | None) -> list[TreeMessage]:
        return [self._messages[i] for i in self._children.get(message_id, [])]

    def path(self, leaf: int | None = None) -> list[TreeMessage]:
        """The messages from the first to ``leaf`` (default: the head)."""
        node = self.head if leaf is None else leaf
        path = []
        while node is not None:
            message = self._messages[node]
            path.append(message)
            node = message.parent
        return path[::-1]

    def leaves(self) -> list[TreeMessage]:
        """Every branch's last message, in the order the branches were written."""
        return [m for m in self._messages.values() if not self._children.get(m.id)]

    def siblings(self, message_id: int) -> Siblings:
        ids = self._children[self._messages[message_id].parent]
        return Siblings(ids.index(message_id) + 1, len(ids))

    def leaf_below(self, message_id: int) -> int:
        """The last message of the branch that goes on from ``message_id``, following the
        child last visited at each step."""
        node = message_id
        while (child := self._chosen.get(node)) is not None:
            node = child
        return node

    def show(self, message_id: int) -> int:
        """Make the path go through ``message_id`` (and on below it as last visited); returns
        the new head."""
        if message_id not in self._messages:
            raise KeyError(f"no message {message_id} in this chat")
        node: int | None = message_id
        while node is not None:
            parent = self._messages[node].parent
            self._chosen[parent] = node
            node = parent
        self.head = self.leaf_below(message_id)
        return self.head

    def sibling(self, message_id: int, step: int) -> int | None:
        """The sibling ``step`` places before or after ``message_id``; None past either end."""
        ids = self._children[self._messages[message_id].parent]
        index = ids.index(message_id) + step
        return ids[index] if 0 <= index < len(ids) else None

    def set_text(self, message_id: int, text: str) -> None:
        self._messages[message_id].text = text

    def cut_at(self, message_id: int) -> None:
        """End the path shown at ``message_id`` (a reply about to get another version: the
        new one follows it), keeping what lies below it as branches."""
        self.show(message_id)
        self.head = message_id

    def messages(self, leaf: int | None = None) -> list[tuple[str, str]]:
        """The path as (role, text) pairs, what the engine and the exports read."""
        return [(m.role.value, m.text) for m in self.path(leaf)]
