"""The app's status line: model, backend, panes generating, batch and speed, KV use (and the
same for each other model the panes use)."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from core.chat import FrameStats
from tui.widgets.pane_title import shown


class StatusBar(Static):
    model_name: reactive[str] = reactive("")
    backend: reactive[str] = reactive("CPU")
    stats: reactive[FrameStats] = reactive(FrameStats, always_update=True)  # the default's
    others: reactive[tuple[tuple[str, FrameStats], ...]] = reactive(())  # the other models'

    def render(self) -> str:
        s = self.stats
        line = (
            f"{shown(self.model_name)} · {shown(self.backend)} · generating {s.generating} · "
            f"batch {s.batch_tokens} tok · {s.tokens_per_second:.1f} tok/s · "
            f"KV {s.kv_used}/{s.kv_total}"
        )
        for name, o in self.others:
            line += (
                f" │ {shown(name)} · generating {o.generating} · {o.tokens_per_second:.1f} tok/s"
                f" · KV {o.kv_used}/{o.kv_total}"
            )
        return line
