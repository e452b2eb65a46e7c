"""What one sampled token costs: our pre-filtered chain against llama.cpp's whole-row chain.

Both sample the same real logits row (the embedded model after a short prompt) with the same
settings and seeds, in alternating blocks; the whole-row chain is what ``llama_sampler_sample``
does, called on the live context (every logit copied into a candidate array, then the
chain). Greedy was an argmax in place before this bench existed; its row shows what the
chain would cost.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import llama_cpp

from core.chat.token_stats import token_stat
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights
from core.sampling.sampling import Prefilter, SamplerChain, SamplingParams
from core.sampling.token_choice import token_choice

#: The settings measured: the issue's table, and the other pre-filters.
SETTINGS = {
    "greedy": SamplingParams(temperature=0.0),
    "pane default (T0.7 k40 p0.95 min-p 0.05 rep 1.1)": SamplingParams(
        temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1
    ),
    "T0.8 top-k 40": SamplingParams(temperature=0.8, top_k=40, top_p=1.0, min_p=0.0),
    "T0.7 min-p 0.05 only": SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.05),
    "T0.7 top-p 0.95 only": SamplingParams(temperature=0.7, top_k=0, top_p=0.95, min_p=0.0),
}
DRAWS = 300
ROUNDS = 3


@dataclass(frozen=True, slots=True)
class SamplingCost:
    setting: str
    prefilter: str
    ours_ms: float  # per sampled token
    whole_row_ms: float
    with_odds_ms: float  # ours, plus the token's odds and alternatives a chat records

    @property
    def speedup(self) -> float:
        return self.whole_row_ms / self.ours_ms if self.ours_ms > 0 else 0.0


def measure_sampling_cost(
    weights: LlamaWeights, params: ContextParams, draws: int = DRAWS, rounds: int = ROUNDS
) -> list[SamplingCost]:
    executor = BatchedExecutor(
        weights, ContextParams(n_ctx=512, n_seq_max=1, n_threads=params.n_threads)
    )
    try:
        conv = executor.create()
        conv.prompt("The best way to spend a quiet Sunday afternoon is")
        if not executor.infer_sync().ok:
            raise RuntimeError("the sampling-cost prompt did not decode")
        row = conv.logits()
        ctx = executor.context
        results = []
        for name, setting in SETTINGS.items():
            ours: list[float] = []
            whole: list[float] = []
            with_odds: list[float] = []
            for _ in range(rounds):
                chain = SamplerChain(setting, row.shape[0])
                started = time.perf_counter()
                for _ in range(draws):
                    chain.sample_row(row)
                ours.append((time.perf_counter() - started) / draws)
                chain.free()
                chain = SamplerChain(setting, row.shape[0])
                started = time.perf_counter()
                for _ in range(draws):  # what the chat engine does with each reply token
                    token = chain.sample_row(row)
                    token_stat(weights, token_choice(row, token, chain.ranked))
                with_odds.append((time.perf_counter() - started) / draws)
                chain.free()
                native = SamplerChain(setting, row.shape[0], reference=True)
                started = time.perf_counter()
                for _ in range(draws):  # what llama_sampler_sample does with the live row
                    llama_cpp.llama_sampler_sample(native.handle, ctx, -1)
                whole.append((time.perf_counter() - started) / draws)
                native.free()
            results.append(
                SamplingCost(
                    name,
                    Prefilter.for_params(setting).value,
                    statistics.median(ours) * 1000,
                    statistics.median(whole) * 1000,
                    statistics.median(with_odds) * 1000,
                )
            )
        return results
    finally:
        executor.close()
