"""``panechat serve``: the app in a web browser, through textual-serve. Every browser tab that
connects gets its own ``panechat`` process (its own model load) behind an xterm.js page, so
this is a way to reach a machine's model from a browser, not a multi-user chat server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.web_runner import GracefulExit
from textual_serve.server import Server, to_int

from core import PanechatError
from tui.served_tab import ServedTab

PROG = "panechat serve"
DEFAULT_PORT = 8000
WARNING = (
    "warning: panechat serve has no authentication or encryption — anyone who can reach "
    "{url} can use this app, its model and the saved sessions of this user; use it only on "
    "a trusted network"
)
WILDCARDS = {"0.0.0.0", "::", ""}
PAGE = Path(__file__).parent / "web"  # the page's template and icon: nothing from other hosts
log = logging.getLogger("textual-serve")


class ServeError(PanechatError):
    """The server cannot start (the port is taken, the host is unknown); one line says why."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve panechat to web browsers: each browser tab runs its own panechat.",
        epilog="Any other options are passed on to the panechat that each tab runs, e.g. "
        "`panechat serve --port 8080 --panes 2 --no-save` (after `--` too).",
        allow_abbrev=False,  # `--p` must not be taken for --port when it is meant for the app
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})"
    )
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="the address browsers reach this server at, when it differs from "
        "http://HOST:PORT (a proxy; HOST 0.0.0.0 defaults to this machine's name)",
    )
    return p


def app_command(app_args: list[str]) -> str:
    """The shell command each connection runs: this same interpreter and panechat, so that a
    tab gets exactly the panechat (and venv) that was asked to serve, in a session of its own
    (tui/served_app.py). It ignores SIGINT, for the moment before it has made that session: a
    Ctrl-C in the server's terminal reaches the server's whole process group, and each tab's
    panechat should quit when the server tells it to (saving its session), not die from it."""
    command = [sys.executable, "-m", "tui.served_app", *app_args]
    return f"trap '' INT; exec {shlex.join(command)}"


def public_url(host: str, port: int) -> str:
    """Where browsers find the page (the page's websocket address is built from it too)."""
    if host in WILDCARDS:
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def exposure_warning(host: str, url: str) -> str | None:
    """The one-line warning for an address other machines can reach; None for loopback."""
    from core.native.rpc import RpcEndpoint

    if RpcEndpoint(host, 1).is_loopback:
        return None
    return WARNING.format(url=url)


def check_bindable(host: str, port: int) -> None:
    """Fail with one line if the server could not listen there, before anything is printed
    (aiohttp would raise from deep inside its event loop, after the start-up message)."""
    if not 0 < port < 65536:
        raise ServeError(f"--port must be between 1 and 65535, not {port}")
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on host {host!r}: {e.strerror} — check --host") from None
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
            try:
                probe.bind(address)
            except OSError as e:
                raise ServeError(_bind_failure(host, port, e)) from None


