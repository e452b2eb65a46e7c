"""Pilot tests of the app on the real model: panes stream together from one shared batch."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Tree

from core import (
    BatchedExecutor,
    ContextParams,
    LlamaWeights,
    PrefixSharing,
    SamplingParams,
    StopReason,
    model_template,
)
from core.chat import (
    DEFAULT,
    ChatConfig,
    ChatContext,
    ChatDelta,
    ChatEngine,
    ChatEngineGroup,
    Exchange,
    Frame,
    Role,
    SavedState,
    TreeChange,
    TreeMessage,
    TurnState,
)
from tui.app import PanechatApp
from tui.config import AppConfig, load_config
from tui.launch import create_app
from tui.open_session import OpenSession
from tui.screens.branch_screen import BranchScreen
from tui.screens.compare_screen import CompareScreen
from tui.screens.sessions_screen import SessionsScreen
from tui.screens.token_screen import TokenScreen
from tui.session_store import SessionStore
from tui.widgets.chat_message import ChatMessage
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
        template = model_template(weights, cfg.template)
        return create_app(cfg, ChatEngine(executor, template), persist_theme=False, **kwargs)  # type: ignore[arg-type]

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


async def ask(pilot: object, app: PanechatApp, pane: ChatPane, text: str, count: int = 1) -> None:
    """Send a turn and wait for the pane's ``count``-th finished reply."""
    await app.send_to(pane, text)
    await wait_for(pilot, finished(pane, count))


async def edit_turn(pilot: Pilot[Any], pane: ChatPane, steps_up: int, old: str, new: str) -> None:
    """Select the user message ``steps_up`` messages up, load it (Alt+E) and send ``new``
    as its new version."""
    pane.input.focus()
    await pilot.press(*["alt+up"] * steps_up, "alt+e")
    await wait_for(pilot, lambda: pane.input.text == old)
    pane.input.clear()
    await pilot.press(*new, "enter")


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
            for f in app.frames.seen
            if f.deltas.get(first.pane_id, None)
            and f.deltas[first.pane_id].text
            and f.deltas.get(second.pane_id, None)
            and f.deltas[second.pane_id].text
        ]
        assert shared, "no frame carried text for both panes"
        assert any(f.stats.batch_tokens >= 2 for f in shared)
        assert replies(first)[0].strip() and replies(second)[0].strip()
        assert app.gc_policy.applied and gc.get_freeze_count() > 0  # see tui/gc_policy.py
    assert not app.gc_policy.applied and gc.get_freeze_count() == 0  # undone on exit


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


async def test_broadcast_right_after_fast_typing_sends_every_key(make_app: Factory) -> None:
    """Keys reach the app faster than the input handles them (a fast typist, a paste
    tool): Ctrl+B must send everything typed before it, and leave nothing behind."""
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        first = app.panes[0]
        first.input.focus()
        await pilot.pause()
        typed = "Tell me about the sea please"
        for char in typed:  # in one go, as a terminal delivers them, without waiting
            app.post_message(events.Key(char if char != " " else "space", char))
        app.post_message(events.Key("ctrl+b", None))
        await wait_for(pilot, lambda: all(p.messages() for p in app.panes))
        for pane in app.panes:
            assert pane.messages()[0] == ("user", typed)
        await pilot.pause()
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
    assert isinstance(config.panes[0], ChatConfig)
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


def loop_of(app: PanechatApp) -> ChatEngine:
    """The engine of the app's default model (its panes are on it)."""
    assert isinstance(app.source, ChatEngineGroup)
    engine = app.source.engine(DEFAULT)
    assert isinstance(engine, ChatEngine)
    return engine


def held(app: PanechatApp, pane_id: str) -> ChatContext | None:
    """What a pane's chat holds in the KV, read between two frames (None: not open)."""
    assert isinstance(app.source, ChatEngineGroup)
    return app.source.context(pane_id)


def idle(app: PanechatApp) -> bool:
    """Nothing left to do: every command applied, no reply streaming."""
    assert isinstance(app.source, ChatEngineGroup)
    return not app.source.busy


