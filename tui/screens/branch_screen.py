"""A modal showing one pane's chat as a tree of its branches: choose a message to show the
branch that goes through it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from core.chat import ChatTree, Role, TreeMessage
from core.text.printable import printable
from core.text.reasoning import split_reply

#: How much of a message its line in the tree shows.
PREVIEW = 60


def preview(message: TreeMessage) -> Text:
    """One line: who wrote the message and how it begins (plain text, never markup)."""
    text = split_reply(message.text).answer if message.role is Role.ASSISTANT else message.text
    line = " ".join(printable(text).split()) or "(no reply)"
    if len(line) > PREVIEW:
        line = line[: PREVIEW - 1] + "…"
    who = "You" if message.role is Role.USER else "Reply"
    label = Text(f"{who}: ", style="bold")
    label.append(line)
    return label


class BranchScreen(ModalScreen[int | None]):
    """Dismisses with the id of the message chosen (None: keep the branch shown). The path
    shown is marked and opened; a message with versions lists them side by side under the
    message they follow."""

    CSS_PATH = "branch_screen.tcss"
    BINDINGS = [Binding("escape", "close", "Close", id="branches.close")]

    def __init__(self, pane_name: str, tree: ChatTree) -> None:
        super().__init__()
        self.pane_name = pane_name
        self.chat = tree
        self._on_path = {m.id for m in tree.path()}
        self._tree_nodes: dict[int, TreeNode[int]] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="branches"):
            yield Static(Text(f"Branches of {printable(self.pane_name)}", style="bold"))
            tree: Tree[int] = Tree("chat", id="branch-tree")
            tree.show_root = False
            yield tree
            yield Static(
                "[dim]Enter shows the branch through a message · ● the branch shown · "
                "Esc closes[/dim]",
                id="hint",
            )

    def on_mount(self) -> None:
        tree = self.query_one(Tree)
        self._add(tree.root, None)
        tree.root.expand()
        head = self.chat.head
        cursor = self._tree_nodes.get(head) if head is not None else None
        if cursor is not None:
            tree.call_after_refresh(tree.move_cursor, cursor)  # once its lines are laid out
        tree.focus()

    def _add(self, root: TreeNode[int], message_id: int | None) -> None:
        """The messages after ``message_id`` (iteratively: a long chat is a deep tree). A
        line of messages without versions stays at one level; a message's versions open a
        level under it, each with the line that goes on from it."""
        # (the level the line goes on at, the message it goes on from, that message's node)
        stack: list[tuple[TreeNode[int], int | None, TreeNode[int]]] = [(root, message_id, root)]
        while stack:
            level, after, after_node = stack.pop()
            children = self.chat.children(after)
            versions = len(children) > 1
            for child in children:
                below = self.chat.children(child.id)  # under its node: versions, or its line
                label = preview(child)
                if child.id in self._on_path:
                    label = Text("● ", style="bold") + label
                node = (after_node if versions else level).add(
                    label,
                    data=child.id,
                    expand=child.id in self._on_path,
                    allow_expand=len(below) > 1 or (versions and bool(below)),
                )
                self._tree_nodes[child.id] = node
                stack.append((node if versions else level, child.id, node))

    def on_tree_node_selected(self, event: Tree.NodeSelected[int]) -> None:
        event.stop()
        if event.node.data is not None:
            self.dismiss(event.node.data)

    def action_close(self) -> None:
        self.dismiss(None)
