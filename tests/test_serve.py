"""``panechat serve``: its options and errors in-process, and the real thing end to end: the
server as its own process, a headless Chromium driven over the DevTools protocol types a
question into the xterm.js page and broadcasts it, and two panes' streamed replies land in the
served app's sessions database; the page asks no host but its server for anything, and finds
it all; a tab's panechat ends with the server, even one that is frozen or deaf to signals."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from cdp import Cdp, connect, evaluate, open_page
from textual_serve.download_manager import DownloadManager

from tui.cli import run
from tui.serve import PanechatServer, app_command, exposure_warning, parse, serve_command
from tui.served_tab import ServedTab

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
        f"exec {shlex.quote(sys.executable)} -m tui.served_app --panes 2 --theme 'a b'"
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


PROC = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds and watches processes in /proc"
)


def process_state(pid: int) -> str | None:
    """``pid``'s state letter from /proc (R, S, T for stopped, Z…); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def running(pid: int) -> bool:
    """Whether ``pid`` still exists as more than a zombie (a dead process not yet reaped)."""
    return process_state(pid) not in (None, "Z")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run: the tabs' panechat of a server."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


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


def kill_left_over(pids: list[int]) -> None:
    """After a failed test: end the tabs' panechat (each leads a session of its own) that the
    server did not end, so that no process outlives the test."""
    for pid in pids:
        for send in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, signal.SIGKILL)


@dataclass
class Served:
    """``panechat serve`` on a free loopback port, as its own process (and session), with
    its output in files and its data and config folders in the test's tmp_path."""

    process: subprocess.Popen[bytes]
    url: str
    out: Path
    err: Path
    tabs: list[int] = field(default_factory=list)  # the tabs' panechat seen: ended after

    def logs(self) -> str:
        return f"--- serve stdout:\n{tail(self.out)}\n--- serve stderr:\n{tail(self.err)}"

    async def started(self) -> None:
        async def serving() -> bool | None:
            assert self.process.poll() is None, f"panechat serve exited\n{self.logs()}"
            return True if f"open {self.url} in a browser" in tail(self.out) else None

        await until("panechat serve did not say where to open it", serving, 180, self.logs)

    async def tab(self) -> int:
        """The pid of the panechat that the server started for a tab (the only one)."""

        async def started() -> int | None:
            tabs = children(self.process.pid)
            return tabs[0] if tabs else None

        tab = await until("no panechat was started for the tab", started, 180, self.logs)
        self.tabs.append(tab)
        return tab

    async def stop(self) -> int:
        """Ctrl-C in its terminal (which signals the whole foreground group): its exit code."""
        os.killpg(self.process.pid, signal.SIGINT)

        async def exited() -> int | None:
            return self.process.poll()

        return await until("panechat serve did not stop", exited, 300, self.logs)


@contextmanager
def served(tmp_path: Path, *app_args: str) -> Iterator[Served]:
    port = free_port()
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # the app may save its theme there
    }
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "serve", "--port", str(port), *app_args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,  # as from a terminal: a process group of its own
        )
    server = Served(process, f"http://127.0.0.1:{port}", out, err)
    try:
        yield server
    finally:
        tabs = children(process.pid) + server.tabs
        stop_group(process, grace=45)
        kill_left_over(tabs)


@asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[Cdp]:
    """A headless Chromium of its own profile, driven over its DevTools connection."""
    if CHROMIUM is None:
        pytest.skip("no Chromium to drive the served page: apt-get install chromium")
    log, profile = tmp_path / "chromium", tmp_path / "profile"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
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
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    try:

        async def devtools() -> str | None:
            assert process.poll() is None, f"chromium exited\n{tail(log)}"
            port_file = profile / "DevToolsActivePort"
            lines = port_file.read_text().split() if port_file.exists() else []
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}" if len(lines) == 2 else None

        url = await until("chromium did not open DevTools", devtools, 180, lambda: tail(log))
        async with connect(url) as cdp:
            yield cdp
    finally:
        stop_group(process, grace=10)


async def app_drawn(cdp: Cdp, page: str, served: Served) -> None:
    """Until the served app draws in the page (textual.js connects on load — no start button
    without ?delay — and marks the body: -first-byte once the app draws, -closed if its process
    ended)."""

    async def on_screen() -> bool | None:
        classes = await evaluate(cdp, page, "document.body?.className ?? ''")
        assert "-closed" not in classes, f"the page says Session ended\n{served.logs()}"
        return True if "-first-byte" in classes else None

    await until("the app did not draw in the page", on_screen, 300, served.logs)


async def screenshot(cdp: Cdp, page: str) -> None:
    shot = await cdp.send("Page.captureScreenshot", {"format": "png"}, page)
    artifact_path().write_bytes(base64.b64decode(shot["data"]))


@PROC
async def test_a_question_typed_in_a_browser_is_answered_in_two_panes(tmp_path: Path) -> None:
    db = tmp_path / "data" / "panechat" / "sessions.db"
    async with browser(tmp_path) as cdp:
        with served(tmp_path, "--panes", "2") as server:
            await server.started()
            page = await open_page(cdp, 1280, 800)
            try:
                await cdp.send("Page.navigate", {"url": server.url}, page)
                await app_drawn(cdp, page, server)

                async def panes_open() -> bool | None:
                    return True if answered_panes(db)[0] >= 2 else None

                await until("the served app did not open its 2 panes", panes_open, 180, server.logs)
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

                answered = await until("two panes did not answer", two_answers, 300, server.logs)
                assert len(answered) == 2
                await asyncio.sleep(0.5)  # the reply on screen, for the picture
            finally:
                try:
                    await screenshot(cdp, page)
                except Exception as e:  # the picture is an extra: never hide the real failure
                    print(f"no screenshot: {e!r}")
            # Ctrl-C stops the server, which tells each tab's panechat to quit, as when its
            # tab closes (the tabs run in sessions of their own: the signal is not theirs).
            tab = await server.tab()
            assert await server.stop() in (0, 130), server.logs()
            assert tail(server.err).splitlines()[-1:] == ["panechat serve: stopped"], server.logs()
            assert "Traceback" not in tail(server.err) + tail(server.out), server.logs()

            async def tab_gone() -> bool | None:
                return None if running(tab) else True

            await until("a tab's panechat outlived the server", tab_gone, 90, server.logs)


