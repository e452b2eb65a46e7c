"""The app's status line: model, backend, panes generating, batch and speed, KV use (and the
same for each other model the panes use); before the first reply, "ready" and the KV's use."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from core.chat import FrameStats
from tui.widgets.pane_title import shown


class StatusBar(Static):
    model_name: reactive[str] = reactive("")
    backend: reactive[str] = reactive("CPU")
    #: The default model's KV size, known from the config before its first decode step.
    context_size: reactive[int] = reactive(0)
    stats: reactive[FrameStats] = reactive(FrameStats, always_update=True)  # the default's
    others: reactive[tuple[tuple[str, FrameStats], ...]] = reactive(())  # the other models'
    #: Models being loaded for panes waiting on them: "loading model.gguf 42%" each.
    models_loading: reactive[tuple[str, ...]] = reactive(())

    def render(self) -> str:
        s = self.stats
        parts = [shown(name) for name in (self.model_name, self.backend) if name]
        if s.decoded and (s.generating or s.batch_tokens):
            parts += [
                f"generating {s.generating}",
                f"batch {s.batch_tokens} tok",
                f"{s.tokens_per_second:.1f} tok/s",
                f"KV {s.kv_used}/{s.kv_total}",
            ]
        else:  # nothing asked yet (a chat opened, its system prompt read): no "KV 0/0"
            parts.append("ready")
            total = s.kv_total or self.context_size
            if total:
                parts.append(f"KV {s.kv_used}/{total}")
        line = " · ".join(parts)
        for name, o in self.others:
            line += (
                f" │ {shown(name)} · generating {o.generating} · {o.tokens_per_second:.1f} tok/s"
            )
            if o.kv_total:  # an endpoint's model has no KV here
                line += f" · KV {o.kv_used}/{o.kv_total}"
        for text in self.models_loading:
            line += f" │ {shown(text)}"
        return line
