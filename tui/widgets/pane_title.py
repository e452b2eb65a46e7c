"""A pane's title bar: name, model, sampler summary, live tokens/s and context use."""

from __future__ import annotations

from textual.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

from core.text.printable import printable


class PaneTitle(Static):
    pane_name: reactive[str] = reactive("")
    model: reactive[str] = reactive("")  # which model answers ("" when the app runs only one)
    sampler: reactive[str] = reactive("")
    tokens_per_second: reactive[float] = reactive(0.0)
    context_used: reactive[int] = reactive(0)
    context_size: reactive[int] = reactive(0)
    generating: reactive[bool] = reactive(False)
    origin: reactive[str] = reactive("")  # where a forked pane branched from
    chosen: reactive[bool] = reactive(False)  # in the broadcast set

    def render(self) -> str:
        marker = ("● " if self.generating else "") + ("[b]»[/b] " if self.chosen else "")
        name, origin = shown(self.pane_name), shown(self.origin)
        origin = f" [dim]⑂ {origin}[/dim]" if origin else ""
        model = f" · [i]{shown(self.model)}[/i]" if self.model else ""
        # A model served by an endpoint has no context known here: no "ctx 0/0".
        context = f"ctx {self.context_used}/{self.context_size} · " if self.context_size else ""
        return (
            f"{marker}[b]{name}[/b]{model}{origin} · {self.tokens_per_second:.0f} tok/s · "
            f"{context}[dim]{shown(self.sampler)}[/dim]"
        )


def shown(text: str) -> str:
    """A name from a config file or a model as markup that shows it literally."""
    return escape(printable(text))
