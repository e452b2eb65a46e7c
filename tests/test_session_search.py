"""Searching every saved chat: safe FTS5 queries, hits from real sessions files, the
``--search`` command and the search screen."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from core import BatchedExecutor, ContextParams, LlamaWeights, model_template
from core.chat import ChatConfig, ChatEngine
from tui.cli import main
from tui.config import load_config
from tui.launch import create_app
from tui.open_session import OpenSession
from tui.screens.search_screen import (
    EMPTY_HINT,
    MATCH_STYLE,
    NO_MATCHES,
    SearchScreen,
    hit_prompt,
)
from tui.session_search import (
    MATCH_START,
    SearchHit,
    SnippetPart,
    fts_query,
    search_messages,
)
from tui.session_store import _SCHEMA_1, SCHEMA_VERSION, SessionStore, default_store_path

HOSTILE = [
    '"',
    '""',
    'say "hi',
    "AND",
    "cat AND dog",
    "cat OR",
    "NOT cat",
    "foo*",
    "*",
    "NEAR(",
    "NEAR(cat dog, 2)",
    "-x",
    "col:val",
    "text:cat",
    "^cat",
    "(cat",
    "cat)",
    "{text}: cat",
    "+ - * / ; '",
    "a'b",
    "\x00cat",
    'cat\x00" OR "',
    "\x01\x1b[2J cat\x7f",
    "\ue000cat\ue001",
]


def chat(name: str) -> ChatConfig:
    return ChatConfig(name=name)


def add_chat(store: SessionStore, pane: int, *texts: str) -> list[int]:
    """One branch of alternating user and assistant messages; their ids."""
    ids: list[int] = []
    for i, text in enumerate(texts):
        role = "user" if i % 2 == 0 else "assistant"
        ids.append(store.add_message(pane, role, text, ids[-1] if ids else None))
    return ids


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


# -- fts_query ------------------------------------------------------------------------------


def test_fts_query_quotes_every_word_and_makes_the_last_a_prefix() -> None:
    assert fts_query("cat") == '"cat"*'
    assert fts_query("  black cat") == '"black" "cat"*'
    assert fts_query("black cat ") == '"black" "cat"'  # the word is finished: no prefix
    assert fts_query('say "hi') == '"say" """hi"*'
    assert fts_query("cat AND dog") == '"cat" "AND" "dog"*'
    assert fts_query("NEAR(cat") == '"NEAR(cat"*'


@pytest.mark.parametrize("text", ["", "   ", "\n\t", '"', "- * : ( ) ^", "…!?", "''"])
def test_nothing_to_look_for_is_none(text: str) -> None:
    assert fts_query(text) is None


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_never_raises_from_sqlite(store: SessionStore, text: str) -> None:
    session = store.create_session("s")
    pane = store.add_pane(session, chat("P"))
    add_chat(store, pane, "cat and dog", 'say "hi" col:val NEAR(x) -x', "text: foo*")
    query = fts_query(text)
    if query is not None:  # as a MATCH expression of its own, too
        store.search(text)
        with closing(sqlite3.connect(store.path)) as db:
            db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?", (query,))
    assert isinstance(store.search(text), list)


def test_syntax_is_searched_for_as_text(store: SessionStore) -> None:
    session = store.create_session("s")
    pane = store.add_pane(session, chat("P"))
    add_chat(store, pane, "cats and dogs", "cats or dogs")
    # "AND"/"OR" are words here, not operators: each finds only the message holding it.
    (hit,) = store.search("cats OR ")
    assert hit.marked() == "«cats» «or» dogs"
    (hit,) = store.search("cats AND ")
    assert hit.marked() == "«cats» «and» dogs"
    assert len(store.search("-dogs")) == 2  # not "NOT dogs"


# -- search_messages ------------------------------------------------------------------------


def test_a_word_is_found_in_three_sessions(store: SessionStore) -> None:
    found: set[tuple[int, int]] = set()
    for n in range(3):
        session = store.create_session(f"session {n}")
        pane = store.add_pane(session, chat(f"Pane {n}"))
        ids = add_chat(store, pane, f"question {n}", f"the giraffe answer {n}", "thanks")
        found.add((session, ids[1]))
    other = store.add_pane(store.create_session("other"), chat("Other"))
    add_chat(store, other, "no long necks here")
    hits = store.search("giraffe")
    assert {(h.session_id, h.message_id) for h in hits} == found
    for hit in hits:
        assert hit.role == "assistant"
        assert hit.pane_name == f"Pane {hit.session_name[-1]}"
        assert SnippetPart("giraffe", True) in hit.snippet
        assert hit.marked() == f"the «giraffe» answer {hit.session_name[-1]}"


