"""The chat tree as data: siblings, paging, and the branch below a message."""

from __future__ import annotations

import pytest

from core import StopReason
from core.chat import ChatTree, Role, TokenStat
from core.chat.state import exchanges


def test_siblings_paging_and_the_branch_below_each_are_remembered() -> None:
    tree = ChatTree()
    q1 = tree.add(None, Role.USER, "q1")
    a1 = tree.add(q1.id, Role.ASSISTANT, "a1")
    q2 = tree.add(a1.id, Role.USER, "q2")
    a2 = tree.add(q2.id, Role.ASSISTANT, "a2")
    q2b = tree.add(a1.id, Role.USER, "q2 edited")  # an edit of q2: a sibling
    a2b = tree.add(q2b.id, Role.ASSISTANT, "a2b")
    a2c = tree.add(q2b.id, Role.ASSISTANT, "a2c")  # a regenerated reply
    assert tree.head == a2c.id
    assert tree.siblings(q2b.id).index == 2 and tree.siblings(q2b.id).count == 2
    assert tree.siblings(a2c.id).count == 2 and tree.siblings(a1.id).count == 1
    assert tree.sibling(q2b.id, 1) is None
    assert tree.show(q2.id) == a2.id  # back to the first version of q2, and on below it
    assert tree.messages() == [
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
    ]
    assert tree.show(q2b.id) == a2c.id  # forward again: the reply last seen there
    tree.show(a2b.id)
    assert tree.show(q2.id) == a2.id and tree.show(q2b.id) == a2b.id
    assert [m.id for m in tree.leaves()] == [a2.id, a2b.id, a2c.id]


def test_saved_ids_are_kept_and_new_ones_do_not_collide() -> None:
    tree = ChatTree()
    tree.add(None, Role.USER, "q", message_id=40)
    reply = tree.add(40, Role.ASSISTANT, "a")
    assert reply.id == 41
    with pytest.raises(KeyError):
        tree.add(None, Role.USER, "again", message_id=40)
    with pytest.raises(KeyError):
        tree.add(999, Role.USER, "after nothing")


def test_a_path_reads_as_exchanges_even_where_a_reply_is_missing() -> None:
    turns = exchanges([("user", "a"), ("user", "b"), ("assistant", "B"), ("user", "c")])
    assert [(t.user, t.reply) for t in turns] == [("a", ""), ("b", "B"), ("c", "")]


def test_a_copy_is_its_own() -> None:
    tree = ChatTree()
    q = tree.add(None, Role.USER, "q")
    tree.add(q.id, Role.ASSISTANT, "a")
    copy = tree.copy()
    copy.add(q.id, Role.ASSISTANT, "b")
    copy.set_text(q.id, "changed")
    assert tree.messages() == [("user", "q"), ("assistant", "a")] and len(tree) == 2
    assert copy.messages() == [("user", "changed"), ("assistant", "b")]
    assert tree.add(q.id, Role.ASSISTANT, "c").id == copy.head  # ids go on alike, apart


def test_a_follower_applying_the_changes_becomes_the_same_tree() -> None:
    """What a view keeps: a tree changed only by another tree's changes. Messages added, a
    reply's text and stop, a sibling, a branch shown again, a turn moved below a reply, and
    a clear: after each change, the same messages and the same path."""
    source, follower = ChatTree(), ChatTree()

    def sync() -> None:
        change = source.take_change()
        if change is not None:
            follower.apply(change)
        assert follower.head == source.head and list(follower) == list(source)
        assert [m.id for m in follower.path()] == [m.id for m in source.path()]

    sync()  # a new tree goes out whole, even empty
    question = source.add(None, Role.USER, "Hi")
    reply = source.add(question.id, Role.ASSISTANT)
    queued = source.add(question.id, Role.USER, "And?")  # queued behind the reply
    sync()
    source.move(queued.id, reply.id)  # the reply started: the turn follows it
    source.show(reply.id)
    source.set_text(reply.id, "Hel")
    sync()
    assert source.take_change() is None  # nothing new
    source.finish(reply.id, "Hello!", StopReason.END_OF_GENERATION)
    other = source.add(None, Role.USER, "Hey")  # an edit of the first turn
    sync()
    assert follower.siblings(other.id).count == 2
    source.show(question.id)  # back to the first branch, below it as last visited
    sync()
    assert follower.head == queued.id and follower[reply.id].stop is not None
    source = ChatTree()  # a clear: a whole new tree
    sync()
    assert len(follower) == 0


def test_a_streaming_reply_goes_out_without_its_tokens_and_ends_with_them() -> None:
    tree = ChatTree()
    question = tree.add(None, Role.USER, "Hi")
    reply = tree.add(question.id, Role.ASSISTANT, "He")
    reply.tokens = [TokenStat(1, "He", 0.5), TokenStat(2, "llo", 0.5)]
    change = tree.take_change(streaming=reply.id)
    assert change is not None and change.reset and change.messages[1].tokens == []
    tree.finish(reply.id, "He", StopReason.STOP_STRING, unshown=1)  # "llo" began a stop
    change = tree.take_change()
    assert change is not None and not change.reset
    (ended,) = change.messages
    assert [t.piece for t in ended.tokens] == ["He"] and ended.stop is StopReason.STOP_STRING
    assert tree.whole().reset and len(tree.whole().messages) == 2
