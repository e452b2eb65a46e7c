"""A modal listing every pane's last reply side by side, with its speed and length."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Markdown, Static

from core import StopReason
from core.text.printable import printable


@dataclass(frozen=True, slots=True)
class ReplySummary:
    pane: str
    settings: str
    text: str
    tokens: int
    tokens_per_second: float
    stop_reason: StopReason | None  # None: no reply yet
    model: str = ""  # which model answered ("" when the app runs only one)


class CompareScreen(ModalScreen[None]):
    """Compare the panes' answers to the same question (typically after a broadcast)."""

    CSS_PATH = "compare_screen.tcss"
    BINDINGS = [Binding("escape,q", "dismiss", "Close", id="compare.close")]

    def __init__(self, replies: list[ReplySummary]) -> None:
        super().__init__()
        self.replies = replies

    def compose(self) -> ComposeResult:
        with Vertical(id="compare"):
            yield Static("[b]Last replies, side by side[/b]")
            table: DataTable[str | Text] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("pane", "model", "settings", "tokens", "tok/s", "words", "ended by")
            for r in self.replies:
                table.add_row(
                    Text(printable(r.pane)),
                    Text(printable(r.model) or "-"),
                    Text(printable(r.settings)),
                    str(r.tokens),
                    f"{r.tokens_per_second:.1f}",
                    str(len(r.text.split())),
                    str(r.stop_reason) if r.stop_reason else "-",
                )
            yield table
            with VerticalScroll(id="compare-texts"):
                for r in self.replies:
                    text = printable(r.text) or "_(no reply)_"
                model = f" · {printable(r.model)}" if r.model else ""
                head = f"**{printable(r.pane)}**{model} · `{printable(r.settings)}`"
                yield Markdown(f"{head}\n\n{text}")
            yield Static("[dim]Esc closes[/dim]")
