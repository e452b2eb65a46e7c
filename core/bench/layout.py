"""What each weight layout costs: the same prefill and decodes with weights loaded as AMX,
repacked or plain (``[model] weight_layout``), measured side by side in alternating rounds.

AMX is measured only where it may run: where this machine's load already chose it (its trial
passed); a layout that crashes here is never loaded by the benchmark.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

from core.bench.prompts import long_text, short_prompts
from core.bench.throughput import GREEDY, executor_params, open_executor, run_batched
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights
from core.native.weight_layout import AMX_BUFFER_TYPE, LayoutChoice, WeightLayout

PREFILL_TOKENS = 512
ROUNDS = 3


@dataclass(frozen=True, slots=True)
class LayoutResult:
    layout: WeightLayout
    buffers: str  # where the weights went, e.g. "CPU_Mapped 235.2 MiB, CPU_REPACK 12.7 MiB"
    prefill_tokens_per_second: float  # median over rounds
    decode_1_tokens_per_second: float  # one conversation
    decode_8_tokens_per_second: float  # eight conversations in one batch


def layouts_to_measure(chosen: LayoutChoice) -> list[WeightLayout]:
    """Plain always; repack where the build offers it; AMX only where this machine's load
    chose it (its trial passed, or the user asked for it)."""
    layouts = [WeightLayout.PLAIN]
    if any(name != AMX_BUFFER_TYPE for name in chosen.offered or ()):
        layouts.append(WeightLayout.REPACK)
    if chosen.effective is WeightLayout.AMX:
        layouts.append(WeightLayout.AMX)
    return layouts


def _prefill_rate(weights: LlamaWeights, params: ContextParams) -> float:
    executor = open_executor(weights, params)
    try:
        conv = executor.create(GREEDY)
        tokens = weights.tokenize(long_text())[:PREFILL_TOKENS]
        conv.prompt(tokens)
        started = time.perf_counter()
        while conv.requires_inference:
            if not executor.infer_sync().ok:
                raise RuntimeError("llama_decode failed during the layout benchmark")
        return len(tokens) / (time.perf_counter() - started)
    finally:
        executor.close()


def _measure(weights: LlamaWeights, params: ContextParams, tokens: int) -> tuple[float, ...]:
    """(prefill, N=1, N=8) tokens per second with these weights."""
    prefill = replace(
        params, n_ctx=max(params.n_ctx, 2 * PREFILL_TOKENS), n_batch=PREFILL_TOKENS, n_ubatch=0
    )
    rates = [_prefill_rate(weights, prefill)]
    for n in (1, 8):
        executor = open_executor(weights, executor_params(params, n, tokens))
        try:
            rates.append(run_batched(executor, short_prompts(n), tokens).tokens_per_second)
        finally:
            executor.close()
    return tuple(rates)


def measure_layouts(
    model_path: str, params: ContextParams, chosen: LayoutChoice, tokens: int, rounds: int = ROUNDS
) -> list[LayoutResult]:
    """Every layout in turn, ``rounds`` times: each round loads the model once per layout (one
    copy in memory at a time: repacked weights are copies, not the mapped file)."""
    layouts = layouts_to_measure(chosen)
    samples: dict[WeightLayout, list[tuple[float, ...]]] = {layout: [] for layout in layouts}
    buffers: dict[WeightLayout, str] = {}
    for _ in range(rounds):
        for layout in layouts:
            with LlamaWeights.load(model_path, 0, layout) as weights:
                used = weights.load_report.buffers
                buffers[layout] = ", ".join(f"{b.name} {b.mib:.1f} MiB" for b in used)
                samples[layout].append(_measure(weights, params, tokens))
    return [
        LayoutResult(
            layout,
            buffers[layout],
            statistics.median(s[0] for s in runs),
            statistics.median(s[1] for s in runs),
            statistics.median(s[2] for s in runs),
        )
        for layout, runs in samples.items()
    ]
