"""SVG snapshots of the layout with 2 and 4 panes, fed by a scripted decode source.

Only these layout tests use a fake: the frames are scripted so the picture is deterministic.
Update after a deliberate layout change with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from chat_trees import ChatTrees

from core import ContextParams
from core.chat import (
    Alternative,
    ChatSnapshot,
    EngineEvent,
    FrameStats,
    GroupCommand,
    ShowMessage,
    TokenStat,
)
from tui.app import PanechatApp
from tui.config import load_config
from tui.messages import FrameUpdate


class ScriptedSource:
    """Records commands; the test posts the frames a decode loop would have posted."""

    def __init__(self) -> None:
        self.commands: list[GroupCommand] = []

    def start(self) -> None:
        pass

    def submit(self, *commands: GroupCommand) -> None:
        self.commands.extend(commands)

    def shutdown(self, timeout: float = 5.0) -> bool:
        return True

    def snapshot(self, pane_id: str, path: Path | None) -> ChatSnapshot:
        return ChatSnapshot(None)

    def close(self) -> None:
        pass

    def subscribe(self, listener: Callable[[EngineEvent], object]) -> None:
        pass


def make_app(panes: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PanechatApp:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = load_config()
    config = replace(config, context=ContextParams(n_ctx=2048, n_batch=64, n_seq_max=8))
    return PanechatApp(
        config,
        ScriptedSource(),
        model_name="Gemma 3 270m",
        backend="CPU",
        panes=panes,
        persist_theme=False,
    )


async def script(pilot: Any) -> None:
    app: PanechatApp = pilot.app
    for pane in app.panes:
        pane.input.cursor_blink = False
    answers = ["The capital of France is **Paris**.", "Paris, on the Seine.", "Paris!", "Paris"]
    chats = ChatTrees()
    for i, pane in enumerate(app.panes):
        question = "What is the capital of France?"
        await app.send_to(pane, question)
        delta = chats.answer(pane.pane_id, question, answers[i % len(answers)])
        delta.tokens_per_second, delta.context_used = 50.0 + i, 40 + i
        app.post_message(
            FrameUpdate(
                {pane.pane_id: delta},
                FrameStats(
                    frame=i + 1,
                    batch_tokens=len(app.panes),
                    generating=0,
                    tokens_per_second=110.0,
                    kv_used=160,
                    kv_total=2048,
                ),
            )
        )
    await pilot.pause()
    await pilot.pause(0.2)


@pytest.mark.parametrize("panes", [2, 4])
def test_layout_snapshot(
    panes: int, snap_compare: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make_app(panes, monkeypatch, tmp_path)
    assert snap_compare(app, terminal_size=(120, 30), run_before=script)


async def script_versions(pilot: Any) -> ChatTrees:
    """One pane: a reply with token odds, then a regenerated version of it."""
    app: PanechatApp = pilot.app
    pane = app.panes[0]
    pane.input.cursor_blink = False
    await app.send_to(pane, "Name a colour.")
    words = [(" Blue", 0.62), (" is", 0.91), (" a", 0.35), (" colour", 0.08), (".", 0.97)]
    tokens = [
        TokenStat(i, piece, p, (Alternative(100 + i, " red", (1 - p) / 2),))
        for i, (piece, p) in enumerate(words)
    ]
    chats = ChatTrees()
    for question, text in (("Name a colour.", "Blue is a colour."), ("", "Red.")):
        delta = chats.answer(pane.pane_id, question, text, tokens if question else tokens[:1])
        app.post_message(FrameUpdate({pane.pane_id: delta}, FrameStats(frame=1)))
        await pilot.pause()
    await pilot.pause(0.2)
    return chats


async def branch_tree(pilot: Any) -> None:
    await script_versions(pilot)
    await pilot.press("alt+t")
    await pilot.pause(0.2)


async def token_view(pilot: Any) -> None:
    chats = await script_versions(pilot)
    app: PanechatApp = pilot.app
    pane = app.panes[0]
    await pilot.press("alt+left")  # the first version: its five tokens
    await pilot.pause()
    asked = app.source.commands[-1]  # type: ignore[attr-defined]
    assert isinstance(asked, ShowMessage)  # the engine shows it: this frame says so
    shown = chats.show(pane.pane_id, asked.message_id)
    app.post_message(FrameUpdate({pane.pane_id: shown}, FrameStats(frame=2)))
    await pilot.pause()
    await pilot.press("alt+p", "right", "right", "right")  # " colour", the least likely
    await pilot.pause(0.2)


@pytest.mark.parametrize("screen", ["branches", "tokens"])
def test_branch_and_token_screen_snapshots(
    screen: str, snap_compare: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make_app(1, monkeypatch, tmp_path)
    run = branch_tree if screen == "branches" else token_view
    assert snap_compare(app, terminal_size=(120, 30), run_before=run)
