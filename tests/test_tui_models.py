"""A model per pane in the app: [models.NAME] tables, panes that name one, titles and exports
that say which model answered, switching a pane's model from the palette, and a pane whose
model cannot load while the others answer. The second model is a copy of the embedded GGUF
under another name (tests/gguf_models.py): real weights through the real llama.cpp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from gguf_models import with_metadata
from test_tui_app import wait_for

from core import BatchedExecutor, LlamaWeights, model_template
from core.chat import ChatEngine
from tui.app import PanechatApp
from tui.config import ConfigError, load_config
from tui.export import pane_markdown
from tui.launch import create_app
from tui.session_store import SessionStore
from tui.widgets.chat_pane import ChatPane

Factory = Callable[..., PanechatApp]


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("models") / "copy.gguf"
    return with_metadata(target, {"general.name": "Gemma copy"})


def write_config(tmp_path: Path, copy_model: Path, panes: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        f"""
[context]
n_ctx = 2048
n_batch = 256
n_seq_max = 4

[models.copy]
path = "{copy_model}"
n_ctx = 1024

[models.broken]
path = "{tmp_path / "missing.gguf"}"

[pane_defaults]
temperature = 0.0
max_tokens = 16
stop = ["\\n\\n"]
{panes}
""",
        encoding="utf-8",
    )
    return path


TWO_PANES = """
[[panes]]
name = "Here"
system = "A helpful assistant answers briefly."

[[panes]]
name = "There"
system = "A helpful assistant answers briefly."
model = "copy"
"""


@pytest.fixture
async def make_app(
    weights: LlamaWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Factory]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    executors: list[BatchedExecutor] = []

    def make(config_path: Path, **kwargs: Any) -> PanechatApp:
        config = load_config(config_path)
        executor = BatchedExecutor(weights, config.context)
        executors.append(executor)
        template = model_template(weights, config.template)
        return create_app(
            config,
            ChatEngine(executor, template),
            model_name=weights.name,
            persist_theme=False,
            **kwargs,
        )

    yield make
    for executor in executors:
        executor.close()


def done(pane: ChatPane, count: int = 1) -> bool:
    return pane.finished_replies >= count and not pane.generating


def title(pane: ChatPane) -> str:
    return str(pane.title_bar.render())


def notices(pane: ChatPane) -> list[str]:
    """The pane's notices (its system prompt, shown in the same style, left out)."""
    shown = [str(m.text) for m in pane.query(".-notice")]  # type: ignore[attr-defined]
    return [text for text in shown if text.startswith("⚠")]


async def test_two_models_answer_side_by_side_and_titles_name_them(
    make_app: Factory, tmp_path: Path, copy_model: Path
) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(write_config(tmp_path, copy_model, TWO_PANES), store=store)
    async with app.run_test(size=(160, 40)) as pilot:
        here, there = app.panes
        assert "Gemma 3 270m" in title(here) and "copy" in title(there)
        assert there.context_size == 1024  # the copy's own context
        for pane in (here, there):
            await app.send_to(pane, "What is the capital of France?")
        await wait_for(pilot, lambda: done(here) and done(there))
        assert here.last_reply and there.last_reply == here.last_reply  # same weights, greedy
        status = str(app.status_bar.render())  # each model's figures
        assert status.startswith("Gemma 3 270m") and "│ copy · generating 0" in status
        summary = there.reply_summary()
        assert summary.model == "copy"
        assert "model: copy" in pane_markdown(there.transcript_for_export())
    (first, second) = store.load(app.session_id or 0)
    store.close()
    assert (first.config.model, second.config.model) == ("", "copy")


async def test_a_pane_switches_model_from_the_palette_and_goes_on(
    make_app: Factory, tmp_path: Path, copy_model: Path
) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    app = make_app(write_config(tmp_path, copy_model, TWO_PANES), store=store)
    async with app.run_test(size=(160, 40)) as pilot:
        here, _ = app.panes
        await app.send_to(here, "What is the capital of France?")
        await wait_for(pilot, lambda: done(here))
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Answer with copy" in commands and "Answer with Gemma 3 270m" in commands
        here.input.focus()
        await pilot.pause()
        (command,) = [
            c for c in app.get_system_commands(app.screen) if c.title == "Answer with copy"
        ]
        command.callback()
        await wait_for(pilot, lambda: here.config.model == "copy")
        assert "copy" in title(here) and here.context_size == 1024
        assert any("now answered by copy" in n for n in notices(here))
        await app.send_to(here, "And of Italy?")
        await wait_for(pilot, lambda: done(here, 2))
        assert here.last_reply
    (first, _) = store.load(app.session_id or 0)
    store.close()
    assert first.config.model == "copy"  # resume opens it on the model it moved to


async def test_a_pane_whose_model_cannot_load_says_so_and_the_others_answer(
    make_app: Factory, tmp_path: Path, copy_model: Path
) -> None:
    panes = TWO_PANES.replace('model = "copy"', 'model = "broken"')
    app = make_app(write_config(tmp_path, copy_model, panes))
    async with app.run_test(size=(160, 40)) as pilot:
        here, there = app.panes
        for pane in (here, there):
            await app.send_to(pane, "What is the capital of France?")
        await wait_for(pilot, lambda: done(here) and bool(notices(there)))
        (notice,) = notices(there)
        assert "model 'broken'" in notice and "missing.gguf" in notice
        assert "panes on other models carry on" in notice
        assert here.last_reply and not there.last_reply


def test_a_pane_naming_an_unknown_model_is_refused_with_file_and_line(
    tmp_path: Path, copy_model: Path
) -> None:
    path = write_config(tmp_path, copy_model, TWO_PANES.replace('"copy"', '"nope"'))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    line = path.read_text().splitlines().index('model = "nope"') + 1
    assert f"{path}, line {line}: model: no model is named 'nope'" in str(refused.value)
    bad_key = path.read_text().replace("n_ctx = 1024", "n_ctxx = 1024")
    path.write_text(bad_key)
    with pytest.raises(ConfigError, match=r"unknown key 'n_ctxx' in \[models.copy\]"):
        load_config(path)
