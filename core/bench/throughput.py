"""Throughput against concurrency: N chats one after another, or all N in one batch.

(a) is what a user of llama-cpp-python would write: the high-level ``Llama.create_completion``,
streamed, one conversation after another. (b) is our executor with all N conversations in one
batch per step. Both decode greedily from the same prompts on the same weights, threads and
flash-attention setting, and stop after ``max_tokens`` or at end-of-generation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import llama_cpp

from core.errors import PanechatError
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.load_report import LoadReport
from core.models.weights import LlamaWeights
from core.native import native_log
from core.native.weight_layout import LayoutChoice, withholding
from core.sampling.sampling import SamplingParams
from core.text.detokenizer import IncrementalDetokenizer

GREEDY = SamplingParams(temperature=0.0)
#: What the app's panes sample with (config.toml's [pane_defaults]), seeded per conversation.
PANE_DEFAULT = SamplingParams(temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1)


@dataclass(frozen=True, slots=True)
class RunResult:
    """One way of answering N prompts: what it produced and how long it took."""

    conversations: int
    tokens: int  # generated tokens (end-of-generation not counted)
    seconds: float  # wall time from the first prompt to the last token
    ttft_median: float  # median over conversations of start -> their first token
    decode_seconds: float | None  # time inside llama_decode (executor only)
    texts: tuple[str, ...]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_share(self) -> float | None:
        if self.decode_seconds is None or self.seconds <= 0:
            return None
        return self.decode_seconds / self.seconds


def open_baseline(model_path: str, params: ContextParams, layout: LayoutChoice) -> llama_cpp.Llama:
    """The high-level API set up as a user would, with our threads and attention settings, and
    the weight layout our own load chose: like compared with like, and no AMX where it crashes.
    (``Llama`` has no layout setting: the layout is applied around its load, then checked.)"""
    with native_log.capture() as log, withholding(layout):
        llm = llama_cpp.Llama(
            model_path,
            n_ctx=2048,
            n_batch=params.n_batch,
            n_threads=params.threads,
            n_threads_batch=params.threads_batch,
            flash_attn=params.flash_attention != "off",
            verbose=False,
        )
    leaked = layout.leaks(LoadReport.from_log(log).buffer_names())
    if leaked:
        llm.close()
        raise PanechatError(
            f"llama-cpp-python's Llama put weights in {', '.join(leaked)} although they were "
            "withheld — run the benchmark with --weight-layout plain"
        )
    return llm


def run_baseline(llm: llama_cpp.Llama, prompts: Sequence[str], max_tokens: int) -> RunResult:
    """(a): ``create_completion`` for each prompt in turn, streamed."""
    started = time.perf_counter()
    first_tokens: list[float] = []
    tokens = 0
    texts: list[str] = []
    for prompt in prompts:
        first: float | None = None
        parts: list[str] = []
        finish: str | None = None
        stream = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True)
        chunk: Any
        for chunk in stream:
            choice: Any = chunk["choices"][0]
            if first is None:
                first = time.perf_counter() - started
            parts.append(choice["text"])
            finish = choice["finish_reason"]
        first_tokens.append(first if first is not None else time.perf_counter() - started)
        prompt_tokens = len(llm.tokenize(prompt.encode()))
        # The last sampled token is never evaluated; at a stop it is the (unshown) EOG token.
        tokens += llm.n_tokens - prompt_tokens + (1 if finish == "length" else 0)
        texts.append("".join(parts))
    seconds = time.perf_counter() - started
    return RunResult(
        len(prompts), tokens, seconds, statistics.median(first_tokens), None, tuple(texts)
    )


def run_batched(
    executor: BatchedExecutor,
    prompts: Sequence[str],
    max_tokens: int,
    sampling: SamplingParams = GREEDY,
    *,
    full_length: bool = False,
) -> RunResult:
    """(b): every prompt in one executor, one ``infer()`` per step for all of them.

    ``sampling`` is seeded per conversation (0, 1, …), so a run is reproducible. With
    ``full_length`` every conversation decodes ``max_tokens`` whatever it samples (an
    end-of-generation token is decoded like any other): runs with different samplers then
    decode the very same batches, and their times differ only by sampling.
    """
    weights = executor.model
    convs = [executor.create(replace(sampling, seed=i)) for i in range(len(prompts))]
    detoks = [IncrementalDetokenizer(weights.token_piece) for _ in prompts]
    texts = [""] * len(prompts)
    counts = [0] * len(prompts)
    first_tokens: list[float | None] = [None] * len(prompts)
    live = set(range(len(prompts)))
    decode_before = executor.stats.decode_seconds
    started = time.perf_counter()
    for conv, prompt in zip(convs, prompts, strict=True):
        conv.prompt(prompt)
    while live:
        result = executor.infer_sync()
        if not result.ok:
            raise RuntimeError(f"llama_decode failed during the benchmark: {result.name}")
        for i in list(live):
            conv = convs[i]
            if not conv.requires_sampling:
                continue
            token = conv.sample()
            if first_tokens[i] is None:
                first_tokens[i] = time.perf_counter() - started
            if weights.is_eog(token) and not full_length:
                live.discard(i)
                continue
            texts[i] += detoks[i].feed(token)
            counts[i] += 1
            if counts[i] >= max_tokens:
                live.discard(i)
            else:
                conv.prompt([token])
    seconds = time.perf_counter() - started
    decode_seconds = executor.stats.decode_seconds - decode_before
    for conv in convs:
        conv.dispose()
    firsts = [t for t in first_tokens if t is not None]
    return RunResult(
        len(prompts),
        sum(counts),
        seconds,
        statistics.median(firsts),
        decode_seconds,
        tuple(t + d.flush() for t, d in zip(texts, detoks, strict=True)),
    )


def executor_params(base: ContextParams, conversations: int, max_tokens: int) -> ContextParams:
    """Room for ``conversations`` short prompts plus replies, in one unified KV cache."""
    needed = conversations * (max_tokens + 64) + 256
    n_ctx = max(base.n_ctx, 1 << (needed - 1).bit_length())
    return replace(
        base,
        n_ctx=n_ctx,
        n_seq_max=max(conversations, 1),
        n_batch=max(base.n_batch, conversations),
    )


def same_text_count(a: RunResult, b: RunResult) -> int:
    """How many conversations produced the same text both ways (greedy: all, barring float
    differences between batched and single-sequence kernels)."""
    return sum(x == y for x, y in zip(a.texts, b.texts, strict=True))


def open_executor(weights: LlamaWeights, params: ContextParams) -> BatchedExecutor:
    executor = BatchedExecutor(weights, params)
    executor.warm_up()
    return executor
