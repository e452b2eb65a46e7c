"""Each pane's chat tree, kept as the app keeps it, for tests that drive a recorder."""

from __future__ import annotations

from collections import defaultdict

from core.chat import ChatTree, Role, TreeMessage


class PaneTrees:
    def __init__(self) -> None:
        self.trees: defaultdict[str, ChatTree] = defaultdict(ChatTree)

    def user(self, pane_id: str, text: str) -> TreeMessage:
        """A turn sent after the pane's last message."""
        tree = self.trees[pane_id]
        return tree.add(tree.head, Role.USER, text)

    def reply(self, pane_id: str, *, replacing: bool = False) -> TreeMessage:
        """A reply started after the last message (``replacing``: a regeneration, a new
        version of the last reply)."""
        tree = self.trees[pane_id]
        parent = tree.head
        if replacing and parent is not None:
            parent = tree[parent].parent
        return tree.add(parent, Role.ASSISTANT)
