"""The app's command line and its wiring, shared by ``panechat`` (:mod:`tui.cli`), ``panechat
serve`` (which checks each tab's options up front) and the app bench: the options parsed, checked
into an :class:`AppConfig`, and the app built around the default model's engine.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from core import PanechatError
from core.chat import ModelEngine
from core.native.device_placement import add_placement_options, placement_from_args
from tui.command_line_models import with_models
from tui.config import AppConfig, load_config
from tui.session_store import SavedPane, SessionStore

if TYPE_CHECKING:
    from textual.driver import Driver

    from tui.app import PanechatApp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="panechat",
        description="Several chats with one local model, side by side, decoded in one batch.",
        epilog="`panechat bench --help`: measure batched decoding on this machine. "
        "`panechat doctor`: what panechat runs on, for bug reports. "
        "`panechat rpc-server --help`: lend this machine's CPU or GPU to another panechat. "
        "`panechat serve --help`: use panechat from a web browser.",
    )
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="GGUF model files; two or more open panes that alternate between them",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH",
        help="GGUF model file (default: embedded); give it again to compare models side by side",
    )
    parser.add_argument("--panes", type=int, metavar="N", help="number of panes to open")
    parser.add_argument("--config", metavar="PATH", help="extra config.toml, read last")
    parser.add_argument("--theme", metavar="NAME", help="theme name (see themes/)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="ID",
        help="reopen a saved session (default: the latest); see --sessions",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="save nothing of this run (no session is kept)"
    )
    add_placement_options(parser)
    parser.add_argument("--sessions", action="store_true", help="list saved sessions and exit")
    parser.add_argument("--rename-session", nargs=2, metavar=("ID", "NAME"), help="rename one")
    parser.add_argument("--delete-session", metavar="ID", help="delete a saved session")
    parser.add_argument(
        "--search", metavar="TEXT", help="print the saved messages that match TEXT and exit"
    )
    parser.add_argument(
        "--version", action=VersionAction, help="versions, backends and CPU; then exit"
    )
    return parser


class VersionAction(argparse.Action):
    """``--version``: the short form of ``panechat doctor`` (no model is loaded)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from core.diagnostics.doctor import Build
        from core.native.amx_trial import TrialRecords
        from core.native.machine import distribution_version

        try:
            print(Build.collect().version_line(TrialRecords()))
        except PanechatError as e:  # the build cannot be described: the version still can
            print(f"panechat {distribution_version('panechat')} ({e})")
        parser.exit()


def known_themes() -> set[str]:
    from textual.theme import BUILTIN_THEMES

    from tui.themes import load_themes

    return set(BUILTIN_THEMES) | {t.name for t in load_themes()}


def prepare(args: argparse.Namespace) -> AppConfig:
    config = load_config(args.config)
    theme = args.theme or config.theme
    if theme not in known_themes():
        names = ", ".join(sorted(known_themes()))
        raise PanechatError(f"unknown theme {theme!r} — pick one of: {names}")
    if args.panes is not None and not 1 <= args.panes <= config.context.n_seq_max:
        raise PanechatError(
            f"--panes must be between 1 and {config.context.n_seq_max} (n_seq_max in [context])"
        )
    placement = placement_from_args(args, config.placement)
    config = replace(config, theme=theme, placement=placement)
    return with_models(config, [*args.model, *args.models], args.panes)


def create_app(
    config: AppConfig,
    engine: ModelEngine,
    *,
    model_name: str = "",
    backend: str = "CPU",
    panes: int | None = None,
    persist_theme: bool = True,
    store: SessionStore | None = None,
    session_id: int | None = None,
    restore: list[SavedPane] | None = None,
    reveal: int | None = None,
    driver_class: type[Driver] | None = None,
) -> PanechatApp:
    """Wire the decode loop (worker thread) to the app it posts its frames to: the default
    model's ``engine`` (the caller's), and the config's other models, loaded on demand.
    ``reveal``: a saved message of ``restore`` to show once the panes are open."""
    from core.chat import ChatEngineGroup
    from tui.app import PanechatApp

    holder: list[PanechatApp] = []
    loop = ChatEngineGroup(
        engine,
        lambda event: holder[0].receive(event),
        specs=config.named_models(),
        default_name=config.default_alias,
        nice=config.decode_nice,
        on_loading=lambda loading: holder[0].receive_loading(loading),
    )
    app = PanechatApp(
        config,
        loop,
        model_name=model_name,
        backend=backend,
        panes=panes,
        persist_theme=persist_theme,
        store=store,
        session_id=session_id,
        restore=restore,
        reveal=reveal,
        driver_class=driver_class,
    )
    holder.append(app)
    return app


def session_command_given(args: argparse.Namespace) -> bool:
    return bool(
        args.sessions or args.rename_session or args.delete_session or args.search is not None
    )
