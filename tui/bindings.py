"""The app's key bindings, and the keys they end up on once the user's ``[keys]`` keymap is
applied: the help screen, the command palette and the notices all name those keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from textual.binding import Binding

#: The bindings the footer shows, in its order, the most used first: it shows as many whole
#: ones as the terminal's width fits. Every binding is in the command palette and on F1.
FOOTER_KEYS = (
    "pane.new",
    "pane.close",
    "pane.stop",
    "input.broadcast",
    "pane.regenerate",
    "pane.fork",
    "app.help",
    "reply.tokens",
    "pane.branches",
    "session.list",
    "app.search",
    "app.quit",
)

_BINDINGS: list[Binding] = [
    Binding("ctrl+right", "focus_pane(1)", "Next pane", id="pane.next", priority=True),
    Binding("ctrl+left", "focus_pane(-1)", "Prev pane", id="pane.previous", priority=True),
    Binding("ctrl+n", "new_pane", "New pane", id="pane.new", priority=True),
    Binding("ctrl+w", "close_pane", "Close pane", id="pane.close", priority=True),
    Binding("escape", "stop", "Stop", id="pane.stop"),
    Binding("ctrl+k", "stop_all", "Stop all", id="pane.stop_all", priority=True),
    Binding("ctrl+b", "broadcast", "Broadcast", id="input.broadcast", priority=True),
    Binding(
        "alt+b", "toggle_broadcast_set", "Choose for broadcast", id="input.choose", priority=True
    ),
    Binding("ctrl+g", "compare", "Compare replies", id="app.compare", priority=True),
    Binding("ctrl+o", "toggle_maximize", "Maximize", id="pane.maximize", priority=True),
    Binding("ctrl+l", "clear_pane", "Clear", id="pane.clear", priority=True),
    Binding("ctrl+y", "copy_reply", "Copy reply", id="pane.copy", priority=True),
    Binding("ctrl+t", "fork_pane", "Fork pane", id="pane.fork", priority=True),
    Binding("ctrl+r", "regenerate", "Regenerate", id="pane.regenerate", priority=True),
    Binding("alt+up", "select_message(-1)", "Select earlier", id="message.previous", priority=True),
    Binding("alt+down", "select_message(1)", "Select later", id="message.next", priority=True),
    Binding("alt+e", "edit_message", "Edit message", id="message.edit", priority=True),
    Binding("alt+left", "page_branch(-1)", "Previous version", id="branch.previous", priority=True),
    Binding("alt+right", "page_branch(1)", "Next version", id="branch.next", priority=True),
    Binding("alt+t", "branches", "Branches", id="pane.branches", priority=True),
    Binding("alt+p", "tokens", "Token odds", id="reply.tokens", priority=True),
    Binding("ctrl+e", "export_session", "Export", id="session.export", priority=True),
    Binding("ctrl+s", "sessions", "Sessions", id="session.list", priority=True),
    Binding("ctrl+f", "search", "Search chats", id="app.search", priority=True),
    Binding("f1", "help", "Help", id="app.help"),
    Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    # Ctrl+C copies a selection in the input, else quits as Ctrl+Q does (saving every pane).
    Binding("ctrl+c", "interrupt", "Quit", id="app.interrupt", priority=True),
]
APP_BINDINGS: list[Binding] = [replace(b, show=b.id in FOOTER_KEYS) for b in _BINDINGS]
#: Every id a ``[keys]`` entry may rebind.
BINDING_IDS = frozenset(b.id for b in _BINDINGS if b.id)


@dataclass(frozen=True, slots=True)
class KeyNames:
    """Which key runs each binding, after the user's keymap (binding id -> keys)."""

    keymap: Mapping[str, str]

    def key(self, binding_id: str) -> str:
        """The first key bound to ``binding_id`` (as Textual spells it: ``ctrl+l``)."""
        for binding in APP_BINDINGS:
            if binding.id == binding_id:
                keys = self.keymap.get(binding_id, binding.key)
                return keys.split(",")[0].strip()
        raise KeyError(binding_id)

    def help_rows(self) -> list[tuple[str, str]]:
        """(keys, description) per binding, first one per description, for the help screen."""
        rows: dict[str, tuple[str, str]] = {}
        for binding in APP_BINDINGS:
            keys = self.keymap.get(binding.id or "", binding.key)
            description = binding.description or binding.action
            rows.setdefault(description, (keys, description))
        return list(rows.values())
