"""Branches on the real model: edit a middle message, switch between the branches both ways,
and check that the KV then holds exactly the branch shown (its tokens are the rendering of
that branch's transcript, and the highest position in the cache matches)."""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path

import pytest
from test_chat_engine import Driver, chat, make_driver  # noqa: F401 - the fixture, by name

from core import BatchedExecutor, ContextParams
from core.chat import (
    ChatEngine,
    ChatTree,
    ContinueReply,
    EditTurn,
    EngineEvent,
    OpenChat,
    Regenerate,
    Restore,
    Role,
    SendTurn,
    ShowBranch,
    TokenStat,
)
from core.chat.session import ChatSession


def reply_texts(driver: Driver, chat_id: str) -> list[str]:
    """Each finished reply's whole text, in order."""
    return [
        d.reply_text or ""
        for f in driver.frames
        for k, d in f.deltas.items()
        if k == chat_id and d.finished is not None
    ]


def talk(driver: Driver, tree: ChatTree, chat_id: str, text: str) -> None:
    """Send a turn, wait for its reply, and write both into ``tree`` (as the app does)."""
    tree.add(tree.head, Role.USER, text)
    before = driver.replies(chat_id)
    driver.engine.submit(SendTurn(chat_id, text))
    driver.run_until(lambda: driver.replies(chat_id) == before + 1)
    tree.add(tree.head, Role.ASSISTANT, reply_texts(driver, chat_id)[-1])


def holds_exactly(driver: Driver, session: ChatSession) -> None:
    """The KV holds the rendering of the session's transcript, and nothing past it."""
    conv = session.conversation
    assert list(conv.tokens) == session.prompt_tokens(session.exchanges)
    assert driver.engine.executor.seq_pos_max(conv.sequence_id) == conv.token_count - 1


def idle(driver: Driver, session: ChatSession) -> Callable[[], bool]:
    return lambda: not driver.engine.busy and not session.conversation.requires_inference


@pytest.fixture
def three_turns(make_driver: Callable[..., Driver]) -> tuple[Driver, ChatTree, ChatSession]:  # noqa: F811
    driver = make_driver()
    driver.engine.submit(OpenChat("c", chat("c", max_tokens=12)))
    tree = ChatTree()
    for question in ("Name a colour.", "Name an animal.", "Name a city."):
        talk(driver, tree, "c", question)
    session = driver.engine.session("c")
    assert session is not None
    return driver, tree, session


def test_editing_a_middle_message_keeps_the_prefix_and_the_old_branch(
    three_turns: tuple[Driver, ChatTree, ChatSession],
) -> None:
    driver, tree, session = three_turns
    original = tree.head
    second_question = tree.path()[2]
    history = tree.messages(second_question.parent)  # the first turn and its reply
    kept = session.state().turn_starts[1]  # where the second turn begins in the KV
    decoded = driver.engine.executor.stats.tokens_decoded
    tree.add(second_question.parent, Role.USER, "Name a tree.")
    driver.engine.submit(EditTurn("c", history, "Name a tree."))
    driver.run_until(lambda: driver.replies("c") == 4)
    tree.add(tree.head, Role.ASSISTANT, reply_texts(driver, "c")[-1])

    assert [e.user for e in session.exchanges] == ["Name a colour.", "Name a tree."]
    conv = session.conversation
    asked = session.prompt_tokens(session.exchanges[:1], "Name a tree.")
    assert list(conv.tokens[: len(asked)]) == asked  # the edited turn's exact rendering
    assert session.state().reply_base == len(asked)
    # The first turn stayed in the KV: only the edited turn and its reply were decoded.
    assert driver.engine.executor.stats.tokens_decoded - decoded < conv.token_count - kept + 2
    assert tree.siblings(tree.path()[2].id).count == 2  # the old second turn is a sibling
    assert tree.leaf_below(second_question.id) == original  # and its branch goes on below


def test_switching_branches_both_ways_restores_each_branch_in_the_kv(
    three_turns: tuple[Driver, ChatTree, ChatSession],
) -> None:
    driver, tree, session = three_turns
    first_branch = tree.messages()
    first_tokens = list(session.conversation.tokens)
    second_question = tree.path()[2]
    tree.add(second_question.parent, Role.USER, "Name a tree.")
    driver.engine.submit(EditTurn("c", tree.messages(second_question.parent), "Name a tree."))
    driver.run_until(lambda: driver.replies("c") == 4)
    tree.add(tree.head, Role.ASSISTANT, reply_texts(driver, "c")[-1])
    second_branch = tree.messages()

    tree.show(tree.sibling(tree.path()[2].id, -1) or 0)  # back to the first branch
    assert tree.messages() == first_branch
    driver.engine.submit(ShowBranch("c", tree.messages()))
    driver.run_until(idle(driver, session))
    assert [e.user for e in session.exchanges] == [
        "Name a colour.",
        "Name an animal.",
        "Name a city.",
    ]
    holds_exactly(driver, session)
    # The rendering of a finished reply ends its turn, which the live KV had not decoded yet.
    assert list(session.conversation.tokens[: len(first_tokens)]) == first_tokens

    tree.show(tree.sibling(tree.path()[2].id, 1) or 0)  # and forward to the edited one
    assert tree.messages() == second_branch
    driver.engine.submit(ShowBranch("c", tree.messages()))
    driver.run_until(idle(driver, session))
    assert [e.user for e in session.exchanges] == ["Name a colour.", "Name a tree."]
    holds_exactly(driver, session)

    talk(driver, tree, "c", "Name a river.")  # the chat goes on from the branch shown
    assert [e.user for e in session.exchanges][-1] == "Name a river."
    assert len(tree.leaves()) == 2


