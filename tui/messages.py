"""The chat engine's events as Textual messages, so the app receives them in its own loop
(``post_message`` is thread-safe and does not block the engine's thread)."""

from __future__ import annotations

from textual.message import Message

from core.chat import ChatDelta, EngineEvent, EngineFailure, FrameStats, ModelLoading


class FrameUpdate(Message):
    """One decode frame: new text for every pane that produced some, plus frame stats."""

    def __init__(self, deltas: dict[str, ChatDelta], stats: FrameStats, model: str = "") -> None:
        super().__init__()
        self.deltas = deltas
        self.stats = stats
        self.model = model  # which model decoded the frame ("" the default one)


class EngineFailed(Message):
    """The engine hit an unexpected error and stopped; the message says what."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ModelLoadProgress(Message):
    """How far the load of a model that panes wait for has got (from its loader thread)."""

    def __init__(self, loading: ModelLoading) -> None:
        super().__init__()
        self.loading = loading


class SaveFailed(Message):
    """Something could not be saved (told from the recorder's thread)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


class DecodeStopped(Message):
    """After a quit: the decode thread has stopped, the panes can be saved."""


def message_for(event: EngineEvent) -> Message:
    """The Textual message that carries an engine event to the app."""
    if isinstance(event, EngineFailure):
        return EngineFailed(event.error)
    return FrameUpdate(event.deltas, event.stats, event.model)
