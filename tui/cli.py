"""``panechat`` command line: parse, validate everything up front, then start the app.

Anything wrong before the app starts (config, model, theme) is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from core import PanechatError
from core.models.progress_line import ProgressLine
from core.native.device_placement import placement_from_args
from core.text.printable import printable
from tui.config import load_config
from tui.default_model import DefaultModel, default_model_file
from tui.launch import build_parser, create_app, prepare, session_command_given
from tui.open_session import OpenSession
from tui.session_search import fts_query
from tui.session_store import (
    SessionStore,
    StoreDamagedError,
    default_store_path,
    set_aside,
)


def doctor_command(argv: list[str]) -> int:
    """``panechat doctor``: what panechat runs on, with the config's model and settings."""
    from core.diagnostics.doctor import doctor_parser, run_doctor

    parser = doctor_parser("panechat doctor", layout_default=None)
    parser.add_argument("--config", metavar="PATH", help="extra config.toml, read last")
    args = parser.parse_args(argv)
    _show_amx_trial()
    try:
        config = load_config(args.config)
        run_doctor(
            args.model or config.model_path,
            n_gpu_layers=config.n_gpu_layers,
            layout=args.weight_layout or config.weight_layout,
            threads=config.context.n_threads,
            retry_amx=args.retry_amx,
            placement=placement_from_args(args, config.placement),
        )
    except PanechatError as e:
        print(f"panechat doctor: error: {e}", file=sys.stderr)
        return 2
    return 0


_trial_notice = logging.StreamHandler(sys.stderr)
_trial_notice.setFormatter(logging.Formatter("panechat: %(message)s"))


def _show_amx_trial() -> None:
    """The one-time AMX trial may pause a start for a few seconds: say so on stderr."""
    trial_logger = logging.getLogger("panechat.amx_trial")
    if _trial_notice not in trial_logger.handlers:
        trial_logger.addHandler(_trial_notice)
        trial_logger.setLevel(logging.INFO)


def session_command(args: argparse.Namespace, store: SessionStore) -> int | None:
    """--sessions / --rename-session / --delete-session / --search: do it and exit (None:
    none given)."""
    if args.search is not None:
        return search_command(args.search, store)
    if args.sessions:
        rows = store.sessions()
        if not rows:
            print("no saved sessions yet")
        for s in rows:
            print(f"{s.id:>4}  {printable(s.name)}  ({s.panes} panes, {s.messages} messages)")
        return 0
    if args.rename_session:
        session_id, name = _session_id(args.rename_session[0], store), args.rename_session[1]
        store.rename(session_id, name)
        print(f"renamed session {session_id} to {printable(name)!r}")
        return 0
    if args.delete_session:
        session_id = _session_id(args.delete_session, store)
        store.delete(session_id)
        print(f"deleted session {session_id}")
        return 0
    return None


def search_command(text: str, store: SessionStore) -> int:
    """``--search TEXT``: one line per matching saved message, best first, the matched words
    between « »."""
    if fts_query(text) is None:
        raise PanechatError("--search needs a word to look for")
    hits = store.search(text)
    if not hits:
        print(f"no saved message matches {printable(text)!r}")
    for hit in hits:
        line = (
            f"session {hit.session_id} {hit.session_name} · {hit.pane_name} · {hit.role}: "
            f"{hit.marked('«', '»')}"
        )
        print(printable(line))
    return 0


def _session_id(text: str, store: SessionStore) -> int:
    if text == "latest":
        latest = store.latest()
        if latest is None:
            raise PanechatError("there is no saved session yet — start panechat without --resume")
        return latest
    known = {s.id for s in store.sessions()}
    if not text.isdigit() or int(text) not in known:
        raise PanechatError(f"no saved session {text!r} — `panechat --sessions` lists them")
    return int(text)


def open_store(path: Path) -> SessionStore:
    """The sessions store at ``path``. A damaged file is moved aside (never overwritten) and a
    new one started, with a line saying where the old one went and how to recover it; a file
    that cannot be opened raises PanechatError saying why."""
    try:
        return SessionStore(path)
    except StoreDamagedError as e:
        damaged = e
    except OSError as e:  # the folder cannot be made or written
        raise StoreUnavailableError(
            f"cannot open the saved sessions at {path}: {e} — make {path.parent} writable"
        ) from None
    except sqlite3.Error as e:  # locked past the busy timeout, an I/O error
        raise StoreUnavailableError(f"cannot open the saved sessions at {path}: {e}") from None
    try:
        moved = set_aside(path)
        store = SessionStore(path)
    except (sqlite3.Error, OSError) as e:
        raise StoreUnavailableError(f"{damaged}, and starting a new one failed: {e}") from None
    print(
        f"panechat: {damaged}; moved it to {moved} and started a new one — to recover its "
        f"rows: sqlite3 {moved} .recover | sqlite3 recovered.db",
        file=sys.stderr,
    )
    return store


