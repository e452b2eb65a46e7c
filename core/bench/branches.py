"""Switching a chat between two of its branches: what the KV shares with the branch stays and
only the rest is decoded (what the app does), against reading the whole branch again, and
against keeping a fork per branch (no decode, but a sequence and KV cells held)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from core.chat.commands import (
    EditMessage,
    ForkChat,
    OpenChat,
    Restore,
    SendTurn,
    ShowMessage,
)
from core.chat.config import ChatConfig
from core.chat.engine import ChatEngine
from core.chat.tree import ChatTree
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights
from core.sampling.sampling import SamplingParams
from core.templates.template_choice import model_template

QUESTIONS = (
    "Tell me about the sea.",
    "And the mountains?",
    "What lives in the forest?",
    "Describe a city at night.",
    "What is a desert like?",
    "Tell me about rivers.",
    "What is snow made of?",
    "Why is the sky blue?",
)
#: The turns edited: early (most of the branch decoded again) and late (most of it shared).
EDITED_TURNS = (1, 6)


@dataclass(frozen=True, slots=True)
class BranchSwitch:
    edited_turn: int  # which turn the other branch edits (0: the first)
    branch_tokens: int  # the branch switched to, rendered
    shared_tokens: int  # of which the KV already held this many (the turns before the edit)
    switch_seconds: float  # the app's way: keep the shared tokens, decode the rest
    switch_tokens_decoded: int
    full_read_seconds: float  # the whole branch read again, from an empty KV
    fork_seconds: float  # a fork of the branch kept instead (nothing decoded)
    fork_cells: int  # KV cells that fork would hold beyond what it shares

    @property
    def speedup(self) -> float:
        return self.full_read_seconds / self.switch_seconds


def _settle(engine: ChatEngine) -> None:
    while engine.busy:
        engine.step()


def measure_branch_switches(weights: LlamaWeights, base: ContextParams) -> list[BranchSwitch]:
    return [measure_branch_switch(weights, base, turn) for turn in EDITED_TURNS]


def measure_branch_switch(
    weights: LlamaWeights, base: ContextParams, edited_turn: int = 1
) -> BranchSwitch:
    """An eight-turn chat; turn ``edited_turn`` edited (a new branch with one more turn);
    then the switch back to the first branch, each way measured on the same chat."""
    params = replace(base, n_ctx=4096, n_seq_max=4, n_batch=512)
    config = ChatConfig("bench", "You answer briefly.", SamplingParams(temperature=0.0), 64, ())
    executor = BatchedExecutor(weights, params)
    try:
        engine = ChatEngine(executor, model_template(weights))
        engine.submit(OpenChat("c", config))
        for question in QUESTIONS:
            engine.submit(SendTurn("c", question))
            _settle(engine)
        tree = engine.tree("c")
        assert tree is not None
        first = tree.messages()
        edited = tree.path()[2 * edited_turn]  # a user message: its turn is edited
        held = engine.context("c")
        assert held is not None
        shared = held.turns[edited_turn].start
        engine.submit(EditMessage("c", edited.id, "And the valleys?"))
        _settle(engine)
        engine.submit(SendTurn("c", "And the hills?"))
        _settle(engine)

        before = executor.stats.tokens_decoded
        started = time.perf_counter()
        engine.submit(ShowMessage("c", edited.id))  # back to the first branch
        _settle(engine)
        switch_seconds = time.perf_counter() - started
        decoded = executor.stats.tokens_decoded - before
        shown = engine.context("c")
        assert shown is not None
        branch_tokens = len(shown.tokens)

        started = time.perf_counter()
        engine.submit(ForkChat("c", "kept", config))
        _settle(engine)
        fork_seconds = time.perf_counter() - started
        started = time.perf_counter()  # a new chat on the branch (its system prompt shared)
        engine.submit(OpenChat("fresh", config, Restore(ChatTree.linear(first))))  # reads it whole
        _settle(engine)
        full_read_seconds = time.perf_counter() - started
        return BranchSwitch(
            edited_turn,
            branch_tokens,
            shared,
            switch_seconds,
            decoded,
            full_read_seconds,
            fork_seconds,
            branch_tokens - shared,
        )
    finally:
        executor.close()
