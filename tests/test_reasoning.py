"""Reasoning blocks: a reasoning model's thoughts kept apart from its answer as the reply
streams (core.text.reasoning), in the engine's frames, and in the app (a folded block above the
answer, left out of exports unless asked, hidden by a pane setting)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from gguf_models import REASONING
from test_chat_engine import run_steps
from test_tui_app import wait_for

from core import (
    BatchedExecutor,
    ContextParams,
    JinjaTemplate,
    LlamaWeights,
    ReplyStream,
    SamplingParams,
)
from core.chat import ChatConfig, ChatEngine, ChatTree, OpenChat, SendTurn
from core.text.reasoning import ReasoningMarkers, ReasoningSplitter, split_reply
from tui.app import PanechatApp
from tui.config import AppConfig, load_config
from tui.export import pane_markdown
from tui.launch import create_app
from tui.widgets.chat_pane import ChatPane
from tui.widgets.reasoning_block import ReasoningBlock

REPLY = "<think>Paris is the capital.\nSo: Paris.</think>\n\nThe capital is Paris."


def split_in_pieces(text: str, cut: list[int], **kwargs: object) -> ReasoningSplitter:
    splitter = ReasoningSplitter(**kwargs)  # type: ignore[arg-type]
    bounds = [0, *cut, len(text)]
    for start, end in itertools.pairwise(bounds):
        splitter.feed(text[start:end])
    splitter.flush()
    return splitter


def test_the_reply_splits_the_same_however_it_streams() -> None:
    for cut in ([], [1], [3, 9], list(range(1, len(REPLY)))):  # whole, ..., char by char
        s = split_in_pieces(REPLY, cut)
        assert (s.reasoning, s.answer) == (
            "Paris is the capital.\nSo: Paris.",
            "The capital is Paris.",
        )


def test_what_counts_as_reasoning() -> None:
    assert split_in_pieces("Paris.", []).answer == "Paris."  # no block: all answer
    opened = split_in_pieces("thinking</think>Paris.", [4], inside=True)  # the prompt opened it
    assert (opened.reasoning, opened.answer) == ("thinking", "Paris.")
    later = split_in_pieces("It is <think>x</think> here.", [])  # not the reply's first block
    assert later.answer == "It is <think>x</think> here." and not later.reasoning
    cut_marker = split_in_pieces("<thi", [])  # a reply cut inside a marker: answer text
    assert cut_marker.answer == "<thi" and not cut_marker.reasoning
    unfinished = split_in_pieces("<think>still thinking", [9])
    assert unfinished.reasoning == "still thinking" and unfinished.thinking
    magistral = ReasoningMarkers.in_template("{{ '[THINK]' }}...{{ '[/THINK]' }}")
    assert magistral == ReasoningMarkers("[THINK]", "[/THINK]")
    # A reply saved mid-stream keeps its reasoning between the common pair; the model's
    # template gets it back between its own, and a reply already in them is left as it is.
    saved = "<think>Plan it.</think>\n\nThe answer."
    assert magistral.in_own_markers(saved) == "[THINK]Plan it.[/THINK]\n\nThe answer."
    own = "[THINK]\nPlan it.\n[/THINK]\n\nThe answer."
    assert magistral.in_own_markers(own) == own
    assert ReasoningMarkers().in_own_markers(saved) == saved
    assert magistral.in_own_markers("No reasoning.") == "No reasoning."
    assert ReasoningMarkers().opened_by("<|im_start|>assistant\n<think>\n")


def test_a_saved_reply_splits_back_into_the_same_two_parts() -> None:
    s = split_in_pieces(REPLY, [5])
    record = s.record()
    again = split_reply(record)
    assert (again.reasoning, again.answer) == (s.reasoning, s.answer)
    assert split_reply("Just an answer.").answer == "Just an answer."


def test_streamed_tokens_split_through_the_real_tokenizer(weights: LlamaWeights) -> None:
    reply, splitter = ReplyStream(weights, max_tokens=200), ReasoningSplitter()
    for token in weights.tokenize(REPLY):
        splitter.feed(reply.feed(token))
    splitter.feed(reply.cancel())
    splitter.flush()
    assert splitter.reasoning == "Paris is the capital.\nSo: Paris."
    assert splitter.answer.strip() == "The capital is Paris."


def test_the_engine_hands_out_reasoning_apart_from_the_answer(weights: LlamaWeights) -> None:
    """This template opens <think> in its generation prompt: the reply starts inside the
    block, and the embedded (not a reasoning) model never closes it, so all it writes is
    reasoning; the saved record spells the block out."""
    with BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2)) as executor:
        engine = ChatEngine(executor, JinjaTemplate(REASONING, bos_token="<bos>"))
        config = ChatConfig("r", "", SamplingParams(temperature=0.0), max_tokens=12)
        engine.submit(OpenChat("r", config), SendTurn("r", "What is the capital of France?"))
        frames = run_steps(engine)
        deltas = [f.deltas["r"] for f in frames if "r" in f.deltas]
        reasoning = "".join(d.reasoning for d in deltas)
        assert reasoning.strip() and not "".join(d.text for d in deltas).strip()
        tree = engine.tree("r")
        assert tree is not None and tree.head is not None
        record = tree[tree.head].text  # the reply as the tree keeps it, its block spelled out
        assert record.startswith("<think>") and split_reply(record).reasoning == reasoning.strip()


Factory = Callable[..., PanechatApp]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppConfig:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    base = load_config()
    pane = replace(base.panes[0], stop=(), max_tokens=16, sampling=SamplingParams(temperature=0))
    return replace(
        base,
        context=ContextParams(n_ctx=2048, n_batch=256, n_seq_max=4),
        panes=(pane, replace(pane, name="Quiet", show_reasoning=False)),
    )


def blocks(pane: ChatPane) -> list[ReasoningBlock]:
    return list(pane.query(ReasoningBlock))


async def test_the_app_folds_the_thoughts_above_the_answer(
    weights: LlamaWeights, config: AppConfig
) -> None:
    with BatchedExecutor(weights, config.context) as executor:
        template = JinjaTemplate(REASONING, bos_token="<bos>")
        app = create_app(config, ChatEngine(executor, template), persist_theme=False)
        async with app.run_test(size=(160, 40)) as pilot:
            shown, quiet = app.panes
            for pane in (shown, quiet):
                await app.send_to(pane, "What is the capital of France?")
            await wait_for(pilot, lambda: bool(blocks(shown)) and bool(blocks(shown)[0].text))
            assert not blocks(shown)[0].collapsed  # open while the model thinks
            await wait_for(
                pilot, lambda: all(p.finished_replies and not p.generating for p in app.panes)
            )
            (block,) = blocks(shown)
            assert block.collapsed and block.title.startswith("Thought · ")
            assert not blocks(quiet)  # show_reasoning = false
            plain = pane_markdown(shown.transcript_for_export())
            full = pane_markdown(shown.transcript_for_export(reasoning=True))
            assert "_Thinking:_" not in plain and "_Thinking:_" in full
            assert block.text.split()[0] in full
            # A saved reply with reasoning comes back folded, its answer shown.
            await shown.follow(
                [ChatTree.linear([("user", "Again?"), ("assistant", REPLY)]).whole()]
            )
            restored = blocks(shown)[-1]
            assert restored.collapsed and restored.text == "Paris is the capital.\nSo: Paris."
            assert shown.last_reply == "The capital is Paris."
        app.source.close()
