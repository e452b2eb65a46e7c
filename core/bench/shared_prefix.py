"""Opening panes that share a system prompt: one prefill shared by all, or one prefill each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from core.bench.prompts import long_text
from core.bench.throughput import GREEDY, open_executor
from core.executor.conversation import Conversation
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.executor.shared_prefix import PrefillInFlight, SharedPrefixes
from core.models.weights import LlamaWeights


@dataclass(frozen=True, slots=True)
class PrefixResult:
    conversations: int
    prefix_tokens: int
    separate_seconds: float
    shared_seconds: float
    separate_tokens_decoded: int
    shared_tokens_decoded: int

    @property
    def speedup(self) -> float:
        return self.separate_seconds / self.shared_seconds


def measure_shared_prefix(
    weights: LlamaWeights, base: ContextParams, *, conversations: int = 8, prefix_tokens: int = 1000
) -> PrefixResult:
    """Time until ``conversations`` conversations hold the same ``prefix_tokens``-token
    system prompt, decoded and ready for a first turn."""
    prefix = weights.tokenize(long_text(), add_special=True)[:prefix_tokens]
    params = replace(
        base,
        n_ctx=max(base.n_ctx, 1 << (conversations * (prefix_tokens + 64)).bit_length()),
        n_seq_max=conversations,
    )

    def separately(executor: BatchedExecutor) -> list[Conversation]:
        convs = [executor.create(GREEDY) for _ in range(conversations)]
        for conv in convs:
            conv.prompt(prefix)
        return convs

    def shared_by_all(executor: BatchedExecutor) -> list[Conversation]:
        prefixes = SharedPrefixes(executor)
        opened: list[Conversation] = []
        while len(opened) < conversations:
            try:
                opened.append(prefixes.open(prefix, GREEDY))
            except PrefillInFlight:
                executor.infer_sync()
        return opened

    separate, separate_tokens = _time_to_ready(weights, params, separately)
    shared, shared_tokens = _time_to_ready(weights, params, shared_by_all)
    return PrefixResult(
        conversations, len(prefix), separate, shared, separate_tokens, shared_tokens
    )


def _time_to_ready(
    weights: LlamaWeights,
    params: ContextParams,
    open_all: Callable[[BatchedExecutor], list[Conversation]],
) -> tuple[float, int]:
    """Seconds and tokens decoded until every conversation ``open_all`` opens is decoded."""
    executor = open_executor(weights, params)
    try:
        before = executor.stats.tokens_decoded
        started = time.perf_counter()
        convs = open_all(executor)
        while any(c.requires_inference for c in convs):
            executor.infer_sync()
        return time.perf_counter() - started, executor.stats.tokens_decoded - before
    finally:
        executor.close()
