"""Fairness: how much a long prompt arriving mid-stream slows the conversations generating.

Four conversations stream; a fifth receives a 1,500-token prompt. Each generator's gap between
tokens is one frame, so a frame stuffed with prompt tokens shows up directly as a longer gap.
Measured with the executor's prefill budget on, and off (whole batches of prompt, the way
llama.cpp's server fills them) for comparison.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

from core.bench.prompts import long_text, short_prompts
from core.bench.throughput import GREEDY, open_executor
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights


@dataclass(frozen=True, slots=True)
class FairnessResult:
    max_frame_stretch: float  # the executor's setting; 0 = no cap
    generators: int
    long_prompt_tokens: int
    normal_gap_median: float
    normal_gap_max: float
    during_gap_median: float
    during_gap_max: float
    long_prompt_ttft: float  # seconds from queueing the long prompt to its first token

    @property
    def max_gap_ratio(self) -> float:
        """The worst gap while the long prompt is decoded, in units of the normal gap."""
        return self.during_gap_max / self.normal_gap_median


def measure_fairness(
    weights: LlamaWeights,
    base: ContextParams,
    *,
    max_frame_stretch: float,
    generators: int = 4,
    long_prompt_tokens: int = 1500,
    normal_frames: int = 40,
    warm_frames: int = 10,
) -> FairnessResult:
    params = replace(
        base,
        n_ctx=max(base.n_ctx, 4096),
        n_seq_max=generators + 1,
        max_frame_stretch=max_frame_stretch,
    )
    executor = open_executor(weights, params)
    try:
        convs = [executor.create(GREEDY) for _ in range(generators)]
        for conv, prompt in zip(convs, short_prompts(generators), strict=True):
            conv.prompt(prompt)
        last_token_at: list[float | None] = [None] * generators

        def frame(gaps: list[float] | None) -> None:
            result = executor.infer_sync()
            if not result.ok:
                raise RuntimeError(f"llama_decode failed during the benchmark: {result.name}")
            for i, conv in enumerate(convs):
                if not conv.requires_sampling:
                    continue
                conv.prompt([conv.sample()])  # keep streaming, end-of-generation or not
                now = time.perf_counter()
                previous, last_token_at[i] = last_token_at[i], now
                if gaps is not None and previous is not None:
                    gaps.append(now - previous)

        for _ in range(warm_frames):  # prefill, and let the budget learn the frame costs
            frame(None)
        normal: list[float] = []
        for _ in range(normal_frames):
            frame(normal)

        tokens = weights.tokenize(long_text(), add_special=True)[:long_prompt_tokens]
        if len(tokens) < long_prompt_tokens:
            raise RuntimeError("the long prompt text is too short for this tokenizer")
        long = executor.create(GREEDY)
        queued_at = time.perf_counter()
        long.prompt(tokens)
        during: list[float] = []
        while not long.requires_sampling:
            frame(during)
        long.sample()
        ttft = time.perf_counter() - queued_at
        return FairnessResult(
            max_frame_stretch=max_frame_stretch,
            generators=generators,
            long_prompt_tokens=long_prompt_tokens,
            normal_gap_median=statistics.median(normal),
            normal_gap_max=max(normal),
            during_gap_median=statistics.median(during),
            during_gap_max=max(during),
            long_prompt_ttft=ttft,
        )
    finally:
        executor.close()