def _bind_failure(host: str, port: int, error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    hint = "pick another --port" if "in use" in reason else "check --host and --port"
    return f"cannot listen on {host}:{port}: {reason} — {hint}"


class PanechatServer(Server):
    """textual-serve's server with panechat's one start-up line instead of its banner, its own
    page (tui/web/: no font from a font CDN, an icon), and tabs whose panechat is ended when
    the server stops, however it behaves."""

    def __init__(self, command: str, host: str, port: int, url: str) -> None:
        super().__init__(
            command, host=host, port=port, title="panechat", public_url=url, templates_path=PAGE
        )
        self.url = url
        self.connections: set[asyncio.Task[object]] = set()

    def initialize_logging(self) -> None:
        super().initialize_logging()
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # not a line per request

    async def _make_app(self) -> web.Application:
        """textual-serve's routes, and the page's icon (a browser asks for one)."""
        app = await super()._make_app()
        app.router.add_get("/favicon.svg", self.handle_icon, name="icon")
        return app

    async def handle_icon(self, request: web.Request) -> web.FileResponse:
        """panechat's icon for the browser's tab: two panes side by side."""
        return web.FileResponse(PAGE / "favicon.svg", headers={"Content-Type": "image/svg+xml"})

    def serve(self, debug: bool = False) -> None:
        """textual-serve's, except that the line saying where to open the page is printed
        once the socket listens (aiohttp's run_app calls ``print`` then): printed at startup,
        it came before the socket was bound, and a browser opened at once was refused."""
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.add_signal_handler(signal.SIGINT, self.request_exit)
        loop.add_signal_handler(signal.SIGTERM, self.request_exit)
        web.run_app(
            self._make_app(),
            host=self.host,
            port=self.port,
            handle_signals=False,
            loop=loop,
            print=self._listening,
        )

    def _listening(self, _aiohttp_line: str) -> None:
        print(
            f"{PROG}: open {self.url} in a browser — each tab starts its own panechat "
            "(Ctrl-C stops)",
            flush=True,
        )

    async def on_startup(self, app: web.Application) -> None:
        # The tabs' panechat run in sessions of their own, so a closed terminal hangs up on the
        # server alone: it stops as for Ctrl-C, ending them.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request_exit)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """One tab's connection and its panechat, for as long as both last: textual-serve's,
        except that the panechat is ended when it does not quit (tui/served_tab.py), and the
        connection is kept to be cancelled when the server stops."""
        task = asyncio.current_task()
        assert task is not None
        websocket = web.WebSocketResponse(heartbeat=15)
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)

        async def close() -> None:  # the page shows "Session ended" (the app quit)
            await websocket.close()

        tab = ServedTab(
            self.command,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=close,
            download_manager=self.download_manager,
            debug=self.debug,
        )
        self.connections.add(task)
        try:
            await websocket.prepare(request)
            await tab.start(width, height)
            await self._process_messages(websocket, tab)
        except asyncio.CancelledError:
            pass  # the server stops: the tab's panechat is told to quit below
        except Exception as error:
            log.exception(error)
        finally:
            try:
                await tab.end()
            finally:
                self.connections.discard(task)
        await websocket.close()
        return websocket

    async def on_shutdown(self, app: web.Application) -> None:
        """End every tab's connection, and so its panechat: told to quit, then ended if it
        does not. (aiohttp alone would wait for the browsers to hang up first.)"""
        tabs = list(self.connections)
        for task in tabs:
            task.cancel()
        if tabs:
            await asyncio.wait(tabs)  # each is bounded by ServedTab.end's waits


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The server's own options, and the rest: the options for each tab's panechat (a ``--``
    between the two is optional)."""
    args, app_args = parser().parse_known_args(argv)
    if "--" in app_args:
        app_args.remove("--")
    return args, app_args


def serve_command(argv: list[str]) -> int:
    """``panechat serve``: check the app's options and the address up front (one line and
    exit 2 if wrong), then serve until Ctrl-C."""
    args, app_args = parse(argv)
    try:
        _check_app_args(app_args)
        check_bindable(args.host, args.port)
    except PanechatError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    url = args.public_url or public_url(args.host, args.port)
    warning = exposure_warning(args.host, url)
    if warning is not None:
        print(f"{PROG}: {warning}", file=sys.stderr)
    server = PanechatServer(app_command(app_args), args.host, args.port, url)
    try:
        server.serve()
    except OSError as e:  # taken between the check and the start
        print(f"{PROG}: error: {_bind_failure(args.host, args.port, e)}", file=sys.stderr)
        return 2
    except GracefulExit:  # a second Ctrl-C while the tabs quit (a SystemExit of code 1)
        print(f"{PROG}: stopped without waiting: the tabs' panechat were killed", file=sys.stderr)
        return 130
    print(f"{PROG}: stopped", file=sys.stderr)
    return 0


def _check_app_args(app_args: list[str]) -> None:
    """The options each tab's panechat gets, checked here: a wrong one fails now, in this
    terminal, instead of as a closed page in every browser tab."""
    from tui.launch import build_parser, prepare, session_command_given

    app_parser = build_parser()
    app_parser.prog = PROG  # its errors name the command that was typed
    options = app_parser.parse_args(app_args)
    if session_command_given(options):
        raise ServeError("serve runs the chat app: manage saved sessions with plain `panechat`")
    if options.resume is not None:
        # Every tab would reopen the same panes, and two processes writing the same panes'
        # messages and KV files would mix their branches.
        raise ServeError(
            "--resume would open the same saved session in every browser tab — resume it in "
            "one terminal with `panechat --resume`, or serve new chats"
        )
    prepare(options)
