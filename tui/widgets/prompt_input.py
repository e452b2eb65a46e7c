"""A multi-line input: Enter sends, Shift+Enter or Ctrl+J inserts a newline."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea
from textual.widgets.text_area import Edit, EditResult

from core.text.printable import printable


class PromptInput(TextArea):
    """The pane's input box."""

    class Submitted(Message):
        def __init__(self, prompt_input: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt_input = prompt_input
            self.text = text

        @property
        def control(self) -> PromptInput:
            return self.prompt_input

    def __init__(self, *, placeholder: str = "Message…  (Enter sends, Ctrl+J new line)") -> None:
        super().__init__(
            soft_wrap=True, show_line_numbers=False, compact=True, placeholder=placeholder
        )

    def edit(self, edit: Edit) -> EditResult:
        """Every typed or pasted insertion lands here: control characters from a paste are kept
        as visible pictures, never as escapes for the terminal or the model. (``load_text``
        bypasses it; the app loads only text that came through here: a taken-back turn.)"""
        if not edit.text.isprintable():
            edit.text = printable(edit.text)
        return super().edit(edit)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
        elif event.key in ("shift+enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
        else:
            await super()._on_key(event)

    def submit(self) -> None:
        text = self.text.strip()
        if text:
            self.post_message(self.Submitted(self, text))
            self.clear()
