"""What the app asks the command line to do when it exits: reopen a saved session."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Reopen session ``session_id``; with ``message_id``, scrolled to that saved message
    (a search hit). The app cannot switch sessions in place: its panes, decode state and
    recorder all belong to one session, so it exits and ``tui.cli.run`` starts it again."""

    session_id: int
    message_id: int | None = None