class StoreUnavailableError(PanechatError):
    """The sessions file cannot be opened or made (an unwritable or missing data folder)."""


def store_for_run(path: Path, wanted: bool) -> tuple[SessionStore | None, str]:
    """The store for an interactive run, and what to tell the user about it: a data folder
    that cannot be written does not stop the chat, it runs unsaved and says so. (Commands
    that only manage sessions need the store: they fail with the reason instead.)"""
    if not wanted:
        return None, ""
    try:
        return open_store(path), ""
    except StoreUnavailableError as e:
        return None, f"this run is not saved: {e}"


def main(argv: list[str] | None = None) -> int:
    """``panechat``. Ctrl+C outside the app's screen (loading the model, saving after quit)
    ends it at once with 130 and one line, not a traceback."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        print("panechat: interrupted", file=sys.stderr)
        return 130


def run(argv: list[str]) -> int:
    if argv[:1] == ["doctor"]:
        return doctor_command(argv[1:])
    if argv[:1] == ["rpc-server"]:
        from core.native.rpc_server import main as rpc_server_main

        return rpc_server_main(argv[1:], prog="panechat rpc-server")
    if argv[:1] == ["api"]:
        from api.cli import api_command

        return api_command(argv[1:])
    if argv[:1] == ["serve"]:
        from tui.serve import serve_command

        return serve_command(argv[1:])
    if argv[:1] == ["bench"]:
        from api.api_bench import api_section
        from core.bench.__main__ import main as bench_main
        from tui.app_bench import app_section

        return bench_main(
            argv[1:], prog="panechat bench", app_section=app_section, api_section=api_section
        )
    args = build_parser().parse_args(argv)
    logging.getLogger("panechat").addHandler(logging.NullHandler())
    _show_amx_trial()
    saves = not args.no_save
    if args.no_save and (args.resume or session_command_given(args)):
        build_parser().error("--no-save runs without the saved sessions; drop one of the two")
    try:
        if args.resume is not None or session_command_given(args):
            store: SessionStore | None = open_store(default_store_path())
            unsaved = ""
        else:
            store, unsaved = store_for_run(default_store_path(), saves)
        done = session_command(args, store) if store is not None else None
        if done is not None and store is not None:
            store.close()
            return done
        session_id = restore = reveal = None
        if args.resume is not None and store is not None:
            session_id = _session_id(args.resume, store)
            restore = store.load(session_id)
        config = prepare(args)
        with ProgressLine(f"loading {default_model_file(config)}") as progress:  # on stderr
            default = DefaultModel.load(config, saved=store is not None, progress=progress)
    except PanechatError as e:
        print(f"panechat: error: {e}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as e:
        print(f"panechat: error: {e}", file=sys.stderr)
        return 2
    from tui.app import SHUTDOWN_WAIT

    stopped = True  # the decode thread has stopped: the model may be freed
    engine = default.engine()
    try:
        while True:  # the sessions screen may ask to reopen the app on another session
            app = create_app(
                config,
                engine,
                model_name=default.name,
                backend=default.backend,
                panes=args.panes,
                store=store,
                session_id=session_id,
                restore=restore,
                reveal=reveal,
            )
            if unsaved:
                app.save_failures.append(unsaved)  # shown once the app is up
            try:
                next_session: OpenSession | None = app.run()
            finally:
                stopped = app.source.shutdown(timeout=0.0 if app.hurry else SHUTDOWN_WAIT)
                if stopped:  # else a decode may still run inside llama.cpp: the exit frees it
                    default.release(engine)
                for failure in app.save_failures:  # the screen that showed them is gone
                    print(f"panechat: {failure}", file=sys.stderr)
            if not stopped:
                print("panechat: quit without waiting for the model to stop", file=sys.stderr)
                return 0
            if next_session is None or store is None:
                break
            session_id, reveal = next_session.session_id, next_session.message_id
            try:
                restore = store.load(session_id)
            except (sqlite3.Error, OSError) as e:
                print(f"panechat: error: cannot open session {session_id}: {e}", file=sys.stderr)
                return 2
            try:
                engine = default.engine()
            except PanechatError as e:
                print(f"panechat: error: {e}", file=sys.stderr)
                return 2
    finally:
        if store is not None:
            store.close()
        if stopped:
            default.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