def tokens_held(app: PanechatApp, pane_id: str) -> tuple[int, ...]:
    context = held(app, pane_id)
    assert context is not None
    return context.tokens


async def test_fork_shares_the_history_without_decoding_it_again(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        source = app.panes[0]
        await ask(pilot, app, source, "Tell me about the ocean.")
        loop = loop_of(app)
        executor = loop.executor
        decoded_before = executor.stats.tokens_decoded
        source_tokens = len(tokens_held(app, source.pane_id))
        source.input.focus()
        await pilot.press("ctrl+t")
        fork = app.panes[1]
        assert fork.config.name.endswith("⑂") and "after 1 turn" in fork.branched_from
        await wait_for(pilot, lambda: held(app, fork.pane_id) is not None)
        # The branch holds the whole history, and nothing was decoded to get it there.
        assert len(tokens_held(app, fork.pane_id)) == source_tokens
        assert executor.stats.tokens_decoded == decoded_before
        assert executor.batched_token_count == 0
        assert [r for r, _ in fork.messages()] == ["user", "assistant"]
        # Both answer the next turn: only the new turns' tokens get decoded.
        await app.send_to(source, "And the mountains?")
        await app.send_to(fork, "And the rivers?")
        await wait_for(pilot, lambda: finished(source, 2)() and finished(fork)())
        assert replies(fork)[-1].strip() and replies(source)[-1].strip()
        # A fork of the fork shares the same way.
        fork.input.focus()
        await pilot.press("ctrl+t")
        grandchild = app.panes[2]
        assert "⑂" in grandchild.config.name and "after 2 turns" in grandchild.branched_from
        await wait_for(pilot, lambda: held(app, grandchild.pane_id) is not None)
        decoded = executor.stats.tokens_decoded
        assert tokens_held(app, grandchild.pane_id) == tokens_held(app, fork.pane_id)
        assert executor.stats.tokens_decoded == decoded


async def test_regenerate_with_a_fixed_seed_gives_the_same_reply_and_keeps_both(
    make_app: Factory,
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        assert pane.config.sampling.seed == 7 and not pane.config.sampling.greedy
        await app.send_to(pane, "Write a short poem about tea.")
        await wait_for(pilot, finished(pane))
        first, first_id = pane.last_reply, pane.chat_tree.head
        tokens_after_first = len(tokens_held(app, pane.pane_id))
        pane.input.focus()
        await pilot.press("ctrl+r")
        await wait_for(pilot, finished(pane, 2))
        assert pane.last_reply == first  # same seed, same point: same reply
        assert len(tokens_held(app, pane.pane_id)) == tokens_after_first
        second_id = pane.chat_tree.head
        assert second_id != first_id and len(replies(pane)) == 1  # one shown, two versions
        assert pane.chat_tree.siblings(second_id or 0).count == 2
        assert "2/2" in str(pane.query(".-assistant").last().border_title)
        await pilot.press("alt+left")  # shown once the engine's frame says so
        await wait_for(pilot, lambda: pane.chat_tree.head == first_id)
        assert "1/2" in str(pane.query(".-assistant").last().border_title)
        await pilot.press("alt+right")
        await wait_for(pilot, lambda: pane.chat_tree.head == second_id)


async def test_regenerate_without_a_reply_says_what_to_do(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        pane.input.focus()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "nothing to regenerate" in str(pane.messages_text()))


async def test_export_writes_every_pane_as_a_section(make_app: Factory, tmp_path: Path) -> None:
    app = make_app()
    app.export_dir = tmp_path / "exports"
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        first, second = app.panes
        await app.send_to(first, "Tell me about the ocean.")
        await wait_for(pilot, finished(first))
        await pilot.press("ctrl+e")
        await pilot.pause()
    files = list((tmp_path / "exports").glob("panechat-*.md"))
    assert len(files) == 1
    text = files[0].read_text()
    assert f"## {first.config.name}" in text and f"## {second.config.name}" in text
    assert "Tell me about the ocean." in text
    assert first.last_reply.strip().splitlines()[0] in text


async def test_editing_a_middle_message_keeps_the_old_branch_and_switches_back(
    make_app: Factory,
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Tell me about the ocean.")
        await ask(pilot, app, pane, "And the mountans?", 2)
        original = pane.messages()
        await edit_turn(pilot, pane, 4, "Tell me about the ocean.", "Tell me about the sea.")
        await wait_for(pilot, finished(pane, 3))
        assert [t for r, t in pane.messages() if r == "user"] == ["Tell me about the sea."]
        context = held(app, pane.pane_id)
        assert context is not None and context.users == ["Tell me about the sea."]
        assert len(pane.chat_tree.leaves()) == 2
        assert "1/2" not in str(pane.query(".-user").first().border_title)
        assert "2/2" in str(pane.query(".-user").first().border_title)

        await pilot.press("alt+up", "alt+up", "alt+left")  # the first version, and its branch
        await wait_for(pilot, lambda: pane.messages() == original)
        await wait_for(pilot, lambda: idle(app))
        context = held(app, pane.pane_id)
        assert context is not None
        assert context.users == ["Tell me about the ocean.", "And the mountans?"]
        assert context.in_step  # the KV holds exactly the rendering of the branch shown
        await ask(pilot, app, pane, "And the rivers?", 4)  # it goes on from the branch shown
        assert [t for r, t in pane.messages() if r == "user"][-1] == "And the rivers?"
        assert pane.last_reply.strip()


async def test_a_notice_stays_with_its_branch_when_the_branch_comes_back(
    make_app: Factory,
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Name a colour.")
        await pane.add_notice("⚠ a notice on the first branch")
        await edit_turn(pilot, pane, 2, "Name a colour.", "Name a fruit.")
        await wait_for(pilot, finished(pane, 2))
        assert "⚠ a notice on the first branch" not in pane.messages_text()
        await pilot.press("alt+up", "alt+up", "alt+left")
        await wait_for(pilot, lambda: idle(app))
        shown = pane.messages_text()
        assert "⚠ a notice on the first branch" in shown
        assert shown.index("⚠ a notice on the first branch") == len(shown) - 1  # after the reply


async def test_the_branch_screen_jumps_to_a_branch_and_export_writes_them_all(
    make_app: Factory, tmp_path: Path
) -> None:
    app = make_app()
    app.export_dir = tmp_path / "exports"
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Name a colour.")
        first_reply = pane.chat_tree.head
        pane.input.focus()
        await pilot.press("ctrl+r")
        await wait_for(pilot, finished(pane, 2))
        await pilot.press("alt+t")
        await wait_for(pilot, lambda: isinstance(app.screen, BranchScreen))
        await pilot.pause()  # the screen's own cursor (on the branch shown) is placed first
        tree = app.screen.query_one("#branch-tree", Tree)
        nodes, stack = [], list(tree.root.children)
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(node.children)
        tree.move_cursor(next(n for n in nodes if n.data == first_reply))
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.chat_tree.head == first_reply)
        assert not isinstance(app.screen, BranchScreen)
        app.action_export_branches()
        await pilot.pause()
    (export,) = (tmp_path / "exports").glob("panechat-branches-*.md")
    text = export.read_text()
    assert "## Branch 1 of 2" in text and "## Branch 2 of 2" in text
    assert text.count("Name a colour.") == 2


async def test_the_token_view_branches_at_an_alternative_and_the_odds_are_saved(
    make_app: Factory, tmp_path: Path
) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(store=store)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Name a colour.")
        first = pane.chat_tree[pane.chat_tree.head or 0]
        assert first.tokens and all(0 < t.probability <= 1 for t in first.tokens)
        pane.input.focus()
        await pilot.press("alt+p")
        await wait_for(pilot, lambda: isinstance(app.screen, TokenScreen))
        screen = app.screen
        assert isinstance(screen, TokenScreen)
        await pilot.press("right", "right")  # the third token
        assert screen.cursor == 2
        screen.choices.highlighted = 1  # the likeliest token the model did not choose
        alternative = first.tokens[2].alternatives[0]
        await pilot.press("enter")
        await wait_for(pilot, finished(pane, 2))
        second = pane.chat_tree[pane.chat_tree.head or 0]
        assert second.parent == first.parent and pane.chat_tree.siblings(second.id).count == 2
        assert [t.token for t in second.tokens[:3]] == [
            *(t.token for t in first.tokens[:2]),
            alternative.token,
        ]
        begun = "".join(t.piece for t in second.tokens[:3]).strip()
        assert pane.messages()[-1][1].strip().startswith(begun)
        session_id = app.session_id
    saved = SessionStore(tmp_path / "sessions.db").load(session_id or 0)[0]
    replies = [m for m in saved.chat_tree() if m.role.value == "assistant"]
    assert len(replies) == 2 and all(r.tokens for r in replies)
    assert replies[1].tokens[2].token == alternative.token


async def test_a_reply_branched_at_a_token_shows_the_odds_it_was_chosen_from(
    make_app: Factory, tmp_path: Path
) -> None:
    """Issue #25: the token chosen in the token view came with no alternatives in the new
    reply, so it could not be branched from again."""
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(store=store)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Name a colour.")
        first = pane.chat_tree[pane.chat_tree.head or 0]
        weighed = first.tokens[2]
        choices = {weighed.token, *(a.token for a in weighed.alternatives)}

        async def branch_at_third_token(pick: Callable[[TokenScreen], int]) -> TokenScreen:
            pane.input.focus()
            await pilot.press("alt+p")
            await wait_for(pilot, lambda: isinstance(app.screen, TokenScreen))
            screen = app.screen
            assert isinstance(screen, TokenScreen)
            await pilot.press("right", "right")
            screen.choices.highlighted = pick(screen)
            await pilot.press("enter")
            return screen

        await branch_at_third_token(lambda _: 1)  # the likeliest token the model did not choose
        await wait_for(pilot, finished(pane, 2))
        second = pane.chat_tree[pane.chat_tree.head or 0]
        forced = second.tokens[2]
        assert forced.token == weighed.alternatives[0].token and forced.forced
        # The odds it was chosen from: the model's token now among the others.
        assert {forced.token, *(a.token for a in forced.alternatives)} == choices
        assert len(forced.alternatives) == len(weighed.alternatives)
        model_choice = next(a for a in forced.alternatives if a.token == weighed.token)
        assert model_choice.probability == weighed.probability

        def model_choice_row(screen: TokenScreen) -> int:
            shown = screen.tokens[screen.cursor]
            assert shown == forced  # the view lists them, with "your choice" on top
            prompts = [str(o.prompt) for o in screen.choices.options]
            assert "your choice" in prompts[0] and len(prompts) == len(choices)
            return 1 + shown.alternatives.index(model_choice)

        await branch_at_third_token(model_choice_row)  # back to the model's own token
        await wait_for(pilot, finished(pane, 3))
        third = pane.chat_tree[pane.chat_tree.head or 0]
        assert third.tokens[2].token == weighed.token and third.tokens[2].forced
        assert pane.chat_tree.siblings(third.id).count == 3
        session_id = app.session_id
    saved = SessionStore(tmp_path / "sessions.db").load(session_id or 0)[0]
    replies = [m for m in saved.chat_tree() if m.role.value == "assistant"]
    saved_forced = replies[1].tokens[2]  # saved with its odds, as the user's choice
    assert saved_forced.forced and saved_forced.alternatives
    assert [a.token for a in saved_forced.alternatives] == [a.token for a in forced.alternatives]


async def test_a_click_anywhere_in_a_pane_makes_typing_land_in_its_input(
    make_app: Factory,
) -> None:
    """Issue #25: a click on a pane's transcript lit the pane up but focused the transcript,
    so what was typed next went nowhere. Before the first message, the status line says
    something (it read ``KV 0/0``)."""
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        status = str(app.status_bar.render())
        assert "KV 0/0" not in status and "ready · KV " in status and "/2048" in status
        left, right = app.panes[:2]
        await ask(pilot, app, left, "Name a colour.")
        right.input.focus()
        await pilot.pause()
        targets = (
            (left, left.query(ChatMessage).last()),  # a reply in the transcript
            (right, right.transcript),  # an empty transcript
            (left, left.title_bar),
            (right, right.title_bar),
            (left, left.transcript),
        )
        for pane, target in targets:
            assert await pilot.click(target, offset=(2, 0))
            await pilot.pause()
            assert app.focused is pane.input, (pane.pane_id, target)
        await pilot.press("h", "i")
        assert left.input.text == "hi" and right.input.text == ""
        assert "KV 0/" not in str(app.status_bar.render())  # the reply's figures now
        # A drag still selects text (a press in a pane keeps doing what it did there).
        right.input.focus()
        question = left.query(ChatMessage).first()
        await pilot.mouse_down(question, offset=(0, 1))
        await pilot.hover(question, offset=(6, 1))
        await pilot.mouse_up(question, offset=(6, 1))
        await pilot.pause()
        assert app.screen.get_selected_text() and app.focused is left.input


async def test_a_reply_from_a_model_since_renamed_shows_its_tokens_and_branches(
    make_app: Factory,
) -> None:
    """Odds name the model by its config name, which a user may change: the view says who
    wrote the reply, and branching goes by the tokens' text, which this vocabulary shares."""
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Name a colour.")
        first = pane.chat_tree[pane.chat_tree.head or 0]
        first.model = "gemma-before-a-rename"  # as a session saved under the old name reads
        pane.input.focus()
        await pilot.press("alt+p")
        await wait_for(pilot, lambda: isinstance(app.screen, TokenScreen))
        screen = app.screen
        assert isinstance(screen, TokenScreen)
        assert screen.written_by == "gemma-before-a-rename"
        await pilot.press("right")
        screen.choices.highlighted = 1
        await pilot.press("enter")
        await wait_for(pilot, finished(pane, 2))
        assert pane.chat_tree.siblings(pane.chat_tree.head or 0).count == 2


async def test_panes_with_one_system_prompt_decode_it_once(
    make_app: Factory, config: AppConfig
) -> None:
    persona = config.panes[0]
    same = replace(config, panes=(persona, replace(persona, name="B"), replace(persona, name="C")))
    app = make_app(config=same)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        loop = loop_of(app)
        await wait_for(pilot, lambda: all(held(app, p.pane_id) for p in app.panes))
        assert loop.prefix_sharing() == PrefixSharing(prefilled=1, shared=2)
        system_tokens = len(tokens_held(app, app.panes[0].pane_id))
        assert system_tokens > 5
        assert loop.executor.stats.tokens_decoded <= system_tokens + 16  # + the warm-up
        for pane, question in zip(app.panes, ("Ocean?", "Mountains?", "Rivers?"), strict=True):
            await app.send_to(pane, question)
        await wait_for(pilot, lambda: all(finished(p)() for p in app.panes))


async def test_a_long_chat_shifts_its_oldest_turns_out_and_keeps_going(
    make_app: Factory, config: AppConfig
) -> None:
    small = replace(
        config,
        context=ContextParams(n_ctx=512, n_batch=256, n_seq_max=2),
        panes=config.panes[:1],
    )
    app = make_app(config=small)
    async with app.run_test(size=(140, 40)) as pilot:
        (pane,) = app.panes
        await wait_for(pilot, lambda: bool(held(app, pane.pane_id)))
        await wait_for(pilot, lambda: len(tokens_held(app, pane.pane_id)) > 0)
        system = tokens_held(app, pane.pane_id)  # the system prompt, decoded at open
        turns = 14
        for i in range(turns):
            await app.send_to(pane, f"Question {i}: name one more thing about the sea, please.")
            await wait_for(pilot, finished(pane, i + 1))
        context = held(app, pane.pane_id)
        assert context is not None and context.dropped > 0
        assert len(context.tokens) < 512
        assert context.tokens[: len(system)] == system  # the system prompt stayed
        notices = [m.text for m in pane.query(".-notice")]  # type: ignore[attr-defined]
        assert any("oldest turn" in n for n in notices)
        assert len(replies(pane)) == turns  # every turn was answered, none was refused
        assert next(t for r, t in pane.messages() if r == "user").startswith("Question 0")


async def test_a_session_survives_a_restart_without_decoding_its_history(
    weights: LlamaWeights, config: AppConfig, tmp_path: Path
) -> None:
    store_path = tmp_path / "data" / "sessions.db"
    template = model_template(weights, config.template)

    def launch(**kwargs: Any) -> tuple[PanechatApp, BatchedExecutor]:
        executor = BatchedExecutor(weights, config.context)
        store = SessionStore(store_path)
        app = create_app(
            config, ChatEngine(executor, template), persist_theme=False, store=store, **kwargs
        )
        return app, executor

    app, executor = launch()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        first = app.panes[0]
        await app.send_to(first, "Tell me about the ocean.")
        # Written once the engine takes the turn (its first frame), before the reply ends: a
        # crash then loses only the reply being streamed.
        assert app.store is not None
        store_now: SessionStore = app.store

        def first_messages() -> list[tuple[str, str]]:
            return store_now.load(app.session_id or 0)[0].messages[:1]

        await wait_for(pilot, lambda: bool(first_messages()))
        assert first_messages() == [("user", "Tell me about the ocean.")]
        await wait_for(pilot, finished(first))
        said = first.last_reply
        tokens = len(tokens_held(app, first.pane_id))
        session_id = app.session_id
    executor.close()
    assert session_id is not None

    store = SessionStore(store_path)
    saved = store.load(session_id)
    store.close()
    assert [p.config.name for p in saved] == [p.name for p in config.panes]
    assert saved[0].messages == [("user", "Tell me about the ocean."), ("assistant", said)]
    assert saved[0].state is not None and saved[0].state.tokens == tokens

    app, executor = launch(session_id=session_id, restore=saved)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        first = app.panes[0]
        assert first.messages() == [("user", "Tell me about the ocean."), ("assistant", said)]
        await wait_for(pilot, lambda: held(app, first.pane_id) is not None)
        assert len(tokens_held(app, first.pane_id)) == tokens
        decoded = executor.stats.tokens_decoded  # warm-up and the other pane's system prompt
        await app.send_to(first, "And the mountains?")
        await wait_for(pilot, finished(first))
        # The next turn decoded only itself and its reply, not the history.
        assert executor.stats.tokens_decoded - decoded < 80
    executor.close()


@pytest.mark.parametrize("damaged", ["kv file", "state record"])
async def test_a_corrupt_saved_state_falls_back_with_a_notice_and_keeps_the_text(
    weights: LlamaWeights, config: AppConfig, tmp_path: Path, damaged: str
) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    session_id = store.create_session("broken")
    pane_id = store.add_pane(session_id, config.panes[0])
    asked = store.add_message(pane_id, "user", "Tell me about the ocean.", None)
    store.add_message(pane_id, "assistant", "The ocean is big and blue.", asked)
    kv = store.kv_path(session_id, pane_id)
    kv.write_bytes(b"not a state file")
    store.save_state(
        pane_id, SavedState(TurnState(turn_starts=(0,), exchanges=(Exchange("Hi"),)), str(kv), 40)
    )
    if damaged == "state record":  # half a JSON object, as a torn write might leave
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE panes SET state = '{\"kv\": ' WHERE id = ?", (pane_id,))
    saved = store.load(session_id)
    assert (saved[0].state is None) == (damaged == "state record")
    executor = BatchedExecutor(weights, config.context)
    template = model_template(weights, config.template)
    app = create_app(
        config,
        ChatEngine(executor, template),
        persist_theme=False,
        store=store,
        session_id=session_id,
        restore=saved,
    )
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        (pane,) = app.panes
        await wait_for(
            pilot, lambda: any("saved state not used" in t for t in pane.messages_text())
        )
        assert pane.messages() == saved[0].messages  # nothing lost
        await app.send_to(pane, "And the mountains?")
        await wait_for(pilot, finished(pane))
        context = held(app, pane.pane_id)
        assert context is not None and len(context.turns) == 2  # history re-read, by turn
    executor.close()


async def test_broadcast_to_a_chosen_set_then_compare_the_replies(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        first, second = app.panes
        first.input.focus()
        await pilot.press("alt+b")  # only the first pane is chosen
        first.input.load_text("Name a colour.")
        await pilot.press("ctrl+b")
        await wait_for(pilot, finished(first))
        assert [r for r, _ in first.messages()] == ["user", "assistant"]
        assert second.messages() == []
        await pilot.press("alt+b")  # nobody chosen: every pane
        first.input.load_text("Name a fruit.")
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: finished(first, 2)() and finished(second)())
        await pilot.press("ctrl+g")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert [r.pane for r in screen.replies] == [first.config.name, second.config.name]
        for reply in screen.replies:
            assert reply.text and reply.tokens > 0 and reply.tokens_per_second > 0
        await pilot.press("escape")


async def test_sessions_screen_renames_deletes_and_opens_another(
    weights: LlamaWeights, config: AppConfig, tmp_path: Path
) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    other = store.create_session("yesterday")
    doomed = store.create_session("scratch")
    executor = BatchedExecutor(weights, config.context)
    template = model_template(weights, config.template)
    app = create_app(config, ChatEngine(executor, template), persist_theme=False, store=store)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        table = screen.query_one(DataTable)
        keys = [row.value for row in table.rows]
        assert keys[:1] == [str(app.session_id)] or str(app.session_id) in keys
        table.move_cursor(row=keys.index(str(doomed)))
        await pilot.press("d", "d")
        assert doomed not in {s.id for s in store.sessions()}
        keys = [row.value for row in table.rows]
        table.move_cursor(row=keys.index(str(other)))
        await pilot.press("r", *"monday", "enter")
        assert {s.id: s.name for s in store.sessions()}[other] == "monday"
        hostile = "[/x] [@click=app.quit]click[/] \x1b[2J"  # bad markup, an action, an escape
        await pilot.press("r")
        screen.query_one("#rename", Input).value = hostile
        await pilot.press("enter")
        await pilot.pause()
        assert {s.id: s.name for s in store.sessions()}[other] == hostile.strip()
        assert app.return_code is None and app.screen is screen  # shown, not run
        await pilot.press("enter")  # open it: the app exits asking for that session
        await pilot.pause()
    assert app.return_value == OpenSession(other)
    executor.close()


@pytest.mark.parametrize("how", ["SIGTERM", "ctrl+c"])
async def test_sigterm_and_ctrl_c_quit_and_save_as_ctrl_q_does(
    make_app: Factory, tmp_path: Path, how: str
) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(store=store)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Hello there.")
        assert app.return_code is None
        if how == "SIGTERM":
            # Only with the handler in place: the default would end the test run.
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            await pilot.press("ctrl+c")
        for _ in range(100):
            if app.return_code is not None:
                break
            await asyncio.sleep(0.05)
        assert app.return_code == 0  # it quit by itself, before the test left it
    saved = store.load(app.session_id or 0)
    store.close()
    assert saved[0].state is not None  # the decode state was saved, as on Ctrl+Q
    assert saved[0].messages[0] == ("user", "Hello there.")
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)  # handler removed


async def test_ctrl_c_with_a_selection_copies_it(make_app: Factory) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        pane = app.panes[0]
        pane.input.focus()
        pane.input.load_text("copy me")
        pane.input.select_all()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.return_code is None and app.clipboard == "copy me"


async def test_a_huge_paste_gets_a_notice_and_the_other_pane_keeps_streaming(
    make_app: Factory, config: AppConfig
) -> None:
    """200,000 characters do not fit a 2,048-token context: the pane says so and keeps the
    text on screen; the pane beside it streams on while the paste is read and refused."""
    greedy = SamplingParams(temperature=0.0)
    # With this persona the embedded model answers the question below at length.
    system = "A helpful assistant answers briefly."
    long_reply = replace(config.panes[1], system=system, sampling=greedy, max_tokens=300)
    app = make_app(config=replace(config, panes=(config.panes[0], long_reply)))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        first, second = app.panes
        await app.send_to(second, "Count from one to fifty in words.")
        await wait_for(pilot, lambda: len(replies(second)) == 1 and len(replies(second)[0]) > 20)
        paste = "Grüße, 世界! " * 18_182  # 200,002 characters, multi-byte ones included
        first.input.focus()
        await pilot.pause()
        app.post_message(events.Paste(paste))  # as the terminal driver delivers it
        await pilot.pause()
        assert first.input.text == paste
        shown_at: list[tuple[float, int]] = []
        loop = asyncio.get_running_loop()
        await pilot.press("enter")
        while second.generating or not shown_at:
            shown_at.append((loop.time(), len(replies(second)[0])))
            await pilot.pause(0.05)
            assert shown_at[-1][0] - shown_at[0][0] < 120  # not for ever (a busy machine)
        notices = [m.text for m in first.query(".-notice")]  # type: ignore[attr-defined]
        assert any("context full" in n for n in notices), notices
        assert first.messages()[0] == ("user", paste.strip())  # kept, not lost
        growth = [t for (_, before), (t, n) in itertools.pairwise(shown_at) if n > before]
        gaps = [b - a for a, b in itertools.pairwise(growth)]
        assert growth and max(gaps, default=0.0) < 2.0, gaps  # it kept streaming


@pytest.mark.parametrize("when", ["buffered", "during shutdown"])
async def test_quitting_saves_what_the_screen_had_not_shown_yet(
    make_app: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A frame the engine emitted just before quit (or while it stops) still reaches the
    transcript though the screen never showed it, so the saved text matches the saved KV
    cells: the session's writer has it from the decode loop, not from the screen, and quitting
    waits for it. That the writer is subscribed to the loop, a test that finds a turn in the
    store while the app runs checks: test_a_session_survives_a_restart_without_decoding_its_…"""
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(store=store)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Hello there.")
        # As the engine's thread would, right before the app stops handling messages:
        asked = pane.chat_tree.head
        reply = TreeMessage(
            99, asked, Role.ASSISTANT, "a late reply", [], "", StopReason.END_OF_GENERATION
        )
        late = ChatDelta(
            message_id=99,
            tree_changes=[TreeChange((reply,), 99)],
            text="late",
            started=True,
            finished=StopReason.END_OF_GENERATION,
        )

        def emit() -> None:  # as the decode loop does: to the view, then each subscriber
            app.receive(Frame({pane.pane_id: late}))
            app.recorder.receive(Frame({pane.pane_id: late}))

        if when == "buffered":
            emit()
        else:  # the frame the engine emits while quitting waits for it (no message runs)
            engine = app.source
            stop = engine.shutdown

            def emit_then_stop(timeout: float = 5.0) -> bool:
                emit()
                return stop(timeout)

            monkeypatch.setattr(engine, "shutdown", emit_then_stop)
        app.exit()
    (saved, *_) = store.load(app.session_id or 0)
    store.close()
    assert saved.messages[-1] == ("assistant", "a late reply")


async def test_a_second_ctrl_c_quits_without_waiting_for_a_stuck_decode(
    make_app: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Ctrl+C stops the decode thread off the UI thread; if that hangs (a decode
    that will not stop), a second Ctrl+C exits at once, the transcripts saved as ever."""
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(store=store)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        pane = app.panes[0]
        await ask(pilot, app, pane, "Hello there.")
        engine = app.source
        stop = engine.shutdown

        def stuck_then_stop(timeout: float = 5.0) -> bool:
            time.sleep(min(timeout, 4.0))  # a decode that takes its time to stop
            return stop(timeout)

        monkeypatch.setattr(engine, "shutdown", stuck_then_stop)
        await pilot.press("ctrl+c")
        await pilot.pause(0.3)
        assert app.return_code is None and app.quitting  # still stopping the decode
        pressed = time.monotonic()
        await pilot.press("ctrl+c")
        for _ in range(100):
            if app.return_code is not None:
                break
            await asyncio.sleep(0.02)
    assert app.return_code == 0 and time.monotonic() - pressed < 1.5  # the app has ended
    saved = store.load(app.session_id or 0)
    store.close()
    assert saved[0].messages[0] == ("user", "Hello there.")
