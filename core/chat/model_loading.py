"""How far the load of a model that chats wait for has got: a user's 4-8 GB GGUF takes many
seconds (minutes over RPC), and a pane waiting for it must not look dead meanwhile."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelLoading:
    """``model`` (its name in panes, ``file`` its GGUF's file name) is ``fraction`` loaded;
    ``done``: the load ended, loaded or not (what went wrong reaches its chats as a notice)."""

    model: str
    file: str
    fraction: float
    done: bool = False

    @property
    def percent(self) -> int:
        return max(0, min(100, int(self.fraction * 100)))

    def text(self) -> str:
        """The line for a status bar: "loading model.gguf 42%"."""
        return f"loading {self.file} {self.percent}%"
