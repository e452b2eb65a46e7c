"""What a :class:`~core.chat.engine_group.ChatEngineGroup` asks of the engine of one model: a
:class:`~core.chat.engine.ChatEngine` in this process, or an
:class:`~core.chat.engine_process.EngineProcess` that runs one in a child process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.chat.commands import Command
    from core.chat.engine import TakenOut
    from core.chat.frames import Frame
    from core.chat.state import ChatSnapshot


class ModelEngine(Protocol):
    """The chats on one model, stepped one frame at a time by the thread that owns it."""

    @property
    def model(self) -> str:
        """The name its frames carry ("" the default model)."""
        ...

    @property
    def busy(self) -> bool:
        """Something is left to do (a reply streaming, a command queued)."""
        ...

    @property
    def chat_count(self) -> int:
        """Chats it holds (a group frees a model that has none)."""
        ...

    @property
    def tokens_sampled(self) -> int:
        """Reply tokens sampled so far, every chat's."""
        ...

    @property
    def stopped(self) -> str | None:
        """Why it can no longer answer (its process ended), else None."""
        ...

    def submit(self, *commands: Command) -> None: ...

    def step(self) -> Frame | None:
        """One frame, or None when nothing happened (yet)."""
        ...

    def interrupt(self) -> None:
        """Cancel the decode in flight so that the next commands apply at once (any thread)."""
        ...

    def taken_out(self) -> dict[str, TakenOut | None]: ...

    def drain(self, timeout: float) -> Frame | None:
        """At shutdown: the frame of a step still in flight, if any (up to ``timeout`` s)."""
        ...

    def snapshot(self, chat_id: str, path: Path | None) -> ChatSnapshot: ...

    def warm_up(self) -> None:
        """In the stepping thread, before the first frame."""
        ...

    def watch_cpu(self) -> None:
        """While idle: keep the decode thread count in step with the machine's load."""
        ...
