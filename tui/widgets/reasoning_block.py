"""A reply's reasoning (a reasoning model's thoughts), shown above its answer: open while the
model thinks, collapsed once the answer begins, a click away after that."""

from __future__ import annotations

from textual.widgets import Collapsible, Static

from core.text.printable import printable


class ReasoningBlock(Collapsible):
    """The thoughts as plain text (never markup: they are the model's, untrusted)."""

    def __init__(self, text: str = "", *, settled: bool = False) -> None:
        self.text = printable(text)
        self.body = Static(self.text, markup=False, classes="reasoning-text")
        super().__init__(self.body, title="Thinking…", collapsed=settled, classes="reasoning")
        if settled:
            self.settle()

    def stream(self, fragment: str) -> None:
        if not self.text:
            fragment = fragment.lstrip()
        if fragment:
            self.text += printable(fragment)
            self.body.update(self.text)

    def settle(self) -> None:
        """The answer began (or the reply ended): fold the thoughts away."""
        self.collapsed = True
        words = len(self.text.split())
        self.title = f"Thought · {words} word{'s' * (words != 1)}"
