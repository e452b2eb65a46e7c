"""Each chat's tree, changed as the engine changes it (core's ChatTree), and the frame's delta
that carries each change: for tests that drive a recorder or a pane without decoding."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from core import StopReason
from core.chat import ChatDelta, ChatTree, Role, TokenStat, TreeMessage


class ChatTrees:
    def __init__(self) -> None:
        self.trees: defaultdict[str, ChatTree] = defaultdict(ChatTree)
        self.streaming: dict[str, int] = {}

    def _delta(self, chat_id: str, **fields: object) -> ChatDelta:
        tree = self.trees[chat_id]
        change = tree.take_change(self.streaming.get(chat_id))
        delta = ChatDelta(tree_changes=[change] if change else [], **fields)  # type: ignore[arg-type]
        return delta

    def user(self, chat_id: str, text: str) -> ChatDelta:
        """A turn the engine takes, after the last message."""
        tree = self.trees[chat_id]
        tree.add(tree.head, Role.USER, text)
        return self._delta(chat_id)

    def edit(self, chat_id: str, message_id: int, text: str) -> ChatDelta:
        """A new version of user message ``message_id``, its sibling."""
        tree = self.trees[chat_id]
        tree.add(tree[message_id].parent, Role.USER, text)
        return self._delta(chat_id)

    def reply(self, chat_id: str, text: str = "", *, replacing: bool = False) -> ChatDelta:
        """A reply starts after the last message (``replacing``: a regeneration, a new
        version of the last reply), with its first ``text``."""
        tree = self.trees[chat_id]
        parent = tree.head
        if replacing and parent is not None:
            parent = tree[parent].parent
        message = tree.add(parent, Role.ASSISTANT, text)
        message.model = ""
        self.streaming[chat_id] = message.id
        return self._delta(
            chat_id, message_id=message.id, text=text, started=True, replaces_last=replacing
        )

    def stream(self, chat_id: str, text: str) -> ChatDelta:
        """More of the reply: the engine's tree holds its text so far."""
        message_id = self.streaming[chat_id]
        tree = self.trees[chat_id]
        tree.set_text(message_id, tree[message_id].text + text)
        return self._delta(chat_id, message_id=message_id, text=text, generating=True)

    def end(
        self,
        chat_id: str,
        whole: str | None = None,
        text: str = "",
        stop: StopReason = StopReason.END_OF_GENERATION,
        tokens: Sequence[TokenStat] = (),
    ) -> ChatDelta:
        """The reply ends as ``whole`` (None: its text so far and ``text``), with ``tokens``,
        its last ``text`` shown now."""
        message_id = self.streaming.pop(chat_id)
        tree = self.trees[chat_id]
        tree[message_id].tokens = list(tokens)
        tree.finish(message_id, tree[message_id].text + text if whole is None else whole, stop)
        return self._delta(chat_id, message_id=message_id, text=text, finished=stop)

    def turn(self, chat_id: str, question: str, text: str) -> ChatDelta:
        """One frame in which a turn is taken and its reply starts with ``text``."""
        asked = self.user(chat_id, question)
        started = self.reply(chat_id, text)
        started.tree_changes[:0] = asked.tree_changes
        return started

    def answer(
        self, chat_id: str, question: str, reply: str, tokens: Sequence[TokenStat] = ()
    ) -> ChatDelta:
        """One frame in which a turn is taken and answered whole (a layout test's frame)."""
        asked = self.user(chat_id, question) if question else ChatDelta()
        started = self.reply(chat_id, reply, replacing=not question)
        ended = self.end(chat_id, reply, tokens=tokens)
        changes = [*asked.tree_changes, *started.tree_changes, *ended.tree_changes]
        return ChatDelta(
            message_id=started.message_id,
            tree_changes=changes,
            text=reply,
            started=True,
            replaces_last=not question,
            finished=ended.finished,
            tokens=list(tokens),
        )

    @staticmethod
    def whole(tree: ChatTree) -> ChatDelta:
        """The first frame of a chat opened on ``tree`` (a fork, a resume)."""
        return ChatDelta(tree_changes=[tree.whole()])

    def show(self, chat_id: str, message_id: int) -> ChatDelta:
        self.trees[chat_id].show(message_id)
        return self._delta(chat_id)

    def clear(self, chat_id: str) -> ChatDelta:
        self.trees[chat_id] = ChatTree()
        self.streaming.pop(chat_id, None)
        return self._delta(chat_id)

    def last(self, chat_id: str) -> TreeMessage:
        tree = self.trees[chat_id]
        assert tree.head is not None
        return tree[tree.head]
