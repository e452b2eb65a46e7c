"""Branches on the real model: edit a middle message, switch between the branches both ways,
and check that the KV then holds exactly the branch shown (its tokens are the rendering of
that branch's transcript, and the highest position in the cache matches)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_chat_engine import Driver, chat, make_driver  # noqa: F401 - the fixture, by name

from core import BatchedExecutor, ContextParams
from core.chat import (
    Alternative,
    BranchAtToken,
    ChatContext,
    ChatEngine,
    ChatTree,
    CloseChat,
    EditMessage,
    OpenChat,
    Regenerate,
    Restore,
    Role,
    SendTurn,
    ShowMessage,
    TokenStat,
)


def tree_of(driver: Driver, chat_id: str = "c") -> ChatTree:
    tree = driver.tree(chat_id)
    assert tree is not None
    return tree


def talk(driver: Driver, chat_id: str, text: str) -> None:
    """Send a turn and wait for its reply."""
    before = driver.replies(chat_id)
    driver.submit(SendTurn(chat_id, text))
    driver.run_until(lambda: driver.replies(chat_id) == before + 1)


def context(driver: Driver, chat_id: str = "c") -> ChatContext:
    held = driver.loop.context(chat_id)
    assert held is not None
    return held


def held_users(driver: Driver, chat_id: str = "c") -> list[str]:
    """The user turns the chat's KV holds."""
    return context(driver, chat_id).users


def holds_exactly(driver: Driver, chat_id: str = "c") -> None:
    """The KV holds the rendering of the turns it holds, and nothing past it."""
    assert context(driver, chat_id).in_step


def idle(driver: Driver) -> Callable[[], bool]:
    return lambda: not driver.busy


@pytest.fixture
def three_turns(make_driver: Callable[..., Driver]) -> Driver:  # noqa: F811
    driver = make_driver()
    driver.submit(OpenChat("c", chat("c", max_tokens=12)))
    for question in ("Name a colour.", "Name an animal.", "Name a city."):
        talk(driver, "c", question)
    return driver


def test_editing_a_middle_message_keeps_the_prefix_and_the_old_branch(
    three_turns: Driver,
) -> None:
    driver = three_turns
    tree = tree_of(driver)
    original = tree.head
    second_question = tree.path()[2]
    kept = context(driver).turns[1].start  # where the second turn begins in the KV
    decoded = driver.engine.executor.stats.tokens_decoded
    driver.submit(EditMessage("c", second_question.id, "Name a tree."))
    driver.run_until(lambda: driver.replies("c") == 4 and not driver.busy)

    held = context(driver)
    assert held.users == ["Name a colour.", "Name a tree."]
    # The edited turn's exact rendering, up to where its reply begins.
    assert held.tokens[: held.reply_start] == held.rendered[: held.reply_start]
    assert held.turns[1].start == kept  # the edited turn begins where the old one did
    # The first turn stayed in the KV: only the edited turn and its reply were decoded.
    assert driver.engine.executor.stats.tokens_decoded - decoded < len(held.tokens) - kept + 2
    tree = tree_of(driver)
    assert tree.path()[2].text == "Name a tree."
    assert tree.siblings(tree.path()[2].id).count == 2  # the old second turn is a sibling
    assert tree.leaf_below(second_question.id) == original  # and its branch goes on below


def test_switching_branches_both_ways_restores_each_branch_in_the_kv(
    three_turns: Driver,
) -> None:
    driver = three_turns
    first_branch = tree_of(driver).messages()
    first_tokens = context(driver).tokens
    second_question = tree_of(driver).path()[2]
    driver.submit(EditMessage("c", second_question.id, "Name a tree."))
    driver.run_until(lambda: driver.replies("c") == 4)
    second_branch = tree_of(driver).messages()
    edited = tree_of(driver).path()[2]

    driver.submit(ShowMessage("c", second_question.id))  # back to the first branch
    driver.run_until(idle(driver))
    assert tree_of(driver).messages() == first_branch
    assert held_users(driver) == [
        "Name a colour.",
        "Name an animal.",
        "Name a city.",
    ]
    holds_exactly(driver)
    # The rendering of a finished reply ends its turn, which the live KV had not decoded yet.
    assert context(driver).tokens[: len(first_tokens)] == first_tokens

    driver.submit(ShowMessage("c", edited.id))  # and forward to the edited one
    driver.run_until(idle(driver))
    assert tree_of(driver).messages() == second_branch
    assert held_users(driver) == ["Name a colour.", "Name a tree."]
    holds_exactly(driver)

    talk(driver, "c", "Name a river.")  # the chat goes on from the branch shown
    assert held_users(driver)[-1] == "Name a river."
    assert len(tree_of(driver).leaves()) == 2


