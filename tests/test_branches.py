"""Branches on the real model: edit a middle message, switch between the branches both ways,
and check that the KV then holds exactly the branch shown (its tokens are the rendering of
that branch's transcript, and the highest position in the cache matches)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_chat_engine import Driver, chat, make_driver  # noqa: F401 - the fixture, by name

from core.chat import ChatTree, EditTurn, OpenChat, Role, SendTurn, ShowBranch
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


def test_a_branch_switch_while_a_reply_streams_is_refused(
    make_driver: Callable[..., Driver],  # noqa: F811
) -> None:
    driver = make_driver()
    driver.engine.submit(OpenChat("c", chat("c", max_tokens=200, stop=())))
    driver.engine.submit(SendTurn("c", "Write a long story about the sea."))
    driver.run_until(lambda: len(driver.text.get("c", "")) > 10)
    driver.engine.submit(ShowBranch("c", [("user", "Hello")]))
    driver.run_until(lambda: bool(driver.notices.get("c")))
    assert "switching the branch" in driver.notices["c"][0]
