"""Loading models: progress while a model loads (llama.cpp's progress callback, shown on stderr
by ``python -m core`` and ``panechat``, and in the app's status bar for a model panes wait
for), and several models from the command line (``panechat a.gguf b.gguf``), in panes that
alternate between them. Real weights through the real llama.cpp: the second model is a copy of
the embedded GGUF under another name (tests/gguf_models.py)."""

from __future__ import annotations

import io
import itertools
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from gguf_models import with_metadata
from test_tui_app import wait_for
from textual.message import Message

from core import ContextParams, LlamaWeights, PanechatError, resolve_model_path
from core.bench.rpc import start_rpc_server
from core.chat import DEFAULT, EngineProcess, ModelLoading, ModelSpec
from core.errors import ModelLoadCancelledError
from core.models.progress_line import LOG_AFTER, ProgressLine
from core.native.device_placement import DevicePlacement
from tui import cli, launch
from tui.default_model import DefaultModel
from tui.messages import ModelLoadProgress
from tui.widgets.chat_pane import ChatPane

SMALL = ContextParams(n_ctx=1024, n_batch=256, n_seq_max=2)

# -- progress ----------------------------------------------------------------------------------


def test_loading_the_embedded_model_reports_growing_fractions_ending_at_one() -> None:
    seen: list[float] = []
    with LlamaWeights.load(resolve_model_path(None), progress=seen.append) as weights:
        assert weights.n_vocab > 0
    assert len(seen) > 2 and seen[0] < 1.0
    assert all(a < b for a, b in itertools.pairwise(seen))  # only ever grows
    assert seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)


def test_an_observer_that_raises_does_not_stop_the_load() -> None:
    calls: list[float] = []

    def broken(fraction: float) -> None:
        calls.append(fraction)
        raise RuntimeError("a view that broke")

    with LlamaWeights.load(resolve_model_path(None), progress=broken) as weights:
        assert weights.n_vocab > 0  # no exception crossed into llama.cpp
    assert len(calls) == 1  # dropped after it failed


