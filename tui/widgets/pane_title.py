"""A pane's title bar: name, sampler summary, live tokens/s and context use."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class PaneTitle(Static):
    pane_name: reactive[str] = reactive("")
    sampler: reactive[str] = reactive("")
    tokens_per_second: reactive[float] = reactive(0.0)
    context_used: reactive[int] = reactive(0)
    context_size: reactive[int] = reactive(0)
    generating: reactive[bool] = reactive(False)
    origin: reactive[str] = reactive("")  # where a forked pane branched from
    chosen: reactive[bool] = reactive(False)  # in the broadcast set

    def render(self) -> str:
        marker = ("● " if self.generating else "") + ("[b]»[/b] " if self.chosen else "")
        origin = f" [dim]⑂ {self.origin}[/dim]" if self.origin else ""
        return (
            f"{marker}[b]{self.pane_name}[/b]{origin} · {self.tokens_per_second:.0f} tok/s · "
            f"ctx {self.context_used}/{self.context_size} · [dim]{self.sampler}[/dim]"
        )