def test_the_last_word_matches_as_a_prefix_while_typing(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    (message,) = add_chat(store, pane, "Photosynthesis needs light")
    for typed in ("p", "ph", "photo", "photosynth", "photosynthesis", "light pho"):
        assert [h.message_id for h in store.search(typed)] == [message], typed
    assert store.search("photox") == []
    assert store.search("photo ") == []  # a finished word is a whole word
    (hit,) = store.search("photo")
    assert hit.snippet[0] == SnippetPart("Photosynthesis", True)


def test_better_matches_rank_first(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    filler = " ".join(f"word{i}" for i in range(60))
    weak, strong, middle = add_chat(
        store, pane, f"{filler} kernel", "kernel kernel kernel", f"kernel {filler[:80]}"
    )
    assert [h.message_id for h in store.search("kernel")] == [strong, middle, weak]
    assert len(store.search("kernel", limit=2)) == 2
    assert store.search("kernel", limit=0) == []


def test_snippets_are_one_line_and_cut_long_messages(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    words = [f"w{i}" for i in range(200)]
    words[100] = "needle"
    add_chat(store, pane, "\n".join(words))
    (hit,) = store.search("needle")
    text = hit.marked()
    assert "\n" not in text and "«needle»" in text
    assert text.startswith("…") and text.endswith("…") and len(text.split()) < 30


def test_a_marker_inside_a_message_is_shown_without_highlights(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    add_chat(store, pane, f"odd {MATCH_START} text with zebra")
    (hit,) = store.search("zebra")
    assert not any(part.matched for part in hit.snippet)
    assert hit.marked() == "odd text with zebra"


def test_a_deleted_sessions_messages_are_not_found(store: SessionStore) -> None:
    keep = store.create_session("keep")
    add_chat(store, store.add_pane(keep, chat("P")), "walrus one")
    doomed = store.create_session("doomed")
    add_chat(store, store.add_pane(doomed, chat("P")), "walrus two")
    assert {h.session_id for h in store.search("walrus")} == {keep, doomed}
    store.delete(doomed)
    assert {h.session_id for h in store.search("walrus")} == {keep}
    assert store.search("two") == []
    with closing(sqlite3.connect(store.path)) as db:  # the index holds no row of it either
        (rows,) = db.execute("SELECT COUNT(*) FROM messages_fts_docsize").fetchone()
    assert rows == 1


def test_a_closed_panes_messages_are_not_found(store: SessionStore) -> None:
    session = store.create_session("s")
    open_pane, closed = store.add_pane(session, chat("Open")), store.add_pane(session, chat("X"))
    add_chat(store, open_pane, "otter open")
    add_chat(store, closed, "otter closed")
    store.close_pane(closed)
    assert [h.pane_name for h in store.search("otter")] == ["Open"]


def test_an_updated_message_is_found_by_its_new_text_only(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    _, reply = add_chat(store, pane, "tell me", "draft about lemurs")
    store.update_message(reply, "final words on tarsiers")
    assert store.search("lemurs") == [] and store.search("draft") == []
    assert [h.message_id for h in store.search("tarsiers")] == [reply]


def test_a_cleared_panes_messages_are_not_found(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    add_chat(store, pane, "ocelot")
    store.clear_pane(pane)
    assert store.search("ocelot") == []


def test_search_messages_reads_any_connection(store: SessionStore) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    add_chat(store, pane, "quokka")
    with closing(sqlite3.connect(store.path)) as db:
        (hit,) = search_messages(db, "quok")
    assert hit.pane_name == "P" and hit.role == "user"


# -- a schema-1 file ------------------------------------------------------------------------


def write_schema_1_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    db.execute("PRAGMA user_version = 1")
    config = json.dumps(
        {
            "name": "Old pane",
            "system": "",
            "sampling": {},
            "max_tokens": 100,
            "stop": [],
        }
    )
    with db:
        db.execute("INSERT INTO sessions VALUES (1, 'old one', 1.0, 2.0)")
        db.execute("INSERT INTO sessions VALUES (2, 'old two', 1.0, 3.0)")
        db.executemany(
            "INSERT INTO panes (id, session_id, position, config) VALUES (?, ?, ?, ?)",
            [(1, 1, 0, config), (2, 1, 1, config), (3, 2, 0, config)],
        )
        rows = [
            (1, 1, "user", "Where do penguins live?"),
            (2, 2, "user", "Name a bird"),
            (3, 1, "assistant", "Penguins live in the south."),
            (4, 2, "assistant", "The penguin."),
            (5, 1, "user", "Thanks"),
            (6, 3, "user", "penguins again"),
        ]
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, 1.5)", rows)
    db.close()


def test_a_schema_1_file_is_upgraded_and_searchable(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    write_schema_1_file(path)
    store = SessionStore(path)
    try:
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        hits = store.search("penguin")
        assert {h.message_id for h in hits} == {1, 3, 4, 6}
        assert {h.session_name for h in hits} == {"old one", "old two"}
        assert {h.pane_name for h in hits} == {"Old pane"}
        first, second = store.load(1)
        assert [(m.id, m.parent) for m in first.tree] == [(1, None), (3, 1), (5, 3)]
        assert first.head == 5
        assert first.messages == [
            ("user", "Where do penguins live?"),
            ("assistant", "Penguins live in the south."),
            ("user", "Thanks"),
        ]
        assert [(m.id, m.parent) for m in second.tree] == [(2, None), (4, 2)]
        assert second.head == 4
        (third,) = store.load(2)
        assert third.head == 6 and third.messages == [("user", "penguins again")]
        # New messages are indexed by the triggers the upgrade made.
        store.add_message(third.id, "assistant", "emperors", 6)
        assert [h.session_id for h in store.search("emperors")] == [2]
    finally:
        store.close()


# -- panechat --search ----------------------------------------------------------------------


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path().is_relative_to(tmp_path)
    return default_store_path()


def test_cli_search_prints_one_line_per_hit(
    data_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SessionStore(data_home)
    session = store.create_session("trip [b]plans[/b]")
    pane = store.add_pane(session, chat("Planner"))
    add_chat(store, pane, "Where to go?", "Visit\nLisbon\x1b[2J in spring")
    store.close()
    assert main(["--search", "lisbon"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"session {session} trip [b]plans[/b] · Planner · assistant: Visit «Lisbon»␛[2J in spring\n"
    )
    assert main(["--search", "porto"]) == 0
    assert capsys.readouterr().out == "no saved message matches 'porto'\n"


@pytest.mark.parametrize("text", ["", "  ", "?!"])
def test_cli_search_without_a_word_is_one_line_and_exit_2(
    data_home: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    assert main(["--search", text]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "panechat: error: --search needs a word to look for\n"


# -- the search screen ----------------------------------------------------------------------


class Host(App[None]):
    """A bare app that opens the search screen and keeps what it dismissed with."""

    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.store = store
        self.results: list[SearchHit | None] = []

    def compose(self) -> ComposeResult:
        yield Static("host")

    def open_search(self) -> None:
        self.push_screen(SearchScreen(self.store), self.results.append)


def status_of(screen: SearchScreen) -> str:
    return str(screen.query_one("#search-status", Static).render())


async def searched(pilot: Pilot[None], screen: SearchScreen, status: str) -> None:
    """Wait for the search that typing started to say ``status`` (it runs a debounce after
    the last key: on a busy machine its timer can come later than any fixed pause)."""
    deadline = time.monotonic() + 30
    while status_of(screen) != status:
        assert time.monotonic() < deadline, f"the search did not say {status!r}"
        await pilot.pause(0.05)


async def test_the_search_screen_lists_hits_as_you_type_and_enter_opens_one(
    store: SessionStore,
) -> None:
    session = store.create_session("zoo [red]day[/]")
    pane = store.add_pane(session, chat("Keeper"))
    add_chat(store, pane, "What eats bamboo?", "The panda eats [b]bamboo[/b].")
    app = Host(store)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_search()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        assert status_of(screen) == EMPTY_HINT
        await pilot.press(*"pand")
        await searched(pilot, screen, "1 match")
        results = screen.query_one(OptionList)
        assert results.option_count == 1 and status_of(screen) == "1 match"
        prompt = results.get_option_at_index(0).prompt
        assert isinstance(prompt, type(hit_prompt(screen.hits[0])))
        assert "[b]bamboo[/b]" in str(prompt) and "zoo [red]day[/]" in str(prompt)
        await pilot.press(*"x")
        await searched(pilot, screen, NO_MATCHES)
        assert results.option_count == 0 and status_of(screen) == NO_MATCHES
        await pilot.press(*["backspace"] * 5, *"bamboo")
        await pilot.press("enter")  # before the debounce fired: it searches, then opens
        await pilot.pause()
    (hit,) = app.results
    assert hit == store.search("bamboo")[0]  # the best of the two
    assert hit.session_id == session and hit.pane_name == "Keeper"


async def test_the_search_screen_opens_the_chosen_hit_and_esc_closes(
    store: SessionStore,
) -> None:
    pane = store.add_pane(store.create_session("s"), chat("P"))
    first, second = add_chat(store, pane, "heron heron heron", "one heron")
    app = Host(store)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_search()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        await pilot.press(*"heron")
        await searched(pilot, screen, "2 matches")
        await pilot.press("down", "down", "enter")  # into the list, to the second, open it
        await pilot.pause()
        app.open_search()
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
    assert [h.message_id if h else None for h in app.results] == [second, None]
    assert first != second


def test_a_hit_prompt_highlights_parts_without_markup() -> None:
    hit = SearchHit(
        1,
        "[b]s[/b]",
        2,
        "P",
        3,
        "user",
        (SnippetPart("a [i]", False), SnippetPart("wolf", True), SnippetPart("\x1b", False)),
    )
    text = hit_prompt(hit)
    assert text.plain == "[b]s[/b] · P · user\na [i]wolf␛"
    matched = [text.plain[s.start : s.end] for s in text.spans if str(s.style) == MATCH_STYLE]
    assert matched == ["wolf"]


# -- the app --------------------------------------------------------------------------------


async def test_the_app_shows_a_hit_of_its_own_session_and_reopens_on_another(
    weights: LlamaWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    base = load_config()
    config = replace(base, context=ContextParams(n_ctx=1024, n_batch=256, n_seq_max=2))
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create_session("geography")
    first, second = store.add_pane(session, chat("First")), store.add_pane(session, chat("Second"))
    add_chat(store, first, "Hello", "Hi there.")
    paris = add_chat(store, second, "Capital of France?", "Paris.")[1]
    spain = store.add_message(second, "user", "Capital of Spain?", None)  # a second branch
    madrid = store.add_message(second, "assistant", "Madrid.", spain)
    other = store.create_session("travel")
    lisbon = add_chat(store, store.add_pane(other, chat("Third")), "Lisbon?", "Portugal.")[0]
    executor = BatchedExecutor(weights, config.context)
    template = model_template(weights, config.template)
    try:
        app = create_app(
            config,
            ChatEngine(executor, template),
            persist_theme=False,
            store=store,
            session_id=session,
            restore=store.load(session),
            reveal=paris,  # not on the branch the pane showed last
        )
        assert app.reveal == paris
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.pause()
            assert app.panes[1].selected == paris and app.panes[0].selected is None
            await pilot.press("ctrl+f")
            await pilot.pause()
            assert isinstance(app.screen, SearchScreen)
            await pilot.press(*"madri", "enter")  # in this session: shown where it is
            deadline = time.monotonic() + 60  # its branch is shown once the engine's frame comes
            while app.panes[1].selected != madrid and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert app.is_running and app.panes[1].selected == madrid
            assert app.panes[1].messages()[-1] == ("assistant", "Madrid.")
            await pilot.press("ctrl+f")
            await pilot.pause()
            await pilot.press(*"lisb", "enter")  # in another session: the app reopens there
            await pilot.pause()
        assert app.return_value == OpenSession(other, lisbon)
    finally:
        executor.close()
        store.close()


async def test_search_in_an_unsaved_run_says_so(
    weights: LlamaWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    base = load_config()
    config = replace(base, context=ContextParams(n_ctx=1024, n_batch=256, n_seq_max=2))
    executor = BatchedExecutor(weights, config.context)
    try:
        app = create_app(
            config,
            ChatEngine(executor, model_template(weights, config.template)),
            persist_theme=False,
        )
        said: list[str] = []
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.pause()
            monkeypatch.setattr(app, "notify", lambda message, **_: said.append(message))
            await pilot.press("ctrl+f")
            await pilot.pause()
            assert not isinstance(app.screen, SearchScreen)
        assert said == ["sessions are not being saved in this run"]
    finally:
        executor.close()
