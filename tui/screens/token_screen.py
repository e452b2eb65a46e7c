"""A modal showing one reply token by token, shaded by how likely the model found each one:
choose a token to see the others it weighed, and choose one of those to branch there."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from core.chat import Alternative, TokenStat
from core.text.printable import printable

#: Shades by probability, the least likely first: (below this probability, style).
SHADES = ((0.1, "on #6b1f1f"), (0.3, "on #6b4a1f"), (0.6, "on #4f4f1f"))


@dataclass(frozen=True, slots=True)
class TokenChoice:
    """What the screen asks for: a new version of the reply, its first ``index`` tokens kept
    and then ``alternative`` instead of the token the model chose there."""

    index: int
    alternative: Alternative


def shade(probability: float) -> str:
    for below, style in SHADES:
        if probability < below:
            return style
    return ""


def shaded(tokens: list[TokenStat], cursor: int) -> Text:
    """The reply as its tokens, each shaded by its probability, the one at ``cursor`` marked,
    one the user chose in place of the model's (where the reply was branched) underlined."""
    text = Text()
    for i, token in enumerate(tokens):
        piece = printable(token.piece) or "·"
        style = shade(token.probability)
        if token.forced:
            style = f"{style} underline".strip()
        if i == cursor:
            style = "reverse bold"
        text.append(piece, style=style)
    return text


def percent(probability: float) -> str:
    return f"{probability * 100:5.1f}%"


class TokenScreen(ModalScreen[TokenChoice | None]):
    """←/→ move from token to token; the list shows the token chosen and the likeliest others
    with their probabilities; Enter on another one branches there. Probabilities are the
    model's own (temperature 1, no penalties) over its 40 likeliest tokens."""

    CSS_PATH = "token_screen.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", id="tokens.close"),
        Binding("left", "move(-1)", "Previous token", id="tokens.previous", priority=True),
        Binding("right", "move(1)", "Next token", id="tokens.next", priority=True),
    ]

    def __init__(
        self, pane_name: str, tokens: list[TokenStat], written_by: str | None = None
    ) -> None:
        """``written_by``: the model that wrote the reply, where it is not the pane's now."""
        super().__init__()
        self.pane_name = pane_name
        self.written_by = written_by
        self.tokens = tokens
        self.cursor = 0
        self.reply_view = Static(id="token-text")
        self.choices = OptionList(id="token-choices")

    def compose(self) -> ComposeResult:
        with Vertical(id="tokens"):
            title = f"Tokens of {printable(self.pane_name)}'s reply"
            if self.written_by is not None:
                title += f", written by {printable(self.written_by)}"
            yield Static(Text(title, style="bold"))
            with VerticalScroll(id="token-scroll"):
                yield self.reply_view
            yield self.choices
            yield Static(
                "[dim]←/→ token · ↑/↓ and Enter: branch from another token · shaded: less "
                "likely · Esc closes[/dim]",
                id="hint",
            )

    def on_mount(self) -> None:
        self._show()
        self.choices.focus()

    def _show(self) -> None:
        self.reply_view.update(shaded(self.tokens, self.cursor))
        token = self.tokens[self.cursor]
        self.choices.clear_options()
        chosen = Text(f"{percent(token.probability)}  ")
        chosen.append(repr(printable(token.piece)), style="bold")
        chosen.append("  (your choice)" if token.forced else "  (the model's choice)", style="dim")
        options = [Option(chosen, id="chosen", disabled=True)]
        for i, other in enumerate(token.alternatives):
            label = Text(f"{percent(other.probability)}  ")
            label.append(repr(printable(other.piece)))
            options.append(Option(label, id=str(i)))
        self.choices.add_options(options)
        if len(options) > 1:
            self.choices.highlighted = 1

    def action_move(self, step: int) -> None:
        target = self.cursor + step
        if 0 <= target < len(self.tokens):
            self.cursor = target
            self._show()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        option_id = event.option.id
        if option_id is None or option_id == "chosen":
            return
        alternative = self.tokens[self.cursor].alternatives[int(option_id)]
        self.dismiss(TokenChoice(self.cursor, alternative))

    def action_close(self) -> None:
        self.dismiss(None)
