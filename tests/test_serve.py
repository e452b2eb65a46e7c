"""``panechat serve``: its options and errors in-process, and the real thing end to end: the
server as its own process, a headless Chromium driven over the DevTools protocol types a
question into the xterm.js page and broadcasts it, and two panes' streamed replies land in the
served app's sessions database."""

from __future__ import annotations

import asyncio
import base64
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from cdp import Cdp, connect, evaluate, open_page

from tui.cli import run
from tui.serve import PanechatServer, app_command, exposure_warning, parse, serve_command

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)
QUESTION = "Say hello in French."
T = TypeVar("T")


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- options and errors, in this process ---------------------------------------------------


def test_loopback_gets_no_warning_and_any_other_address_does() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, "http://x") is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        warning = exposure_warning(host, f"http://{host}:8000")
        assert warning is not None and "anyone who can reach" in warning
        assert "\n" not in warning


def test_a_reachable_address_is_warned_about_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def served(self: PanechatServer, debug: bool = False) -> None:
        assert self.url.startswith("http://") and self.url.endswith(f":{port}")

    monkeypatch.setattr(PanechatServer, "serve", served)
    port = free_port()
    assert serve_command(["--host", "0.0.0.0", "--port", str(port)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "warning:" in err[0] and "anyone who can reach" in err[0]
    assert err[1] == "panechat serve: stopped"


def test_a_port_in_use_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with taken_port() as port:
        assert run(["serve", "--port", str(port)]) == 2  # through `panechat serve`
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("panechat serve: error: cannot listen on 127.0.0.1:")
    assert "in use" in err and "another --port" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--host", "no-such-host.invalid"], "cannot listen on host 'no-such-host.invalid'"),
        (["--port", "0"], "--port must be between 1 and 65535"),
        (["--theme", "no-such-theme"], "unknown theme 'no-such-theme'"),
        (["--sessions"], "manage saved sessions with plain `panechat`"),
        (["--resume"], "same saved session in every browser tab"),
    ],
)
def test_a_bad_address_or_app_option_fails_before_serving(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_command(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_other_options_go_to_each_tabs_panechat_run_by_this_interpreter() -> None:
    args, app_args = parse(["--port", "9000", "--panes", "2", "--", "--no-save"])
    assert (args.host, args.port, app_args) == ("127.0.0.1", 9000, ["--panes", "2", "--no-save"])
    _, app_args = parse(["--p", "2"])  # no abbreviations: `--p` is not --port
    assert app_args == ["--p", "2"]
    command = app_command(["--panes", "2", "--theme", "a b"])
    assert command.endswith(
        f"exec {shlex.quote(sys.executable)} -m tui.cli --panes 2 --theme 'a b'"
    )


# --- the real thing: a browser, the server and each tab's panechat, all their own processes ---


def artifact_path() -> Path:
    folder = os.environ.get("PANECHAT_TEST_ARTIFACTS")
    path = Path(folder) / "serve.png" if folder else ROOT / "tests" / "artifacts" / "serve.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def tail(path: Path, chars: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.replace("\0", "")[-chars:]


async def until(
    what: str, check: Callable[[], Awaitable[T | None]], timeout: float, why: Callable[[], str]
) -> T:
    """``check``'s first value that is not None, polled; a failure saying ``what`` did not
    happen, and ``why`` (the server's log), after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{why()}")
        await asyncio.sleep(0.3)


def answered_panes(db: Path) -> tuple[int, set[int]]:
    """How many panes the served app has opened, and those that have the question and a reply
    to it (an empty tuple's worth while the database does not exist yet)."""
    if not db.exists():
        return 0, set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            panes = con.execute("SELECT count(*) FROM panes").fetchone()[0]
            rows = con.execute("SELECT pane_id, role, text FROM messages").fetchall()
    except sqlite3.OperationalError:  # being created
        return 0, set()
    asked = {pane for pane, role, text in rows if role == "user" and text == QUESTION}
    replied = {pane for pane, role, text in rows if role == "assistant" and text.strip()}
    return int(panes), asked & replied


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """End ``process`` and everything it started (its own session), politely first."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            pass
    for _ in range(50):  # the group outlives its leader while children still exit
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def screenshot(cdp: Cdp, page: str) -> None:
    shot = await cdp.send("Page.captureScreenshot", {"format": "png"}, page)
    artifact_path().write_bytes(base64.b64decode(shot["data"]))


async def test_a_question_typed_in_a_browser_is_answered_in_two_panes(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no Chromium to drive the served page: apt-get install chromium")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "data" / "panechat" / "sessions.db"
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # the app may save its theme there
    }
    out, err, browser_log = tmp_path / "serve.out", tmp_path / "serve.err", tmp_path / "chromium"
    profile = tmp_path / "profile"

    def logs() -> str:
        return f"--- serve stdout:\n{tail(out)}\n--- serve stderr:\n{tail(err)}"

    with out.open("wb") as out_file, err.open("wb") as err_file, browser_log.open("wb") as blog:
        server = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "serve", "--port", str(port), "--panes", "2"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,  # textual-serve starts a panechat per tab: one group
        )
        browser = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-breakpad",  # no crash reporter left behind, nothing in ~/.config
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=blog,
            stderr=blog,
            start_new_session=True,
        )
    try:

        async def serving() -> bool | None:
            assert server.poll() is None, f"panechat serve exited ({server.returncode})\n{logs()}"
            return True if f"open {url} in a browser" in tail(out) else None

        await until("panechat serve did not say where to open it", serving, 60, logs)

        async def devtools() -> str | None:
            assert browser.poll() is None, f"chromium exited\n{tail(browser_log)}"
            lines = (profile / "DevToolsActivePort").read_text().split() if profile.exists() else []
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}" if len(lines) == 2 else None

        devtools_url = await until("chromium did not open DevTools", devtools, 60, logs)
        async with connect(devtools_url) as cdp:
            page = await open_page(cdp, 1280, 800)
            try:
                await cdp.send("Page.navigate", {"url": url}, page)

                async def app_on_screen() -> bool | None:
                    # textual.js connects on load (no start button without ?delay) and marks
                    # the body: -first-byte once the app draws, -closed if its process ended.
                    classes = await evaluate(cdp, page, "document.body?.className ?? ''")
                    assert "-closed" not in classes, f"the page says Session ended\n{logs()}"
                    return True if "-first-byte" in classes else None

                await until("the app did not draw in the page", app_on_screen, 120, logs)

                async def panes_open() -> bool | None:
                    return True if answered_panes(db)[0] >= 2 else None

                await until("the served app did not open its 2 panes", panes_open, 60, logs)
                await asyncio.sleep(1.0)  # the input takes its focus once the panes are drawn
                await evaluate(
                    cdp, page, "document.querySelector('.xterm-helper-textarea').focus()"
                )
                await cdp.send("Input.insertText", {"text": QUESTION}, page)
                ctrl_b = {"modifiers": 2, "key": "b", "code": "KeyB", "windowsVirtualKeyCode": 66}
                for kind in ("rawKeyDown", "keyUp"):
                    await cdp.send("Input.dispatchKeyEvent", {"type": kind, **ctrl_b}, page)

                async def two_answers() -> set[int] | None:
                    answered = answered_panes(db)[1]
                    return answered if len(answered) >= 2 else None

                answered = await until("two panes did not answer", two_answers, 90, logs)
                assert len(answered) == 2
                await asyncio.sleep(0.5)  # the reply on screen, for the picture
            finally:
                try:
                    await screenshot(cdp, page)
                except Exception as e:  # the picture is an extra: never hide the real failure
                    print(f"no screenshot: {e!r}")
        # Ctrl-C in a terminal signals the whole group: the server stops, and each tab's
        # panechat (which ignores SIGINT) is told to quit, as when its tab closes.
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(timeout=60) in (0, 130), logs()
        assert tail(err).splitlines()[-1:] == ["panechat serve: stopped"], logs()
        assert "Traceback" not in tail(err) + tail(out), logs()
        deadline = time.monotonic() + 15
        while group_alive(server.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not group_alive(server.pid), "a tab's panechat outlived the server\n" + logs()
    finally:
        stop_group(browser, grace=10)
        stop_group(server, grace=30)
