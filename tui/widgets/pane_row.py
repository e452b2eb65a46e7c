"""The row of chat panes: their order on screen, their ids, and a removal that is safe while
frames keep arriving."""

from __future__ import annotations

from dataclasses import dataclass

from textual.containers import Horizontal
from textual.dom import DOMNode

from core.chat import ChatConfig, ChatTree
from tui.bindings import KeyNames
from tui.widgets.chat_pane import ChatPane


@dataclass(frozen=True, slots=True)
class PaneModel:
    """What a pane shows of its model: its name in the title ("" with one model), and the
    size of its context."""

    label: str
    context_size: int


class PaneRow(Horizontal):
    """Holds the panes side by side. A pane's id (``pane-N``) is never reused in a run, so a
    late frame for a closed pane cannot land in a new one."""

    def __init__(self, context_size: int, keys: KeyNames) -> None:
        super().__init__(id="panes")
        self.context_size = context_size
        self.keys = keys
        self.opened = 0  # panes opened so far in this run

    @property
    def panes(self) -> list[ChatPane]:
        """In screen order. Read from the children: a query would walk every widget."""
        return [child for child in self.children if isinstance(child, ChatPane)]

    def by_id(self) -> dict[str, ChatPane]:
        return {pane.pane_id: pane for pane in self.panes}

    def pane_holding(self, node: DOMNode | None) -> ChatPane | None:
        """The pane that ``node`` (the focused widget) is in; else the first pane."""
        while node is not None:
            if isinstance(node, ChatPane):
                return node
            node = node.parent
        panes = self.panes
        return panes[0] if panes else None

    def neighbour(self, pane: ChatPane, step: int) -> ChatPane:
        """The pane ``step`` places to the right of ``pane`` (to the left when negative),
        wrapping around."""
        panes = self.panes
        return panes[(panes.index(pane) + step) % len(panes)]

    async def open(
        self,
        config: ChatConfig,
        *,
        after: ChatPane | None = None,
        tree: ChatTree | None = None,
        branched_from: str = "",
        model: PaneModel | None = None,
    ) -> ChatPane:
        """Mount a new pane (after ``after``, else at the end) showing ``tree`` (a copy of what
        the engine is given: a fork's branch, a saved chat) until the engine's frames take
        over; its model may have a context of its own size (default: the row's)."""
        self.opened += 1
        model = model or PaneModel("", self.context_size)
        pane = ChatPane(f"pane-{self.opened}", config, model.context_size, self.keys, model.label)
        pane.branched_from = branched_from
        await self.mount(pane, after=after)
        if tree is not None:
            await pane.follow([tree.whole()])
        return pane

    async def close(self, pane: ChatPane) -> None:
        # Hidden first: Textual prunes a pane's children before the pane leaves the layout, and
        # a screen update in between (frames keep arriving) would draw the pruned input box
        # from the old layout and crash the app ("No 'text-area--gutter' key").
        pane.display = False
        await pane.remove()
