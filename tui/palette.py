"""The command palette's commands beyond Textual's own: every key binding, and what has no
key (a greedy fork, the exports, another model for the pane)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.binding import Binding

if TYPE_CHECKING:
    from tui.app import PanechatApp


def palette_commands(app: PanechatApp) -> Iterator[SystemCommand]:
    """Every binding but quit, help and Ctrl+C (the palette has its own), and the commands
    that have no key."""
    for binding in app.BINDINGS:
        assert isinstance(binding, Binding)
        if binding.id in ("app.quit", "app.help", "app.interrupt"):
            continue
        yield SystemCommand(
            binding.description,
            f"{binding.description} ({binding.key})",
            lambda action=binding.action: app.run_action(action),
        )
    yield SystemCommand(
        "Fork pane, greedy",
        "Branch the focused pane; the branch samples greedily (temperature 0)",
        lambda: app.run_action("fork_pane(True)"),
    )
    yield SystemCommand(
        "Export pane", "The focused pane to its own Markdown file", app.action_export_pane
    )
    yield SystemCommand(
        "Export pane with every branch",
        "The focused pane's branches, each one whole, to one Markdown file",
        app.action_export_branches,
    )
    yield SystemCommand(
        "Export session with reasoning",
        "Every pane to one Markdown file, with the replies' reasoning",
        lambda: app.action_export_session(reasoning=True),
    )
    yield SystemCommand("Keys", "Show every key binding", app.action_help)
    if app.config.named_models():
        for model in ("", *app.config.named_models()):
            label = app.pane_actions.model_label(model)
            yield SystemCommand(
                f"Answer with {label}",
                f"The focused pane answers with {label} from now on (it reads the chat again)",
                lambda model=model: app.pane_actions.switch_model(model),
            )