def test_a_branch_switch_while_a_reply_streams_waits_for_it_to_end(
    make_driver: Callable[..., Driver],  # noqa: F811
) -> None:
    """A branch asked for while a reply streams is shown once it ends, never refused."""
    driver = make_driver()
    driver.submit(OpenChat("c", chat("c", max_tokens=40, stop=())))
    talk(driver, "c", "Hello")
    hello, first_reply = tree_of(driver).path()
    driver.submit(EditMessage("c", hello.id, "Hi"))  # another branch
    driver.run_until(lambda: driver.replies("c") == 2)
    driver.text.clear()
    driver.submit(SendTurn("c", "Write a long story about the sea."))
    driver.run_until(lambda: len(driver.text.get("c", "")) > 10)
    driver.submit(ShowMessage("c", hello.id))  # back to the first, mid-stream

    def shown() -> bool:
        return held_users(driver) == ["Hello"]

    driver.run_until(lambda: driver.replies("c") == 3 and shown() and idle(driver)())
    driver.stop()  # read it whole: nothing runs beside the test now
    holds_exactly(driver)
    assert tree_of(driver).head == first_reply.id
    assert len(tree_of(driver)) == 6  # the story stays, on its branch
    assert not driver.notices.get("c")


def test_regenerate_right_after_a_switch_waits_for_the_branch_to_be_read(
    three_turns: Driver,
) -> None:
    """Before: the rewind of a conversation with tokens still queued raised, and the decode
    loop stopped for every chat."""
    driver = three_turns
    second_question = tree_of(driver).path()[2]
    driver.submit(EditMessage("c", second_question.id, "Name a tree."))
    driver.run_until(lambda: driver.replies("c") == 4 and idle(driver)())
    driver.submit(ShowMessage("c", second_question.id), Regenerate("c"))
    driver.run_until(lambda: driver.replies("c") == 5 and idle(driver)())
    driver.stop()
    assert held_users(driver) == [
        "Name a colour.",
        "Name an animal.",
        "Name a city.",
    ]
    assert tree_of(driver).siblings(tree_of(driver).head or 0).count == 2
    assert not driver.notices.get("c")


def test_a_saved_state_of_another_branch_is_not_used(three_turns: Driver, tmp_path: Path) -> None:
    driver = three_turns
    shown = tree_of(driver).messages()
    other = [*shown[:2], ("user", "Name a tree."), ("assistant", "An oak.")]
    assert driver.stop()
    saved = driver.engine.snapshot("c", tmp_path / "c.state").state
    assert saved is not None
    executor = BatchedExecutor(driver.engine.executor.model, ContextParams(n_ctx=2048))
    engine = ChatEngine(executor, driver.engine.template)
    try:
        engine.submit(OpenChat("same", chat("same"), Restore(ChatTree.linear(shown), saved)))
        engine.submit(OpenChat("other", chat("other"), Restore(ChatTree.linear(other), saved)))
        notices = {}
        while engine.busy:
            frame = engine.step()
            for chat_id, delta in (frame.deltas if frame else {}).items():
                if delta.notice is not None:
                    notices[chat_id] = delta.notice.text()
        assert "same" not in notices  # its own branch: the cells are used
        assert "another branch" in notices["other"]  # read again instead
        restored = engine.context("other")
        assert restored is not None and restored.users[-1] == "Name a tree."
    finally:
        executor.close()


def test_commands_for_a_chat_that_is_not_open_are_answered(
    make_driver: Callable[..., Driver],  # noqa: F811
) -> None:
    """A pane shows itself busy from the moment it sends: a turn to a chat that never opened
    must get an answer, or the pane would wait forever."""
    driver = make_driver()
    driver.submit(SendTurn("never", "Hello"))
    driver.run_until(lambda: bool(driver.notices.get("never")))
    assert "not open" in driver.notices["never"][0]


def test_tokens_of_another_vocabulary_are_refused_and_the_chat_goes_on(
    three_turns: Driver,
) -> None:
    """A reply another model wrote (a resumed chat, renamed models) keeps that model's token
    ids: branching there is checked token by token against this model's vocabulary."""
    driver = three_turns
    model = driver.engine.executor.model
    word = model.tokenize(" river", parse_special=False)[0]
    out_of_range = TokenStat(10**9, "?", 0.5)
    # A token id this vocabulary has, but written as other text: another model's token.
    misread = TokenStat(word, " lake", 0.5)
    for alien in (out_of_range, misread):
        tree = ChatTree()
        tree.add(None, Role.USER, "Name a lake.")
        reply = tree.add(tree.head, Role.ASSISTANT, " lake.")
        reply.tokens = [alien, TokenStat(word, " river", 0.5, (Alternative(word, " river", 0.4),))]
        driver.submit(OpenChat("old", chat("old"), Restore(tree)))
        driver.run_until(lambda: driver.tree("old") is not None)
        driver.run_until(idle(driver))
        before = context(driver, "old").tokens
        driver.notices.clear()
        driver.submit(BranchAtToken("old", reply.id, 1, word))
        driver.run_until(lambda: bool(driver.notices.get("old")))
        assert "not this model's" in driver.notices["old"][0]
        assert context(driver, "old").tokens == before  # untouched
        driver.submit(CloseChat("old"))
        driver.run_until(lambda: driver.tree("old") is None)
    talk(driver, "c", "Name a river.")
