"""The chat tree as data: siblings, paging, and the branch below a message."""

from __future__ import annotations

import pytest

from core.chat import ChatTree, Role
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
