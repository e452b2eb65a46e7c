"""A chat as a tree: every edit of a user message and every regenerated reply is a sibling
branch, and the chat shows (and the model holds) one path from the first message to a leaf."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True, slots=True)
class TreeChange:
    """What changed in a chat's tree since the last change was taken, for a view (or a
    store) that follows the engine's tree: copies of the messages added or changed, parents
    before children, and the path shown (its last message). ``reset``: the tree was replaced
    (a new chat, a clear, a fork, a restore): ``messages`` is the whole of it."""

    messages: tuple[TreeMessage, ...] = ()
    head: int | None = None
    reset: bool = False


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
    # What take_change() hands out next: a new tree goes out whole, then what changed.
    _changed: dict[int, None] = field(default_factory=dict, init=False)
    _reset: bool = field(default=True, init=False)
    _head_taken: int | None = field(default=None, init=False)

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
        self._changed[message_id] = None
        return message_id

    def move(self, message_id: int, parent: int | None) -> None:
        """Put ``message_id`` after ``parent`` instead (a turn queued behind a reply that has
        just started: it follows that reply); the path shown goes on through it."""
        message = self._messages[message_id]
        self._detach(message)
        message.parent = parent
        self._children.setdefault(parent, []).append(message_id)
        self._chosen[parent] = message_id
        self._changed[message_id] = None

    def _detach(self, message: TreeMessage) -> None:
        siblings = self._children[message.parent]
        siblings.remove(message.id)
        if self._chosen.get(message.parent) == message.id:
            if siblings:
                self._chosen[message.parent] = siblings[-1]
            else:
                del self._chosen[message.parent]

    def __getitem__(self, message_id: int) -> TreeMessage:
        return self._messages[message_id]

    def get(self, message_id: int | None) -> TreeMessage | None:
        return self._messages.get(message_id) if message_id is not None else None

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
        self._changed[message_id] = None

    def finish(self, message_id: int, text: str, stop: StopReason, unshown: int = 0) -> None:
        """A reply ended: its whole text, why, and its tokens less the last ``unshown``
        (a stop string's, which spell no text)."""
        message = self._messages[message_id]
        message.text, message.stop = text, stop
        if unshown:
            del message.tokens[len(message.tokens) - unshown :]
        self._changed[message_id] = None

    def take_change(self, streaming: int | None = None) -> TreeChange | None:
        """What changed since the last call (the first: the whole tree), or None. The reply
        ``streaming`` goes without its tokens: they come whole when it ends."""
        if self._reset:
            change = self.whole(streaming)
        elif self._changed or self.head != self._head_taken:
            change = TreeChange(self._copies(self._changed, streaming), self.head)
        else:
            return None
        self._changed, self._reset, self._head_taken = {}, False, self.head
        return change

    def whole(self, streaming: int | None = None) -> TreeChange:
        """The whole tree as a change (another tree that applies it becomes this one)."""
        return TreeChange(self._copies(self._messages, streaming), self.head, reset=True)

    def _copies(self, ids: Iterable[int], streaming: int | None) -> tuple[TreeMessage, ...]:
        return tuple(
            replace(m, tokens=[] if m.id == streaming else list(m.tokens))
            for m in (self._messages[i] for i in ids)  # in the order written: parents first
        )

    def apply(self, change: TreeChange) -> None:
        """Follow another tree's change (``take_change`` there): the messages and the path
        shown become that tree's."""
        if change.reset:
            self._messages.clear()
            self._children.clear()
            self._chosen.clear()
        moved = change.reset or change.head != self.head
        for message in change.messages:
            here = self._messages.get(message.id)
            if here is None:
                self._attach(message.parent, message.role, message.text, message.id)
                here, moved = self._messages[message.id], True
            elif here.parent != message.parent:
                self.move(here.id, message.parent)
                moved = True
            here.text, here.tokens = message.text, list(message.tokens)
            here.model, here.stop = message.model, message.stop
        if change.head is None:
            self.head = None
        elif moved:
            self.cut_at(change.head)
        self._changed, self._reset, self._head_taken = {}, False, self.head

    def cut_at(self, message_id: int) -> None:
        """End the path shown at ``message_id`` (a reply about to get another version: the
        new one follows it), keeping what lies below it as branches."""
        self.show(message_id)
        self.head = message_id

    def messages(self, leaf: int | None = None) -> list[tuple[str, str]]:
        """The path as (role, text) pairs, what the engine and the exports read."""
        return [(m.role.value, m.text) for m in self.path(leaf)]
