"""What the engine tells a chat's user, as typed values: the engine knows what happened, a view
knows its keys and words (the app says "press ctrl+l", a script may say something else)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NoticeKind(StrEnum):
    """Why the engine speaks up; each has a plain default wording in :meth:`Notice.text`."""

    BUSY = "busy"  # a command needs the reply in flight to stop first
    NOTHING_TO_REGENERATE = "nothing to regenerate"
    CONTEXT_FULL = "context full"  # no room left, even after dropping old turns
    TURNS_DROPPED = "turns dropped"  # old turns left the model's memory to make room
    STATE_NOT_USED = "state not used"  # a saved KV state was unusable; the chat is read again
    BRANCH_SOURCE_CLOSED = "branch source closed"
    OPENING = "opening"  # the chat is still reading its system prompt
    FAILED = "failed"  # a command failed; ``detail`` says why
    MODEL_FAILED = "model failed"  # the chat's model could not be loaded; ``detail`` says why
    MODEL_SWITCHED = "model switched"  # the chat moved to model ``detail`` and is read again
    NOT_OPEN = "not open"  # a command for a chat the engine does not hold (it failed to open)


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell the user of one chat. ``detail`` carries the variable part: the
    action a busy chat refused, the error text; ``count`` the number of dropped turns."""

    kind: NoticeKind
    detail: str = ""
    count: int = 0

    def text(self) -> str:
        """The notice in plain words, naming no keys (for scripts and logs)."""
        match self.kind:
            case NoticeKind.BUSY:
                return f"a reply is still coming — stop it before {self.detail}"
            case NoticeKind.NOTHING_TO_REGENERATE:
                return "nothing to regenerate yet — send a message first"
            case NoticeKind.CONTEXT_FULL:
                return "context full — clear this chat to go on; the other chats carry on"
            case NoticeKind.TURNS_DROPPED:
                turns = f"{self.count} oldest turn{'s' * (self.count != 1)}"
                return (
                    f"context full — the {turns} left the model's memory to make room "
                    "(the system prompt stays; the transcript still shows them)"
                )
            case NoticeKind.STATE_NOT_USED:
                return f"saved state not used ({self.detail}); the chat is read again instead"
            case NoticeKind.BRANCH_SOURCE_CLOSED:
                return "the chat to branch from was closed"
            case NoticeKind.OPENING:
                return "the chat is still reading its system prompt — try again in a moment"
            case NoticeKind.FAILED:
                return self.detail
            case NoticeKind.MODEL_FAILED:
                return f"{self.detail} — this chat cannot answer; chats on other models carry on"
            case NoticeKind.MODEL_SWITCHED:
                return f"now answered by {self.detail}: it reads the chat again first"
            case NoticeKind.NOT_OPEN:
                return "this chat is not open (see the notice above) — open a new one"

    def __str__(self) -> str:
        return self.text()
