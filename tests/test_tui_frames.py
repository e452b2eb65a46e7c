"""Buffered frames: deltas of one pane fold together without reordering a reply's end."""

from __future__ import annotations

from core import StopReason
from core.chat import ChatDelta


def test_text_of_later_frames_is_appended() -> None:
    first = ChatDelta(text="Hel", started=True, generating=True, tokens_per_second=10.0)
    assert first.absorb(ChatDelta(text="lo", generating=True, tokens_per_second=12.0))
    assert first.absorb(
        ChatDelta(text="!", finished=StopReason.END_OF_GENERATION, generating=False)
    )
    assert (first.text, first.started, first.finished) == (
        "Hello!",
        True,
        StopReason.END_OF_GENERATION,
    )
    assert first.tokens_per_second == 0.0 and not first.generating


def test_a_finished_reply_does_not_swallow_the_next_one() -> None:
    ended = ChatDelta(text="done", finished=StopReason.END_OF_GENERATION)
    assert not ended.absorb(ChatDelta(text="more"))
    assert ended.text == "done"


def test_a_new_reply_starts_its_own_delta() -> None:
    streaming = ChatDelta(text="a", generating=True)
    assert not streaming.absorb(ChatDelta(text="b", started=True))
    assert streaming.text == "a"


def test_notices_are_kept() -> None:
    delta = ChatDelta(notice="context full")
    assert delta.absorb(ChatDelta(text="x"))
    assert delta.notice == "context full"