def test_a_branch_switch_while_a_reply_streams_waits_for_it_to_end(
    make_driver: Callable[..., Driver],  # noqa: F811
) -> None:
    """The pane shows the branch at once; the engine must follow it, never refuse it."""
    driver = make_driver()
    driver.engine.submit(OpenChat("c", chat("c", max_tokens=40, stop=())))
    driver.engine.submit(SendTurn("c", "Write a long story about the sea."))
    driver.run_until(lambda: len(driver.text.get("c", "")) > 10)
    branch = [("user", "Hello"), ("assistant", "Hi there.")]
    driver.engine.submit(ShowBranch("c", branch))
    session = driver.engine.session("c")
    assert session is not None

    def shown() -> bool:
        return [e.user for e in session.exchanges] == ["Hello"]

    driver.run_until(lambda: driver.replies("c") == 1 and shown() and idle(driver, session)())
    driver.engine.shutdown()  # read it whole: nothing runs beside the test now
    holds_exactly(driver, session)
    assert not driver.notices.get("c")


def test_regenerate_right_after_a_switch_waits_for_the_branch_to_be_read(
    three_turns: tuple[Driver, ChatTree, ChatSession],
) -> None:
    """Before: the rewind of a conversation with tokens still queued raised, and the decode
    loop stopped for every chat."""
    driver, tree, session = three_turns
    driver.engine.submit(ShowBranch("c", tree.messages(tree.path()[3].id)), Regenerate("c"))
    driver.run_until(lambda: driver.replies("c") == 4 and idle(driver, session)())
    driver.engine.shutdown()
    assert [e.user for e in session.exchanges] == ["Name a colour.", "Name an animal."]
    assert not driver.notices.get("c")


def test_a_saved_state_of_another_branch_is_not_used(
    three_turns: tuple[Driver, ChatTree, ChatSession], tmp_path: Path
) -> None:
    driver, tree, _ = three_turns
    shown = tree.messages()
    other = [*shown[:2], ("user", "Name a tree."), ("assistant", "An oak.")]
    assert driver.engine.shutdown()
    saved = driver.engine.snapshot("c", tmp_path / "c.state").state
    assert saved is not None
    executor = BatchedExecutor(driver.engine.executor.model, ContextParams(n_ctx=2048))
    events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
    engine = ChatEngine(executor, driver.engine.template, events.put)
    try:
        engine.submit(OpenChat("same", chat("same"), Restore(shown, saved)))
        engine.submit(OpenChat("other", chat("other"), Restore(other, saved)))
        notices = {}
        while engine.busy:
            frame = engine.step()
            for chat_id, delta in (frame.deltas if frame else {}).items():
                if delta.notice is not None:
                    notices[chat_id] = delta.notice.text()
        assert "same" not in notices  # its own branch: the cells are used
        assert "another branch" in notices["other"]  # read again instead
        restored = engine.session("other")
        assert restored is not None and [e.user for e in restored.exchanges][-1] == "Name a tree."
    finally:
        executor.close()


def test_commands_for_a_chat_that_is_not_open_are_answered(
    make_driver: Callable[..., Driver],  # noqa: F811
) -> None:
    """A pane shows itself busy from the moment it sends: a turn to a chat that never opened
    must get an answer, or the pane would wait forever."""
    driver = make_driver()
    driver.engine.submit(SendTurn("never", "Hello"))
    driver.run_until(lambda: bool(driver.notices.get("never")))
    assert "not open" in driver.notices["never"][0]


def test_tokens_of_another_vocabulary_are_refused_and_the_chat_goes_on(
    three_turns: tuple[Driver, ChatTree, ChatSession],
) -> None:
    driver, tree, session = three_turns
    before = list(session.conversation.tokens)
    history = tree.messages(tree.path()[4].id)
    model = session.conversation.executor.model
    word = model.tokenize(" river", parse_special=False)[0]
    out_of_range = TokenStat(10**9, "?", 0.5)
    # A token id this vocabulary has, but written as other text: another model's token.
    misread = TokenStat(word, " lake", 0.5)
    for alien in (out_of_range, misread):
        driver.notices.clear()
        driver.engine.submit(ContinueReply("c", history, [alien]))
        driver.run_until(lambda: bool(driver.notices.get("c")))
        assert "not this model's" in driver.notices["c"][0]
        assert list(session.conversation.tokens) == before  # the KV was not touched
    talk(driver, tree, "c", "Name a river.")
