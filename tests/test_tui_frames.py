"""Buffered frames: deltas of one pane fold together without reordering a reply's end."""

from __future__ import annotations

import pytest

from core import StopReason
from core.chat import ChatDelta, Notice, NoticeKind
from tui.bindings import KeyNames
from tui.notice_text import notice_text


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
    full = Notice(NoticeKind.CONTEXT_FULL)
    delta = ChatDelta(notice=full)
    assert delta.absorb(ChatDelta(text="x"))
    assert delta.notice == full


def test_notices_name_the_users_keys() -> None:
    """The engine names no keys; the app names the keys the user's keymap gives."""
    full = Notice(NoticeKind.CONTEXT_FULL)
    assert "ctrl+" not in full.text() and "esc" not in Notice(NoticeKind.BUSY, "editing").text()
    assert "press ctrl+l to clear" in notice_text(full, KeyNames({}))
    remapped = KeyNames({"pane.clear": "f5,ctrl+x", "pane.stop": "f6"})
    assert "press f5 to clear" in notice_text(full, remapped)
    busy = notice_text(Notice(NoticeKind.BUSY, "editing"), remapped)
    assert busy == "a reply is still coming — stop it (f6) before editing"
    dropped = Notice(NoticeKind.TURNS_DROPPED, count=1)
    assert "the 1 oldest turn left" in notice_text(dropped, remapped)


def test_frame_buffer_times_screen_updates() -> None:
    from core.chat import FrameStats
    from tui.frame_buffer import INPUT_FIRST, MIN_UPDATE_INTERVAL, FrameBuffer

    buffer = FrameBuffer(update_interval=0.25)
    assert buffer.interval(8) == 0.25 and buffer.interval(16) == 0.25
    assert buffer.interval(4) == 0.125 and buffer.interval(1) == MIN_UPDATE_INTERVAL
    streaming = FrameStats(generating=8)
    # After a quiet spell the first frame is due at once; the next waits for the interval.
    assert buffer.add({"a": ChatDelta(text="x", started=True)}, streaming, now=10.0) == 10.0
    assert buffer.add({"a": ChatDelta(text="y")}, streaming, now=10.01) is None  # no sooner
    deltas, stats = buffer.take(now=10.02)
    assert [d.text for d in deltas["a"]] == ["xy"] and stats is streaming
    assert buffer.add({"a": ChatDelta(text="z")}, streaming, now=10.03) == pytest.approx(10.27)
    # The last reply's end is due at once, even with an update scheduled later.
    ended = ChatDelta(finished=StopReason.END_OF_GENERATION)
    assert buffer.add({"a": ended}, FrameStats(generating=0), now=10.04) == 10.04
    # A key press holds a due update back briefly, unless it is already an interval late.
    buffer.key_pressed(now=10.05)
    assert buffer.hold(now=10.06) == pytest.approx(INPUT_FIRST - 0.01)
    assert buffer.hold(now=10.30) == 0.0
    buffer.take(now=10.30)
    assert buffer.due_at is None and buffer.hold(now=10.31) == 0.0
    # An update already a whole interval late does not wait for a key.
    assert buffer.add({"a": ChatDelta(text="w")}, streaming, now=11.0) == 11.0
    buffer.key_pressed(now=11.29)
    assert buffer.hold(now=11.30) == 0.0
    buffer.drop("a")  # a cleared pane's buffered text is not shown
    assert buffer.take(now=11.31)[0] == {}