async def test_the_page_asks_its_own_server_for_everything_and_finds_it(tmp_path: Path) -> None:
    """A local tool makes no outside request: the page's font and icon come from the server,
    the websocket goes back to it, and nothing the page asks for is missing."""
    async with browser(tmp_path) as cdp:
        with served(tmp_path, "--no-save") as server:
            await server.started()
            page = await open_page(cdp, 1024, 640)
            requests = cdp.record("Network.requestWillBeSent")
            sockets = cdp.record("Network.webSocketCreated")
            responses = cdp.record("Network.responseReceived")
            failures = cdp.record("Network.loadingFailed")
            await cdp.send("Network.enable", {}, page)
            await cdp.send("Page.navigate", {"url": server.url}, page)
            await app_drawn(cdp, page, server)

            asked = [r["request"]["url"] for r in requests] + [s["url"] for s in sockets]
            origin = server.url.removeprefix("http://")
            own = (f"http://{origin}/", f"ws://{origin}/")
            elsewhere = [url for url in asked if not url.startswith(own)]
            assert asked and not elsewhere, f"the page asked other hosts: {elsewhere}"
            missing = [
                (r["response"]["status"], r["response"]["url"])
                for r in responses
                if r["response"]["status"] >= 400
            ]
            assert not missing, f"the server did not have: {missing}"
            assert not failures, f"requests failed: {failures}"
            font_loaded = (
                "[...document.fonts].some(f => f.family.replace(/[\"']/g, '') === 'Roboto Mono'"
                " && f.status === 'loaded')"
            )

            async def font_in_use() -> bool | None:
                return True if await evaluate(cdp, page, font_loaded) else None

            await until("the terminal's font did not load", font_in_use, 90, server.logs)
            icon = await evaluate(cdp, page, "document.querySelector('link[rel~=icon]')?.href")
            assert isinstance(icon, str) and icon.startswith(f"{server.url}/"), icon
            fetched = await evaluate(
                cdp,
                page,
                f"fetch({icon!r}).then(r => r.status + ' ' + r.headers.get('content-type'))",
            )
            assert str(fetched).startswith("200 image/"), fetched

            assert await server.stop() == 0, server.logs()


@PROC
async def test_a_frozen_tab_is_ended_when_the_server_stops(tmp_path: Path) -> None:
    """A tab whose panechat stopped answering (frozen here with SIGSTOP) does not outlive the
    server: Ctrl-C ends it too, however it behaves."""
    with served(tmp_path, "--no-save") as server:
        await server.started()
        ws_url = server.url.replace("http://", "ws://") + "/ws?width=100&height=30"
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as tab_socket:

            async def drawn() -> bool | None:
                frame = await tab_socket.receive(timeout=120)
                kind = frame.type
                assert kind in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), (
                    f"the tab's connection ended: {frame}\n{server.logs()}"
                )
                return True if kind == aiohttp.WSMsgType.BINARY and len(frame.data) > 10 else None

            await until("the tab's panechat did not draw", drawn, 300, server.logs)
            tab = await server.tab()
            os.kill(tab, signal.SIGSTOP)

            async def frozen() -> bool | None:
                return True if process_state(tab) == "T" else None

            await until("the tab's panechat did not stop", frozen, 90, server.logs)
            assert await server.stop() in (0, 130), server.logs()

            async def tab_gone() -> bool | None:
                return None if running(tab) else True

            await until("the frozen tab's panechat outlived the server", tab_gone, 90, server.logs)


STUBBORN = """
import os, signal, subprocess, sys, time
os.setsid()  # as tui/served_app.py does
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the worker, as is the group
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as pid_file:
    pid_file.write(str(worker.pid))
time.sleep(600)  # reads no quit, and is no Textual app
"""


@PROC
async def test_a_tab_deaf_to_quit_and_sigterm_is_killed_with_all_it_started(
    tmp_path: Path,
) -> None:
    """The last resort when a tab ends: a process that neither quits when asked nor dies of
    SIGTERM, and has started a worker that ignores SIGTERM too, is killed with its worker (a
    stand-in process: real panechat quits when asked, as the tests above show)."""
    worker_pid = tmp_path / "worker.pid"

    async def ignored(data: bytes | str) -> None:
        pass

    async def closed() -> None:
        pass

    tab = ServedTab(
        "exec " + shlex.join([sys.executable, "-c", STUBBORN, str(worker_pid)]),
        write_bytes=ignored,
        write_str=ignored,
        close=closed,
        download_manager=DownloadManager(),
    )
    await tab.start(80, 24)
    assert tab.process is not None

    async def worker_started() -> int | None:
        text = worker_pid.read_text() if worker_pid.exists() else ""
        return int(text) if text else None

    worker = await until("the worker did not start", worker_started, 180, lambda: "")
    try:
        await tab.end(quit_wait=0.5, term_wait=0.5)
        assert tab.process.returncode == -signal.SIGKILL

        async def worker_gone() -> bool | None:
            return None if running(worker) else True

        await until("the tab's worker outlived it", worker_gone, 90, lambda: "")
    finally:
        kill_left_over([tab.process.pid, worker])
