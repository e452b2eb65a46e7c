"""core owns each chat's tree: a script sends turns, edits a middle message, shows the first
branch again and branches a reply at another token, naming messages by id, and reads the tree
back; the KV holds what the shown branch renders to. No Textual anywhere."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from core import (
    BatchedExecutor,
    ChatMessage,
    ContextParams,
    LlamaWeights,
    SamplingParams,
    StopReason,
    model_template,
)
from core.chat import (
    BranchAtToken,
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    ChatTree,
    ClearChat,
    EditMessage,
    EngineEvent,
    ForkChat,
    Frame,
    NoticeKind,
    OpenChat,
    Regenerate,
    Role,
    SendTurn,
    ShowMessage,
)

SYSTEM = "A knowledgeable assistant answers each question in one short sentence."
CONFIG = ChatConfig("c", SYSTEM, SamplingParams(temperature=0.0), max_tokens=32, stop=("\n\n",))


@pytest.fixture
def engine(weights: LlamaWeights) -> Iterator[ChatEngine]:
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2)) as executor:
        yield ChatEngine(executor, model_template(weights))


def run(engine: ChatEngine, *commands: object) -> list[Frame]:
    """Submit ``commands`` and step the engine until it has nothing left to do."""
    engine.submit(*commands)  # type: ignore[arg-type]
    frames = []
    while engine.busy:
        frame = engine.step()
        if frame is not None:
            frames.append(frame)
    return frames


def shown(tree: ChatTree) -> list[tuple[str, str]]:
    return [(m.role.value, m.text) for m in tree.path()]


def tree_of(engine: ChatEngine, chat_id: str = "c") -> ChatTree:
    tree = engine.tree(chat_id)
    assert tree is not None
    return tree


def kv_holds_the_shown_branch(engine: ChatEngine, weights: LlamaWeights) -> None:
    """The chat's KV holds the shown branch: every message before the last reply rendered
    through the template, then that reply. Compared without whitespace: the KV keeps a reply's
    tokens as the model wrote them (" The"), the tree its text as shown ("The")."""
    tree = tree_of(engine)
    *before, last = tree.path()
    assert last.role is Role.ASSISTANT
    messages = [ChatMessage("system", SYSTEM)]
    messages += [ChatMessage(m.role.value, m.text) for m in before]
    asked = model_template(weights).render(messages, True)
    context = engine.context("c")
    assert context is not None
    held = weights.detokenize(list(context.tokens))
    held = held.removeprefix(weights.detokenize([weights.bos_token]))
    assert "".join(held.split()) == "".join((asked + last.text).split())


def follow(tree: ChatTree, frames: list[Frame], chat_id: str = "c") -> None:
    for frame in frames:
        delta = frame.deltas.get(chat_id)
        for change in delta.tree_changes if delta else ():
            tree.apply(change)


def same(a: ChatTree, b: ChatTree) -> bool:
    """The same messages (ids, parents, text, odds, model, stop) and the same branch shown."""
    return a.head == b.head and list(a) == list(b)


def test_a_script_drives_branches_by_message_id_and_reads_the_tree_back(
    engine: ChatEngine, weights: LlamaWeights
) -> None:
    frames = run(
        engine,
        OpenChat("c", CONFIG),
        SendTurn("c", "What is the capital of France?"),
        SendTurn("c", "And of Italy?"),
        SendTurn("c", "And of Germany?"),
    )
    tree = tree_of(engine)
    q1, a1, q2, a2, q3, a3 = tree.path()
    assert [m.role for m in tree.path()] == [Role.USER, Role.ASSISTANT] * 3
    assert (q1.text, q2.text, q3.text) == (
        "What is the capital of France?",
        "And of Italy?",
        "And of Germany?",
    )
    assert "Paris" in a1.text
    # Each reply is assembled once, in core: the frames' text adds up to the tree's.
    streamed: dict[int, str] = {}
    for frame in frames:
        delta = frame.deltas["c"]
        if delta.message_id is not None:
            streamed[delta.message_id] = streamed.get(delta.message_id, "") + delta.text
    assert {i: t.strip() for i, t in streamed.items()} == {
        m.id: m.text.strip() for m in (a1, a2, a3)
    }
    assert all(
        m.stop in (StopReason.STOP_STRING, StopReason.END_OF_GENERATION) for m in (a1, a2, a3)
    )
    assert all(m.tokens and m.model == "" for m in (a1, a2, a3))
    follower = ChatTree()  # a view's copy, changed only by what the frames say
    follow(follower, frames)
    assert same(follower, tree)

    # Edit the middle question: a sibling of it, answered; the branch below the old one stays.
    frames = run(engine, EditMessage("c", q2.id, "And of Spain?"))
    tree = tree_of(engine)
    edited = tree.path()[2]
    assert [m.id for m in tree.path()[:2]] == [q1.id, a1.id]
    assert edited.text == "And of Spain?" and edited.parent == a1.id
    assert tree.siblings(edited.id).index == 2 and tree.siblings(edited.id).count == 2
    assert len(tree.path()) == 4 and tree.path()[3].stop is not None
    follow(follower, frames)
    assert same(follower, tree)
    kv_holds_the_shown_branch(engine, weights)

    # Show the first branch again: the old question and everything below it come back.
    follow(follower, run(engine, ShowMessage("c", q2.id)))
    tree = tree_of(engine)
    assert same(follower, tree)
    assert [m.id for m in tree.path()] == [q1.id, a1.id, q2.id, a2.id, q3.id, a3.id]
    kv_holds_the_shown_branch(engine, weights)

    # Branch the first reply at its third token, with the model's second choice there.
    chosen = a1.tokens[2]
    other = chosen.alternatives[0]
    follow(follower, run(engine, BranchAtToken("c", a1.id, 2, other.token)))
    tree = tree_of(engine)
    assert same(follower, tree)
    q, branched = tree.path()
    assert q.id == q1.id and branched.parent == q1.id
    assert tree.siblings(branched.id).count == 2
    assert [t.token for t in branched.tokens[:3]] == [
        *(t.token for t in a1.tokens[:2]),
        other.token,
    ]
    assert branched.tokens[2].forced
    assert chosen.token in [a.token for a in branched.tokens[2].alternatives]  # odds kept
    assert branched.text.startswith("".join(t.piece for t in branched.tokens[:3]).lstrip())
    kv_holds_the_shown_branch(engine, weights)

    # Every branch is still there, by id.
    assert {m.id for m in tree.leaves()} == {a3.id, tree[edited.id + 1].id, branched.id}
    assert len(tree) == 9


def test_a_regenerated_reply_is_a_sibling_and_the_old_one_stays(engine: ChatEngine) -> None:
    seeded = ChatConfig("c", SYSTEM, SamplingParams(seed=7), max_tokens=16)
    run(engine, OpenChat("c", seeded), SendTurn("c", "Name a colour."))
    first = tree_of(engine).path()[-1]
    frames = run(engine, Regenerate("c"))
    tree = tree_of(engine)
    again = tree.path()[-1]
    assert again.id != first.id and again.parent == first.parent
    assert tree.siblings(again.id).count == 2 and tree[first.id].text == first.text
    assert any(
        d.replaces_last and d.message_id == again.id for f in frames for d in f.deltas.values()
    )


def test_commands_that_name_a_message_the_chat_lacks_are_told_so(engine: ChatEngine) -> None:
    run(engine, OpenChat("c", CONFIG), SendTurn("c", "What is the capital of France?"))
    q, a = tree_of(engine).path()
    cases = [
        (EditMessage("c", 999, "x"), "no user message 999"),
        (EditMessage("c", a.id, "x"), f"no user message {a.id}"),  # a reply is not edited
        (ShowMessage("c", 999), "no message 999"),
        (BranchAtToken("c", q.id, 0, 1), f"no assistant message {q.id}"),
        (BranchAtToken("c", a.id, 999, 1), "choose an index below that"),
        (BranchAtToken("c", a.id, 0, 10**9), "not in this model's vocabulary"),
    ]
    for command, words in cases:
        frames = run(engine, command)
        notices = [d.notice for f in frames for d in f.deltas.values() if d.notice]
        assert len(notices) == 1 and notices[0].kind is NoticeKind.FAILED, command
        assert words in notices[0].text(), (command, notices[0].text())
        assert shown(tree_of(engine)) == [(q.role.value, q.text), (a.role.value, a.text)]


def test_a_fork_copies_the_shown_branch_and_a_clear_empties_the_tree(
    engine: ChatEngine,
) -> None:
    run(engine, OpenChat("c", CONFIG), SendTurn("c", "What is the capital of France?"))
    source = tree_of(engine)
    run(engine, ForkChat("c", "d", CONFIG))
    fork = tree_of(engine, "d")
    assert shown(fork) == shown(source)
    assert [m.id for m in fork.path()] == [m.id for m in source.path()]
    assert fork.path()[-1].tokens == source.path()[-1].tokens
    run(engine, ClearChat("c"))
    assert len(tree_of(engine)) == 0 and shown(tree_of(engine, "d")) == shown(source)
    assert engine.tree("nobody") is None


def test_the_tree_is_read_from_another_thread_while_the_engine_runs(
    weights: LlamaWeights,
) -> None:
    events: queue.SimpleQueue[EngineEvent] = queue.SimpleQueue()
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=1)) as executor:
        engine = ChatEngineGroup(ChatEngine(executor, model_template(weights)), events.put)
        engine.submit(OpenChat("c", CONFIG))
        engine.start()
        try:
            engine.submit(SendTurn("c", "What is the capital of France?"))
            texts = []
            while True:
                event = events.get(timeout=120)
                assert isinstance(event, Frame)
                delta = event.deltas.get("c")
                if delta is None:
                    continue
                tree = engine.tree("c")  # answered by the loop's thread, between frames
                assert tree is not None
                texts.append(tree.path()[-1].text)
                if delta.finished is not None:
                    break
        finally:
            engine.shutdown()
    assert texts[-1] and "Paris" in texts[-1]
    assert all(texts[-1].startswith(t) for t in texts)  # the text so far, growing


def test_a_follower_has_the_reply_so_far_after_every_frame(engine: ChatEngine) -> None:
    """Each frame's tree change carries a streaming reply's text so far (without its tokens,
    which come whole when it ends): a view, a store or the parent of a model's process that
    dies loses nothing a frame showed."""
    long = ChatConfig("c", SYSTEM, SamplingParams(temperature=0.0), max_tokens=48)
    engine.submit(OpenChat("c", long), SendTurn("c", "Count from one to twenty in words."))
    follower, streamed, checked = ChatTree(), "", 0
    while engine.busy:
        frame = engine.step()
        follow(follower, [frame] if frame else [])
        delta = frame.deltas.get("c") if frame else None
        if delta is None or delta.message_id is None:
            continue
        streamed += delta.text
        reply = follower[delta.message_id]
        if delta.finished is None:
            assert reply.text.strip() == streamed.strip() and reply.tokens == []
            checked += 1
    assert checked > 10
    assert same(follower, tree_of(engine))
    assert follower[follower.head or 0].tokens and follower[follower.head or 0].stop
