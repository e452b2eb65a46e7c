"""The engine's notices in the app's words: panes, not chats, and the keys that help."""

from __future__ import annotations

from core.chat import Notice, NoticeKind
from tui.bindings import KeyNames


def notice_text(notice: Notice, keys: KeyNames) -> str:
    """What a pane shows for ``notice``, naming the keys the user has (after their keymap)."""
    match notice.kind:
        case NoticeKind.BUSY:
            stop = keys.key("pane.stop")
            return f"a reply is still coming — stop it ({stop}) before {notice.detail}"
        case NoticeKind.CONTEXT_FULL:
            clear = keys.key("pane.clear")
            return f"context full — press {clear} to clear this pane; the other panes carry on"
        case NoticeKind.BRANCH_SOURCE_CLOSED:
            return "the pane to branch from was closed"
        case NoticeKind.MODEL_FAILED:
            return f"{notice.detail} — this pane cannot answer; panes on other models carry on"
        case NoticeKind.NOT_OPEN:
            new = keys.key("pane.new")
            return f"this pane's chat is not open (see above) — open a new pane with {new}"
        case _:
            return notice.text()
