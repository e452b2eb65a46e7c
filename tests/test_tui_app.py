"""Pilot tests of the app on the real model: panes stream together from one shared batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, template_for
from tui.app import PanechatApp
from tui.cli import create_app
from tui.config import AppConfig, PaneConfig, load_config
from tui.widgets.chat_pane import ChatPane

Factory = Callable[..., PanechatApp]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppConfig:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    base = load_config()
    long_replies = [
        replace(p, stop=(), max_tokens=40, sampling=replace(p.sampling, seed=7))
        for p in base.panes[:2]
    ]
    return replace(
        base,
        context=ContextParams(n_ctx=2048, n_batch=256, n_seq_max=4),
        panes=tuple(long_replies),
        pane_defaults=replace(base.pane_defaults, stop=(), max_tokens=40),
    )


@pytest.fixture
async def make_app(weights: LlamaWeights, config: AppConfig) -> AsyncIterator[Factory]:
    executors: list[BatchedExecutor] = []

    def make(**kwargs: object) -> PanechatApp:
        cfg = kwargs.pop("config", config)
        assert isinstance(cfg, AppConfig)
        executor = BatchedExecutor(weights, cfg.context)
        executors.append(executor)
        template = template_for(weights.chat_template, cfg.template)
        return create_app(cfg, executor, template, persist_theme=False, **kwargs)  # type: ignore[arg-type]

    yield make
    for executor in executors:
        executor.close()


async def wait_for(pilot: object, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def finished(pane: ChatPane, count: int = 1) -> Callable[[], bool]:
    return lambda: pane.finished_replies >= count and not pane.generating


def replies(pane: ChatPane) -> list[str]:
    return [m.text for m in pane.query(".-assistant")]  # type: ignore[attr-defined]


async def test_two_panes_stream_in_one_shared_batch(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        first, second = app.panes
        await app.send_to(first, "Tell me about the ocean.")
        await app.send_to(second, "Tell me about the mountains.")
        await wait_for(pilot, lambda: finished(first)() and finished(second)())
        shared = [
            f
            for f in app.frames_seen
            if f.deltas.get(first.pane_id, None)
            and f.deltas[first.pane_id].text
            and f.deltas.get(second.pane_id, None)
            and f.deltas[second.pane_id].text
        ]
        assert shared, "no frame carried text for both panes"
        assert any(f.stats.batch_tokens >= 2 for f in shared)
        assert replies(first)[0].strip() and replies(second)[0].strip()


async def test_stop_one_pane_while_the_other_finishes(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        first, second = app.panes
        await app.send_to(first, "Write a long story about a dragon.")
        await app.send_to(second, "Write a long story about a knight.")
        await wait_for(pilot, lambda: first.generating and bool(replies(first)))
        first.input.focus()
        await pilot.press("escape")
        await wait_for(pilot, finished(first))
        stopped_text = replies(first)[0]
        await wait_for(pilot, finished(second))
        assert replies(first)[0] == stopped_text  # nothing more arrived after the stop
        assert len(replies(second)[0]) > 0
        # The stopped pane is usable again.
        await app.send_to(first, "And then?")
        await wait_for(pilot, finished(first, 2))


async def test_new_and_close_pane(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        assert len(app.panes) == 2
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert len(app.panes) == 3
        newest = app.panes[-1]
        assert newest.config.name == "Pane 3"
        await app.send_to(newest, "Hello there")
        await wait_for(pilot, finished(newest))
        newest.input.focus()
        await pilot.press("ctrl+w")
        await pilot.pause()
        assert len(app.panes) == 2 and newest not in app.panes
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")  # n_seq_max is 4
        await pilot.pause()
        assert len(app.panes) == 4


async def test_broadcast_sends_the_input_to_every_pane(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        first = app.panes[0]
        first.input.focus()
        await pilot.press(*"Say hi")
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: all(finished(p)() for p in app.panes))
        for pane in app.panes:
            users = [m.text for m in pane.query(".-user")]  # type: ignore[attr-defined]
            assert users == ["Say hi"]
        assert first.input.text == ""


async def test_enter_sends_and_ctrl_j_inserts_a_newline(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        pane = app.panes[0]
        pane.input.focus()
        await pilot.press("h", "i", "ctrl+j", "y", "o")
        assert pane.input.text == "hi\nyo"
        await pilot.press("enter")
        await pilot.pause()
        assert [m.text for m in pane.query(".-user")] == ["hi\nyo"]  # type: ignore[attr-defined]


async def test_theme_switch_and_help_and_maximize(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        assert app.theme == "panechat-dusk"
        app.theme = "panechat-paper"
        await pilot.pause()
        assert app.current_theme.name == "panechat-paper"
        await pilot.press("f1")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        app.panes[1].input.focus()
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.screen.maximized is app.panes[1]
        await pilot.press("ctrl+o")
        assert app.screen.maximized is None


async def test_rebound_keys_from_config(make_app: Factory, config: AppConfig) -> None:
    app = make_app(config=replace(config, keys={"pane.new": "ctrl+t"}))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert len(app.panes) == 3


def test_pane_config_defaults_fill_unlisted_keys(config: AppConfig) -> None:
    assert isinstance(config.panes[0], PaneConfig)
    assert config.panes[0].max_tokens == 40


async def test_full_context_is_reported_and_the_other_pane_carries_on(
    make_app: Factory, config: AppConfig
) -> None:
    small = replace(config, context=ContextParams(n_ctx=256, n_batch=256, n_seq_max=2))
    app = make_app(config=small)
    async with app.run_test(size=(140, 40)) as pilot:
        first, second = app.panes
        await app.send_to(first, "word " * 300)
        await app.send_to(second, "Hello!")
        await wait_for(pilot, finished(second))
        notices = [m.text for m in first.query(".-notice")]  # type: ignore[attr-defined]
        assert any("context full" in n and "ctrl+l" in n for n in notices)
        assert len(replies(second)) == 1  # it answered (possibly briefly) and finished
        first.input.focus()
        await pilot.press("ctrl+l")  # clearing gives the pane a fresh conversation
        await app.send_to(first, "Hi")
        await wait_for(pilot, finished(first))


async def test_palette_lists_every_action_and_copy_uses_the_clipboard(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for wanted in (
            "Next pane",
            "New pane",
            "Close pane",
            "Stop",
            "Stop all",
            "Broadcast",
            "Maximize",
            "Clear",
            "Copy reply",
            "Keys",
            "Theme",
        ):
            assert any(t.startswith(wanted) for t in titles), wanted
        pane = app.panes[0]
        await app.send_to(pane, "Hi")
        await wait_for(pilot, finished(pane))
        pane.input.focus()
        await pilot.press("ctrl+y")
        assert app.clipboard == pane.last_reply and pane.last_reply