def test_an_observer_that_returns_false_cancels_the_load() -> None:
    with pytest.raises(ModelLoadCancelledError, match="cancelled"):
        LlamaWeights.load(resolve_model_path(None), progress=lambda fraction: False)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """Seconds the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_line_redraws_on_a_terminal_and_logs_tenths_elsewhere() -> None:
    terminal, log, quick_log = Terminal(), io.StringIO(), io.StringIO()
    for stream in (terminal, log, quick_log):
        clock = Clock()
        with ProgressLine("loading m.gguf", stream, clock) as line:
            for fraction in (0.0, 0.004, 0.42, 0.425, 0.9, 1.0):
                line(fraction)
                if stream is not quick_log:
                    clock.now += LOG_AFTER / 2  # a slow load: past LOG_AFTER from 0.42 on
    assert terminal.getvalue() == (
        "\rloading m.gguf 0%\rloading m.gguf 42%\rloading m.gguf 90%\rloading m.gguf 100%\n"
    )
    assert log.getvalue() == "loading m.gguf 40%\nloading m.gguf 90%\nloading m.gguf 100%\n"
    assert quick_log.getvalue() == ""  # done within LOG_AFTER: a log hears nothing
    cut_short = Terminal()
    with ProgressLine("loading m.gguf", cut_short) as line:
        line(0.3)
    assert cut_short.getvalue().endswith("30%\n")  # an error that follows starts a new line


def test_python_m_core_shows_load_progress_on_stderr_and_keeps_stdout_clean() -> None:
    """On a terminal (a pseudo-terminal here) the line is redrawn up to 100%; piped, a load
    as quick as the embedded model's says nothing, and an error stays one line."""
    leader, follower = pty.openpty()
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        read: list[bytes] = []
        reader = threading.Thread(target=lambda: read.append(_read_all(terminal)))
        reader.start()  # a terminal's buffer is small: read it while the process writes
        try:
            done = subprocess.run(
                [sys.executable, "-m", "core", "--show-prompt", "Name a fruit."],
                stdout=subprocess.PIPE,
                stderr=follower,
                text=True,
                timeout=120,
            )
        finally:
            os.close(follower)
            reader.join(30)
        shown = b"".join(read).decode("utf-8", "replace")
    assert done.returncode == 0, shown
    assert "\rloading gemma-3-270m-q4_k_m.gguf 100%" in shown
    assert "loading" not in done.stdout and "Name a fruit." in done.stdout
    piped = subprocess.run(
        [sys.executable, "-m", "core", "--show-prompt", "Name a fruit."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0 and "loading" not in piped.stderr + piped.stdout


def _read_all(terminal: BinaryIO) -> bytes:
    """What was written to a pseudo-terminal whose writer has exited (EIO at its end)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = terminal.read(65536)
        except OSError:  # Linux: EIO once no process holds the follower end
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_model_on_an_rpc_server_reports_its_load_from_the_child_process() -> None:
    endpoint, server = start_rpc_server(threads=1)
    seen: list[float] = []
    spec = ModelSpec("far", None, SMALL, placement=DevicePlacement((endpoint,)))
    try:
        process = EngineProcess.start(spec, model="far", progress=seen.append)
        process.close()
    finally:
        server.kill()
        server.wait()
    assert len(seen) > 2 and seen[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(seen))


# -- two models from the command line -------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("two-models")
    first = with_metadata(folder / "alpha.gguf", {"general.name": "Model Alpha"})
    second = with_metadata(folder / "beta.gguf", {"general.name": "Model Beta"})
    return first, second


@pytest.fixture
def small_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user config
    path = tmp_path / "small.toml"
    path.write_text(
        """
[context]
n_ctx = 1024
n_batch = 256
n_seq_max = 4

[pane_defaults]
temperature = 0.0
max_tokens = 12
stop = ["\\n\\n"]

[[panes]]
name = "One"
system = "A helpful assistant answers briefly."
""",
        encoding="utf-8",
    )
    yield path


def test_both_command_line_forms_name_the_models(two_models: tuple[Path, Path]) -> None:
    a, b = (str(p) for p in two_models)
    positional = launch.build_parser().parse_args([a, b])
    repeated = launch.build_parser().parse_args(["--model", a, "--model", b, "--panes", "3"])
    assert positional.models == [a, b] and positional.model == []
    assert repeated.model == [a, b] and repeated.models == [] and repeated.panes == 3


def test_one_model_keeps_the_configured_panes(
    two_models: tuple[Path, Path], small_config: Path
) -> None:
    a = str(two_models[0])
    config = launch.prepare(launch.build_parser().parse_args(["--config", str(small_config), a]))
    assert config.model_path == a and config.model_alias == ""
    assert [p.name for p in config.panes] == ["One"] and config.panes[0].model == ""


def test_a_missing_model_file_is_one_line(
    two_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.gguf"
    code = cli.main(["--no-save", str(two_models[0]), str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"panechat: error: model file not found: {missing}")


async def test_two_models_open_alternating_panes_and_the_second_shows_its_load(
    two_models: tuple[Path, Path], small_config: Path
) -> None:
    a, b = (str(p) for p in two_models)
    args = launch.build_parser().parse_args(["--config", str(small_config), "--panes", "3", a, b])
    config = launch.prepare(args)
    fractions: list[float] = []
    default = DefaultModel.load(config, saved=False, progress=fractions.append)
    assert fractions[-1] == 1.0
    engine = default.engine()
    app = launch.create_app(
        config,
        engine,
        model_name=default.name,
        backend=default.backend,
        panes=args.panes,
        persist_theme=False,
    )
    loads: list[ModelLoading] = []
    shown: list[str] = []  # the status line, as each message arrives

    def watch(message: Message) -> None:
        if isinstance(message, ModelLoadProgress):
            loads.append(message.loading)
        if app.status_bar.is_attached:
            shown.append(str(app.status_bar.render()))

    try:
        async with app.run_test(size=(160, 40), message_hook=watch) as pilot:
            panes = app.panes
            assert [p.config.name for p in panes] == ["alpha", "beta", "alpha"]
            assert "alpha" in title(panes[0]) and "beta" in title(panes[1])
            await wait_for(pilot, lambda: any(load.done for load in loads))
            for pane in panes:
                await app.send_to(pane, "What is the capital of France?")
            await wait_for(pilot, lambda: all(done(pane) for pane in panes))
            models = [app.source.model_of(p.pane_id) for p in panes]  # type: ignore[attr-defined]
            assert models == [DEFAULT, "beta", DEFAULT]
            assert panes[0].last_reply and panes[1].last_reply == panes[0].last_reply
            await pilot.pause()
            final = str(app.status_bar.render())
    finally:
        default.release(engine)
        default.close()
    percents = [load.percent for load in loads if not load.done]
    assert {load.model for load in loads} == {"beta"} and loads[-1].done
    assert percents == sorted(set(percents)) and percents[-1] == 100
    assert any("│ loading beta.gguf " in line for line in shown)  # while it loaded
    assert "loading" not in final  # and then the normal line


def title(pane: ChatPane) -> str:
    return str(pane.title_bar.render())


def done(pane: ChatPane) -> bool:
    return pane.finished_replies >= 1 and not pane.generating


def test_an_unknown_path_in_prepare_names_the_file(tmp_path: Path, small_config: Path) -> None:
    args = launch.build_parser().parse_args(["--config", str(small_config), str(tmp_path / "x")])
    with pytest.raises(PanechatError, match="model file not found"):
        launch.prepare(args)
