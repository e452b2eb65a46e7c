"""Untrusted text never drives the terminal: escape sequences in model output, typed or pasted
input, restored sessions, persona and model names, and exports are shown as text.

The app runs on the real model and renders every screen update to terminal text for a driver
that records it, as a terminal would receive it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest
from chat_trees import ChatTrees
from textual import events
from textual.driver import Driver

from core import BatchedExecutor, ContextParams, LlamaWeights, model_template
from core.chat import ChatEngine
from core.text.printable import printable
from tui.app import PanechatApp
from tui.config import load_config
from tui.export import PaneTranscript, pane_markdown
from tui.launch import create_app
from tui.session_store import SessionStore
from tui.terminal_driver import stand_in_terminal

CLEAR_SCREEN = "\x1b[2J"
SET_CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"  # OSC 52: the clipboard becomes "pwned"
SET_TITLE = "\x1b]0;PWNED\x07"  # OSC 0: the terminal's title
C1_CSI = "\x9b2J"  # the 8-bit form of CSI, which some terminals honour
HOSTILE = (CLEAR_SCREEN, SET_CLIPBOARD, SET_TITLE, C1_CSI)


def test_printable_shows_control_characters_as_pictures() -> None:
    assert printable("a\x1b[2Jb") == "a␛[2Jb"
    assert printable("ok\r\nnext\tcol") == "ok\nnext\tcol"  # tabs and newlines stay
    assert printable("\x07\x7f\x9b") == "␇␡\ufffd"
    assert printable("plain é ✓") == "plain é ✓"
    every = printable("".join(chr(c) for c in range(0x100)))
    assert not [ch for ch in every if is_control(ch) and ch not in "\t\n"]


def is_control(ch: str) -> bool:
    """C0, DEL or C1: what a terminal may act on."""
    return ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0


def test_export_writes_no_control_characters() -> None:
    pane = PaneTranscript(
        f"evil{SET_TITLE}", "T0.7", f"sys{CLEAR_SCREEN}", [("user", SET_CLIPBOARD)]
    )
    text = pane_markdown(pane)
    assert "\x1b" not in text and "\x07" not in text and "␛]52;c;cHduZWQ=␇" in text


class Terminal:
    """What the app wrote: every screen update, rendered to terminal text."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def driver(self) -> type[Driver]:
        return stand_in_terminal(self.written.append)

    def text(self) -> str:
        return "".join(self.written)


async def test_no_escape_sequence_reaches_the_terminal(
    weights: LlamaWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # where the export lands
    base = load_config()
    evil = replace(base.panes[0], name=f"Evil{SET_TITLE}[b]bold[/b]", system=CLEAR_SCREEN)
    config = replace(
        base,
        context=ContextParams(n_ctx=1024, n_batch=256, n_seq_max=2),
        panes=(evil, base.panes[1]),
    )
    store = SessionStore(tmp_path / "sessions.db")
    session_id = store.create_session(f"session{SET_TITLE}")
    pane_row = store.add_pane(session_id, evil)
    asked = store.add_message(pane_row, "user", f"hi{SET_CLIPBOARD}", None)
    store.add_message(pane_row, "assistant", f"hello{CLEAR_SCREEN}{C1_CSI}", asked)
    restored = store.load(session_id)
    terminal = Terminal()
    executor = BatchedExecutor(weights, config.context)
    app: PanechatApp = create_app(
        config,
        ChatEngine(executor, model_template(weights, config.template)),
        model_name=f"model{SET_TITLE}",
        persist_theme=False,
        store=store,
        session_id=session_id,
        restore=restored,
        driver_class=terminal.driver(),
    )
    try:
        async with app.run_test(headless=False, size=(160, 40)) as pilot:
            await pilot.pause()
            (pane,) = app.panes
            pane.input.focus()
            await pilot.pause()
            app.post_message(events.Paste(f"pasted{SET_CLIPBOARD}{C1_CSI}"))  # as a driver does
            await pilot.pause()
            assert "\x1b" not in pane.input.text and "␛]52" in pane.input.text
            # What a model might stream (the embedded one has echoed ESC[2J), in two pieces.
            # Once the engine has opened the chat (its first frame: its tree), a reply streams.
            deadline = time.monotonic() + 60
            while not any(pane.pane_id in f.deltas for f in app.frames.seen):
                assert time.monotonic() < deadline, "the engine did not open the chat"
                await pilot.pause(0.05)
            chats = ChatTrees()
            await pane.apply(chats.turn(pane.pane_id, "Say it.", f"model says {SET_TITLE[:3]}"))
            await pane.apply(chats.stream(pane.pane_id, f"{SET_TITLE[3:]}{CLEAR_SCREEN}"))
            app.notify(f"a pane named {evil.name}")
            app.action_export_session()
            # Until the reply is drawn and the export written (however busy the machine).
            deadline = time.monotonic() + 60
            while not (
                "model says" in terminal.text() and list(app.export_dir.glob("panechat-*.md"))
            ):
                assert time.monotonic() < deadline, "the app did not draw the reply or export"
                await pilot.pause(0.05)
            await asyncio.sleep(0.1)  # what the driver still had on its way out
            written = terminal.text()
            assert "PWNED" in written  # the text is shown...
            for sequence in HOSTILE:  # ...but never as a sequence the terminal acts on
                assert sequence not in written, repr(sequence)
            assert "␛[2J" in written and "[b]bold[/b]" in written  # shown as typed
            exports = list(app.export_dir.glob("panechat-*.md"))
    finally:
        executor.close()
        store.close()
    assert exports and "\x1b" not in exports[0].read_text(encoding="utf-8")
