"""Buffered frames: deltas of one pane fold together without reordering a reply's end."""

from __future__ import annotations

from core import StopReason
from tui.messages import PaneDelta


def test_text_of_later_frames_is_appended() -> None:
    first = PaneDelta(text="Hel", started=True, generating=True, tokens_per_second=10.0)
    assert first.absorb(PaneDelta(text="lo", generating=True, tokens_per_second=12.0))
    assert first.absorb(
        PaneDelta(text="!", finished=StopReason.END_OF_GENERATION, generating=False)
    )
    assert (first.text, first.started, first.finished) == (
        "Hello!",
        True,
        StopReason.END_OF_GENERATION,
    )
    assert first.tokens_per_second == 0.0 and not first.generating


def test_a_finished_reply_does_not_swallow_the_next_one() -> None:
    ended = PaneDelta(text="done", finished=StopReason.END_OF_GENERATION)
    assert not ended.absorb(PaneDelta(text="more"))
    assert ended.text == "done"


def test_a_new_reply_starts_its_own_delta() -> None:
    streaming = PaneDelta(text="a", generating=True)
    assert not streaming.absorb(PaneDelta(text="b", started=True))
    assert streaming.text == "a"


def test_notices_are_kept() -> None:
    delta = PaneDelta(notice="context full")
    assert delta.absorb(PaneDelta(text="x"))
    assert delta.notice == "context full"
