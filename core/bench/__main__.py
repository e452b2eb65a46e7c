"""``python -m core.bench`` (and ``panechat bench``): every section in one process and run.

Sections: ``sampling`` (what one sampled token costs, against llama.cpp's whole-row chain),
``throughput`` (N chats one after another vs. all N in one batch, greedy and sampled),
``busy`` (the same beside a competing process), ``fairness`` (a long prompt arriving while
others stream), ``prefix`` (8 conversations opened on one system prompt, shared or not),
``layout`` (the same work with the weights repacked, plain or in AMX tiles), ``models`` (a
chat on one model while another model streams), ``rpc`` (N=8 here and split across two
loopback RPC servers) and ``app`` (the Textual app, headless, with 8 panes).
The app section lives in ``tui``: ``panechat bench`` hands it to :func:`main`, so ``core``
never imports ``tui`` or Textual; ``python -m core.bench`` runs the other sections and says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from core.bench.branches import BranchSwitch, measure_branch_switches
from core.bench.busy import (
    APP_DECODE_NICE,
    BusyResult,
    EngineBusyResult,
    measure_busy,
    measure_busy_engine,
)
from core.bench.decode_workload import context_size
from core.bench.fairness import FairnessResult, measure_fairness
from core.bench.layout import PREFILL_TOKENS, ROUNDS, LayoutResult, measure_layouts
from core.bench.llama_batched_bench import (
    LlamaComparison,
    LlamaToolMissing,
    Workload,
    compare,
    find_tool,
)
from core.bench.models import ModelsResult, measure_models
from core.bench.prompts import short_prompts
from core.bench.report import machine, ms, pct, table, write_json
from core.bench.roofline import (
    BATCH_SPEEDUP_TARGET,
    BATCH_TARGET_SIZE,
    PROMPT_TOKENS,
    ROOFLINE_TARGET,
    RooflineResult,
    measure_roofline,
)
from core.bench.rpc import RpcResult, measure_rpc
from core.bench.sampling_cost import SamplingCost, measure_sampling_cost
from core.bench.shared_prefix import PrefixResult, measure_shared_prefix
from core.bench.synthetic_model import SHAPES, ModelShape, SyntheticModels
from core.bench.throughput import (
    GREEDY,
    PANE_DEFAULT,
    RunResult,
    executor_params,
    open_baseline,
    open_executor,
    run_baseline,
    run_batched,
    same_text_count,
)
from core.errors import PanechatError
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.model_path import resolve_model_path
from core.models.weights import LlamaWeights
from core.native.rpc import REINSTALL, rpc_supported
from core.native.weight_layout import WeightLayout, add_layout_option

SECTIONS = (
    "sampling",
    "throughput",
    "busy",
    "fairness",
    "prefix",
    "branches",
    "layout",
    "models",
    "rpc",
    "roofline",
    "llama",
    "app",
    "api",
)
#: Batch sizes the roofline section decodes on a synthetic model (of those asked for; 1 always).
ROOFLINE_CONCURRENCY = (1, 8, 16)
#: Reply tokens per chat there (a 1B model decodes ~10 steps a second on 2 cores).
ROOFLINE_TOKENS = 32
#: Batch sizes compared with llama-batched-bench (issue #27), and the target for each ratio.
LLAMA_CONCURRENCY = "1,8,16,32,64"
LLAMA_TARGET = 0.98
#: Prompt tokens per chat there (batched-bench's -npp), and the long prompts of its S_PP rows.
LLAMA_PROMPT_TOKENS = 16
LLAMA_PREFILL = "512,4096"
#: The conversation counts the busy section measures (of those asked for).
BUSY_CONCURRENCY = (8, 16)
#: Reply tokens per chat in the busy section's decode-loop rows: beside a busy process with a
#: fixed thread count, the loop has been measured at ~5 tok/s.
BUSY_ENGINE_TOKENS = 48


@dataclass
class BenchContext:
    """What every section gets: the loaded weights, settings, and earlier sections' results."""

    weights: LlamaWeights
    model_path: str
    params: ContextParams
    tokens: int
    results: dict[str, Any] = field(default_factory=dict)
    synthetic: SyntheticModels = field(default_factory=SyntheticModels)


#: A section measures, prints its table, and returns what goes into the JSON document.
Section = Callable[[BenchContext], Any]


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Measure batched decoding against chats run one after another."
    )
    parser.add_argument("--model", metavar="PATH", help="GGUF file (default: the embedded model)")
    parser.add_argument(
        "--concurrency",
        default="1,2,4,8,16,32",
        metavar="N,N,...",
        help="conversation counts to measure (default: 1,2,4,8,16,32)",
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens per conversation (64)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    add_layout_option(parser)
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        metavar="NAME,...",
        help=f"which sections to run (default: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--synthetic",
        default="1b",
        metavar="SHAPE,...",
        help=f"the roofline section's synthetic models (of {', '.join(SHAPES)}; default: 1b)",
    )
    parser.add_argument(
        "--llama-bin",
        metavar="PATH",
        help="llama-batched-bench, or the folder it is in, for the llama section "
        "(default: on PATH; docs/BENCHMARKS.md shows how to build it)",
    )
    parser.add_argument(
        "--llama-concurrency",
        default=LLAMA_CONCURRENCY,
        metavar="N,N,...",
        help=f"the llama section's batch sizes (default: {LLAMA_CONCURRENCY})",
    )
    parser.add_argument(
        "--prefill",
        default=LLAMA_PREFILL,
        metavar="TOKENS,...",
        help=f"the llama section's long prompts, for S_PP (default: {LLAMA_PREFILL}; '' for none)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="the llama section's pairs of runs per row (3)"
    )
    parser.add_argument(
        "--json",
        default="panechat-bench.json",
        metavar="PATH",
        help="where to write the results (default: panechat-bench.json)",
    )
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(n) for n in args.concurrency.split(",") if n.strip()]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 1,2,4,8")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers")
    try:
        args.llama_concurrency = [int(n) for n in args.llama_concurrency.split(",") if n.strip()]
        args.prefill = [int(n) for n in args.prefill.split(",") if n.strip()]
    except ValueError:
        parser.error("--llama-concurrency and --prefill take comma-separated integers")
    if not args.llama_concurrency or min(args.llama_concurrency) < 1:
        parser.error("--llama-concurrency needs positive integers")
    if max(args.llama_concurrency) > 256:
        parser.error("--llama-concurrency: at most 256 chats (llama.cpp's sequence limit)")
    if any(n < 1 for n in args.prefill):
        parser.error("--prefill needs positive token counts")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.tokens < 1:
        parser.error("--tokens must be at least 1")
    args.synthetic = [s.strip() for s in args.synthetic.split(",") if s.strip()]
    if not set(args.synthetic) <= set(SHAPES):
        parser.error(f"--synthetic takes shapes of {', '.join(SHAPES)}, e.g. 1b,3b")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}: pick from {SECTIONS}")
    return args


def throughput_section(ctx: BenchContext, concurrency: list[int]) -> list[dict[str, Any]]:
    print(f"\n## Throughput vs concurrency (greedy, {ctx.tokens} tokens per conversation)\n")
    llm = open_baseline(ctx.model_path, ctx.params, ctx.weights.layout)
    run_baseline(llm, ["Warm up:"], 4)
    rows, out = [], []
    try:
        for n in concurrency:
            prompts = short_prompts(n)
            try:
                executor = open_executor(ctx.weights, executor_params(ctx.params, n, ctx.tokens))
            except PanechatError as e:
                print(f"N={n}: skipped — {e}")
                continue
            try:
                baseline = run_baseline(llm, prompts, ctx.tokens)
                batched = run_batched(executor, prompts, ctx.tokens)
                greedy, sampled = greedy_and_sampled(executor, prompts, ctx.tokens)
            finally:
                executor.close()
            ratio = batched.tokens_per_second / baseline.tokens_per_second
            sampled_ratio = sampled / greedy
            rows.append(
                [
                    *_throughput_row(n, baseline, batched, ratio),
                    f"{sampled:.1f}",
                    f"{sampled_ratio:.2f}",
                ]
            )
            out.append(
                {
                    "conversations": n,
                    "baseline": baseline,
                    "batched": batched,
                    "ratio": ratio,
                    "same_text": same_text_count(baseline, batched),
                    "full_length_greedy_tokens_per_second": greedy,
                    "full_length_sampled_tokens_per_second": sampled,
                    "sampled_ratio": sampled_ratio,
                }
            )
            print(f"  N={n:<3} measured", flush=True)
    finally:
        llm.close()
    print()
    print(
        table(
            (
                "N",
                "(a) tok/s",
                "(b) tok/s",
                "(b)/(a)",
                "(b) in decode",
                "(a) TTFT",
                "(b) TTFT",
                "same text",
                "(b) sampled tok/s",
                "sampled / greedy",
            ),
            rows,
        )
    )
    print(
        "\n(a) llama-cpp-python Llama.create_completion, one conversation after another; "
        "(b) BatchedExecutor, all N in one batch, greedy.\nTTFT: median over the N "
        "conversations of the time from the start of the run to their first token.\n"
        "Sampled: (b) with the panes' default sampling (T0.7 top-k 40 top-p 0.95 min-p 0.05 "
        "repeat penalty 1.1, seeded), against greedy, both decoding every conversation to "
        f"{ctx.tokens} tokens (an end-of-generation token is decoded like any other) so the "
        "batches are the same; medians of 3 runs each, alternating."
    )
    ctx.results["throughput"] = out
    return out


def greedy_and_sampled(
    executor: BatchedExecutor, prompts: list[str], tokens: int, rounds: int = 3
) -> tuple[float, float]:
    """Tokens/s greedy and with the pane defaults' sampling, full length, alternating."""
    greedy: list[float] = []
    sampled: list[float] = []
    for i in range(rounds):
        order = (GREEDY, PANE_DEFAULT) if i % 2 == 0 else (PANE_DEFAULT, GREEDY)
        for sampling in order:
            rate = run_batched(executor, prompts, tokens, sampling, full_length=True)
            (greedy if sampling is GREEDY else sampled).append(rate.tokens_per_second)
    return statistics.median(greedy), statistics.median(sampled)


def rpc_section(ctx: BenchContext) -> RpcResult | None:
    n = 8
    print(f"\n## llama.cpp's RPC backend: N={n}, here and across two loopback servers\n")
    if not rpc_supported():
        print(f"Not measured: this llama-cpp-python has no RPC — {REINSTALL}")
        return None
    r = measure_rpc(ctx.model_path, ctx.params, ctx.weights.layout, n, ctx.tokens)
    print(
        table(
            ("N", "this CPU tok/s", f"{r.servers} RPC servers tok/s", "RPC / local", "same text"),
            [
                [
                    str(r.conversations),
                    f"{r.local_tokens_per_second:.1f}",
                    f"{r.rpc_tokens_per_second:.1f}",
                    f"{r.ratio:.2f}x",
                    f"{r.same_text}/{r.conversations}",
                ]
            ],
        )
    )
    print(
        "\nGreedy, prompts included. RPC: every layer split across two `panechat rpc-server` "
        "processes on 127.0.0.1 serving this same CPU (half the threads each): the protocol's "
        "cost, not a second machine's gain."
    )
    ctx.results["rpc"] = r
    return r


def sampling_section(ctx: BenchContext) -> list[SamplingCost]:
    print("\n## What one sampled token costs (the embedded model's 262k-entry vocabulary)\n")
    results = measure_sampling_cost(ctx.weights, ctx.params)
    rows = [
        [
            r.setting,
            r.prefilter,
            f"{r.ours_ms:.3f} ms",
            f"{r.whole_row_ms:.3f} ms",
            f"{r.speedup:.1f}x",
            f"{r.with_odds_ms:.3f} ms",
        ]
        for r in results
    ]
    headers = ("sampler", "pre-filter", "panechat", "whole-row chain", "speed-up", "with odds")
    print(table(headers, rows))
    print(
        "\nPer token, one real logits row, medians of 3 alternating blocks of 300 draws. "
        "Whole-row chain: llama_sampler_sample on the live context, with the same samplers "
        "(every logit copied into a candidate array first). Pre-filter: how panechat finds "
        "the candidates the chain can keep (core.sampling.candidates). "
        "Greedy was already an argmax. "
        "With odds: panechat's sampling plus each token's probability and five alternatives, "
        "as a chat records them (core.sampling.token_choice)."
    )
    ctx.results["sampling"] = results
    return results


def busy_counts(concurrency: list[int]) -> list[int]:
    return [n for n in concurrency if n in BUSY_CONCURRENCY] or [max(concurrency)]


def busy_section(ctx: BenchContext, concurrency: list[int]) -> list[BusyResult]:
    counts = busy_counts(concurrency)
    print(
        f"\n## A busy machine: N={', '.join(map(str, counts))} beside one CPU-bound process "
        "(pane-default sampling)\n"
    )
    results = [r for n in counts for r in measure_busy(ctx.weights, ctx.params, n, ctx.tokens)]
    rows = [
        [
            str(r.conversations),
            "adapting (default)" if r.adapt_threads else f"fixed at {r.threads}",
            f"{r.idle_tokens_per_second:.1f}",
            f"{r.busy_tokens_per_second:.1f}",
            pct(r.share_kept),
            str(r.busy_threads),
        ]
        for r in results
    ]
    print(table(("N", "threads", "idle tok/s", "busy tok/s", "share kept", "threads busy"), rows))
    for n in counts:
        ceiling = one_core_ceiling([r for r in results if r.conversations == n])
        if ceiling is not None:
            print(f"\nN={n}: adapting, busy, gets {pct(ceiling)} of one thread on an idle machine.")
    print(
        "\nBusy: a Python busy loop runs beside the executor, at the same priority. "
        "Adapting: the executor decodes with the cores other processes leave free "
        "(core.executor.adaptive_threads). Fixed at 1: what one free core gives, the ceiling while "
        "the competitor shares the other (llama.cpp's threads meet at a barrier after every "
        "operation, so a thread on a shared core holds up the rest). Medians of 2 rounds, idle "
        "and busy alternating; every conversation decodes the full length."
    )
    ctx.results["busy"] = results
    return results


def one_core_ceiling(results: list[BusyResult]) -> float | None:
    """Adapting's busy tok/s over one fixed thread's idle tok/s (one N's rows), or None
    where there is no one-thread row."""
    one = next((r for r in results if not r.adapt_threads and r.threads == 1), None)
    adapting = next((r for r in results if r.adapt_threads), None)
    if one is None or adapting is None or one.idle_tokens_per_second <= 0:
        return None
    return adapting.busy_tokens_per_second / one.idle_tokens_per_second


def busy_loop_section(ctx: BenchContext, concurrency: list[int]) -> list[EngineBusyResult]:
    """The busy rows through the app's decode loop. Called from a thread that has never
    decoded, as the app's: each engine decodes in a thread of its own."""
    chats = busy_counts(concurrency)[0]
    print(
        f"\nThe app's decode loop ({chats} chats, a ChatEngine at decode_nice = "
        f"{APP_DECODE_NICE}, {BUSY_ENGINE_TOKENS} tokens each):\n"
    )
    engine = measure_busy_engine(ctx.weights, ctx.params, chats, BUSY_ENGINE_TOKENS)
    rows = [
        [
            "adapting (default)" if r.adapt_threads else "fixed",
            f"{r.idle_tokens_per_second:.1f}",
            f"{r.busy_tokens_per_second:.1f}",
            pct(r.share_kept),
            ms(r.idle_ttft_median),
            ms(r.busy_ttft_median),
        ]
        for r in engine
    ]
    print(
        table(
            ("threads", "idle tok/s", "busy tok/s", "share kept", "idle TTFT", "busy TTFT"),
            rows,
        )
    )
    print(
        "\nTTFT: median over the chats of the time from their turns to their first text. "
        "Each run has an engine of its own (a thread's niceness only goes one way)."
    )
    ctx.results["busy_decode_loop"] = engine
    return engine


def _throughput_row(n: int, a: RunResult, b: RunResult, ratio: float) -> list[str]:
    return [
        str(n),
        f"{a.tokens_per_second:.1f}",
        f"{b.tokens_per_second:.1f}",
        f"{ratio:.2f}x",
        pct(b.decode_share),
        ms(a.ttft_median),
        ms(b.ttft_median),
        f"{same_text_count(a, b)}/{n}",
    ]


def fairness_section(ctx: BenchContext) -> list[FairnessResult]:
    print("\n## Fairness: a 1,500-token prompt arrives while 4 conversations stream\n")
    stretch = ctx.params.max_frame_stretch
    results = [
        measure_fairness(ctx.weights, ctx.params, max_frame_stretch=s)
        for s in dict.fromkeys((stretch, 0.0))
    ]
    rows = [
        [
            f"{r.max_frame_stretch:g}" if r.max_frame_stretch else "off",
            ms(r.normal_gap_median),
            ms(r.normal_gap_max),
            ms(r.during_gap_median),
            ms(r.during_gap_max),
            f"{r.max_gap_ratio:.2f}x",
            f"{r.long_prompt_ttft:.2f} s",
        ]
        for r in results
    ]
    print(
        table(
            (
                "prefill cap",
                "gap normal (median)",
                "normal (max)",
                "during (median)",
                "during (max)",
                "max / normal",
                "long prompt TTFT",
            ),
            rows,
        )
    )
    print(
        "\nGap: time between two tokens of one streaming conversation. Prefill cap: "
        "max_frame_stretch (off: whole batches of prompt, as llama.cpp's server does)."
    )
    ctx.results["fairness"] = results
    return results


def models_section(ctx: BenchContext) -> ModelsResult:
    print("\n## Two models side by side: a chat on a fast model while a slow one streams\n")
    r = measure_models(ctx.weights, ctx.model_path, ctx.params)
    rows = [
        ["fast model, 1 chat, alone", ms(r.fast_gap_alone_median), ms(r.fast_gap_alone_max), "-"],
        [
            f"slow model, {r.slow_chats} chats, alone",
            "-",
            "-",
            f"{ms(r.slow_frame_alone_median)} (max {ms(r.slow_frame_alone_max)})",
        ],
        [
            "both at once",
            ms(r.fast_gap_together_median),
            ms(r.fast_gap_together_max),
            ms(r.slow_frame_together_median),
        ],
    ]
    print(table(("", "fast chat's gap (median)", "(max)", "slow model's frame"), rows))
    verdict = "within" if r.within_bound else "beyond"
    print(
        f"\nBetween two tokens of the fast chat the slow model decoded at most "
        f"{r.slow_frames_between} frame(s) (the group takes the models with work in turn, one "
        f"frame each: core.chat.ChatEngineGroup). The fast chat's worst gap, "
        f"{ms(r.fast_gap_together_max)}, is {verdict} its worst gap alone plus the slow "
        f"model's worst frame alone ({ms(r.bound)}). Both models are the same weights; the "
        "slow one serves more chats, so its frames are longer."
    )
    ctx.results["models"] = r
    return r


def roofline_section(
    ctx: BenchContext, concurrency: list[int], shape: ModelShape
) -> RooflineResult:
    sizes = sorted({1, *(n for n in concurrency if n in ROOFLINE_CONCURRENCY)})
    tokens = min(ctx.tokens, ROOFLINE_TOKENS)
    print(
        f"\n## A model of the size people run: {shape.name} (synthetic, random Q4_0 weights), "
        "against the memory roofline\n"
    )
    r = measure_roofline(ctx.synthetic.path(shape), shape, ctx.params, sizes, tokens)
    roof = r.roofline_steps
    rows = []
    for row in r.rows:
        speedup = r.speedup(row)
        rows.append(
            [
                str(row.conversations),
                f"{row.decode_tokens_per_second:.1f}",
                f"{row.steps_per_second:.2f}",
                f"{roof:.2f}",
                pct(row.steps_per_second / roof),
                f"{speedup:.2f}x" if speedup is not None else "-",
                ms(row.prefill_seconds),
            ]
        )
    print(
        table(
            (
                "N",
                "decode tok/s",
                "steps/s",
                "roofline steps/s",
                "of the roofline",
                "x N=1",
                "prefill",
            ),
            rows,
        )
    )
    single, batch = r.row(1), r.row(BATCH_TARGET_SIZE)
    print(
        f"\n{r.bytes_per_step / 1e9:.3f} GB read per decode step ({r.file_bytes / 1e9:.3f} GB "
        f"file, {r.shape.parameters() / 1e9:.2f} B parameters); memory read "
        f"{r.bandwidth / 1e9:.1f} GB/s with {r.threads} threads (numpy sums of a 1 GiB buffer, "
        f"best of 3, measured in this run). Roofline: bandwidth ÷ bytes per step. "
        f"llama-batched-bench's workload: {PROMPT_TOKENS} random prompt tokens per chat, then "
        f"{tokens} generated, all decoded (end of generation ignored); decode tok/s counts "
        "the generated tokens over the steps after every prompt is in (its S_TG)."
    )
    if single is not None:
        share = single.steps_per_second / roof
        verdict = "met" if share >= ROOFLINE_TARGET else "not met"
        print(f"Target N=1 ≥ {pct(ROOFLINE_TARGET)} of the roofline: {pct(share)}, {verdict}.")
        own = single.decode_tokens_per_second / r.llama_single if r.llama_single else None
        print(
            f"llama-cpp-python's own Llama (high-level API, same llama.cpp), one sequence on "
            f"the same file: {r.llama_single:.1f} tok/s, {pct(r.llama_single / roof)} of the "
            f"roofline; the executor's N=1 is {pct(own)} of it."
        )
    if batch is not None:
        speedup = r.speedup(batch) or 0.0
        verdict = "met" if speedup >= BATCH_SPEEDUP_TARGET else "not met"
        print(
            f"Target N={BATCH_TARGET_SIZE} ≥ {BATCH_SPEEDUP_TARGET:.0f}x the sequential rate "
            f"(N=1's): {speedup:.2f}x, {verdict}."
        )
    ctx.results.setdefault("roofline", []).append(r)
    return r


def llama_section(
    ctx: BenchContext, args: argparse.Namespace
) -> list[LlamaComparison] | dict[str, str]:
    """The executor against llama-batched-bench on the same batches and libraries, on the
    bench's model and each ``--synthetic`` shape: S_TG and S at each batch size, S_PP of one
    long prompt."""
    print("\n## The executor against llama.cpp's own llama-batched-bench\n")
    try:
        tool = find_tool(args.llama_bin)
    except LlamaToolMissing as e:
        print(f"Skipped: {e}.")
        ctx.results["llama"] = skipped = {"skipped": str(e)}
        return skipped
    models = [(ctx.weights.name, ctx.model_path, ctx.tokens)]
    for name in args.synthetic:
        shape = SHAPES[name]
        path = str(ctx.synthetic.path(shape))
        models.append((shape.name, path, min(ctx.tokens, ROOFLINE_TOKENS)))
    results: list[LlamaComparison] = []
    for name, path, tokens in models:
        try:
            results += _compare_with_llama(ctx, args, tool, name, path, tokens)
        except PanechatError as e:
            print(f"### {name}: {e}\n")
    ctx.results["llama"] = [
        {"comparison": r, "ratios": [c.ratios() for c in r.sizes]} for r in results
    ]
    return results


def _compare_with_llama(
    ctx: BenchContext, args: argparse.Namespace, tool: Path, name: str, path: str, tokens: int
) -> list[LlamaComparison]:
    """One model's tables: generation at each batch size, then each long prompt."""
    sizes = tuple(sorted(set(args.llama_concurrency)))
    threads = ctx.params.threads
    n_ctx = context_size(list(sizes), LLAMA_PROMPT_TOKENS, tokens)
    generation = Workload(sizes, LLAMA_PROMPT_TOKENS, tokens, n_ctx, threads)
    r = compare(tool, path, generation, args.rounds, args.weight_layout, _progress(name))
    results = [r]
    print(f"### {name}: -npp {LLAMA_PROMPT_TOKENS} -ntg {tokens} -c {n_ctx}\n")
    rows = [
        [
            str(c.conversations),
            f"{c.executor_median(lambda t: t.decode_rate):.1f}",
            f"{c.llama_median(lambda t: t.decode_rate):.1f}",
            pct(c.decode_ratio),
            " to ".join(pct(x) for x in c.decode_ratio_range),
            f"{c.executor_median(lambda t: t.overall_rate):.1f}",
            f"{c.llama_median(lambda t: t.overall_rate):.1f}",
            pct(c.overall_ratio),
            pct(c.outside_decode_share),
        ]
        for c in r.sizes
    ]
    headers = (
        "N",
        "S_TG ours",
        "S_TG llama.cpp",
        "ratio",
        "pairs' range",
        "S ours",
        "S llama.cpp",
        "ratio",
        "ours outside llama_decode",
    )
    print(table(headers, rows))
    prefill_rows = []
    for prompt in args.prefill:
        workload = Workload((1,), prompt, 1, context_size([1], prompt, 1), threads)
        p = compare(tool, path, workload, args.rounds, args.weight_layout, _progress(name))
        results.append(p)
        (c,) = p.sizes
        prefill_rows.append(
            [
                str(prompt),
                f"{c.executor_median(lambda t: t.prefill_rate):.1f}",
                f"{c.llama_median(lambda t: t.prefill_rate):.1f}",
                pct(c.prefill_ratio),
            ]
        )
    if prefill_rows:
        print()
        print(table(("prompt", "S_PP ours", "S_PP llama.cpp", "ratio"), prefill_rows))
    low = [
        f"N={c.conversations} {label}"
        for c in r.sizes
        for label, ratio in (("S_TG", c.decode_ratio), ("S", c.overall_ratio))
        if ratio < LLAMA_TARGET
    ]
    verdict = "met" if not low else f"not met ({', '.join(low)})"
    libraries = r.libraries or "their own libraries (a static build: the builds differ)"
    print(
        f"\nTarget: every ratio ≥ {pct(LLAMA_TARGET)} of llama-batched-bench: {verdict}. "
        f"Medians of {r.rounds} pairs of runs per row, back to back, the first side "
        "alternating (the ratio is the median of the pairs' ratios); both sides on "
        f"{libraries}, {threads} threads, weight layout {r.executor_layout or '?'} on ours."
    )
    single, batch = r.size(1), r.size(BATCH_TARGET_SIZE)
    if single is not None and batch is not None:
        ours, theirs = batch.speedup_over(single)
        print(
            f"S_TG at N={BATCH_TARGET_SIZE} over N=1: {ours:.2f}x ours, {theirs:.2f}x "
            "llama-batched-bench's own (medians): what batching gains on this machine."
        )
    print(
        "Ours outside llama_decode: the share of the generation time the executor spends on "
        "its own work (sampling each chat, filling the batch); inside llama_decode both sides "
        "run the same code on the same batches. Unlike the ratios, it does not move with the "
        "machine's noise."
    )
    print()
    return results


def _progress(name: str) -> Callable[[str], None]:
    def say(step: str) -> None:
        print(f"  {name}: {step}", file=sys.stderr, flush=True)

    return say


def branches_section(ctx: BenchContext) -> list[BranchSwitch]:
    print("\n## Switching an eight-turn chat back from a branch that edited one of its turns\n")
    results = measure_branch_switches(ctx.weights, ctx.params)
    print(
        table(
            (
                "turn edited",
                "branch tokens",
                "shared with the KV",
                "switch (decode the rest)",
                "tokens decoded",
                "read it all again",
                "speed-up",
                "a kept fork instead",
            ),
            [
                [
                    str(r.edited_turn + 1),
                    str(r.branch_tokens),
                    str(r.shared_tokens),
                    f"{r.switch_seconds * 1000:.0f} ms",
                    str(r.switch_tokens_decoded),
                    f"{r.full_read_seconds * 1000:.0f} ms",
                    f"{r.speedup:.1f}x",
                    f"{r.fork_seconds * 1000:.0f} ms, {r.fork_cells} cells and a sequence held",
                ]
                for r in results
            ],
        )
    )
    print(
        "\nThe app switches branches the first way (core/chat/session.py `adopt`): a fork per "
        "branch would decode nothing but hold its cells and one of n_seq_max sequences."
    )
    ctx.results["branches"] = results
    return results


def prefix_section(ctx: BenchContext) -> PrefixResult:
    print("\n## Opening 8 panes with one 1,000-token system prompt\n")
    r = measure_shared_prefix(ctx.weights, ctx.params)
    print(
        table(
            (
                "conversations",
                "prompt tokens",
                "one prefill each",
                "shared",
                "speed-up",
                "tokens decoded (each / shared)",
            ),
            [
                [
                    str(r.conversations),
                    str(r.prefix_tokens),
                    f"{r.separate_seconds:.2f} s",
                    f"{r.shared_seconds:.2f} s",
                    f"{r.speedup:.1f}x",
                    f"{r.separate_tokens_decoded} / {r.shared_tokens_decoded}",
                ]
            ],
        )
    )
    print(
        "\nShared: the first conversation decodes the prompt, the others fork it "
        "(core.SharedPrefixes; the app does this for panes with the same system prompt)."
    )
    ctx.results["shared_prefix"] = r
    return r


def layout_section(ctx: BenchContext, rounds: int = ROUNDS) -> list[LayoutResult]:
    chosen = ctx.weights.layout
    print(f"\n## Weight layouts (this run's choice: {chosen.summary()})\n")
    results = measure_layouts(ctx.model_path, ctx.params, chosen, ctx.tokens, rounds)
    plain = next(r for r in results if r.layout is WeightLayout.PLAIN)
    rows = [
        [
            str(r.layout),
            f"{r.prefill_tokens_per_second:.0f}",
            f"{r.prefill_tokens_per_second / plain.prefill_tokens_per_second:.2f}x",
            f"{r.decode_1_tokens_per_second:.1f}",
            f"{r.decode_1_tokens_per_second / plain.decode_1_tokens_per_second:.2f}x",
            f"{r.decode_8_tokens_per_second:.1f}",
            f"{r.decode_8_tokens_per_second / plain.decode_8_tokens_per_second:.2f}x",
            r.buffers,
        ]
        for r in results
    ]
    print(
        table(
            (
                "layout",
                "prefill tok/s",
                "vs plain",
                "N=1 tok/s",
                "vs plain",
                "N=8 tok/s",
                "vs plain",
                "weights in",
            ),
            rows,
        )
    )
    if chosen.effective is not WeightLayout.AMX and "AMX" in (chosen.offered or ()):
        print(f"\nAMX not measured: {chosen.reason}.")
    print(
        f"\nPrefill: one {PREFILL_TOKENS}-token prompt. N=1, N=8: greedy decoding of "
        f"{ctx.tokens} tokens per conversation, prompts included. Medians of {rounds} "
        "alternating rounds; each round loads the model once per layout."
    )
    ctx.results["layout"] = results
    return results


def in_own_thread(section: Callable[[], object]) -> None:
    """Run a section's decoding in a thread that ends with it.

    llama.cpp's CPU backend (built with OpenMP) keeps a worker team per thread that has
    decoded; while one lives, decoding from another thread was measured ~22% slower. The app
    decodes in its own worker thread, so the main thread must not have decoded before it.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            section()
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, name="panechat-bench")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def main(
    argv: list[str] | None = None,
    prog: str = "python -m core.bench",
    app_section: Section | None = None,
    api_section: Section | None = None,
) -> int:
    """Run the chosen sections; ``app_section`` is the app's own (``tui.app_bench``),
    ``api_section`` the server's (``api.api_bench``)."""
    args = parse_args(argv, prog)
    try:
        model_path = resolve_model_path(args.model)
        weights = LlamaWeights.load(model_path, layout=args.weight_layout)
        params = ContextParams(n_threads=args.threads)
    except PanechatError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    ctx = BenchContext(weights, str(model_path), params, args.tokens)
    info = machine()
    model_name = weights.name
    print(
        f"# panechat bench — {model_name}, {info['processor']}, {info['cores_available']} "
        f"cores, {params.threads} threads, llama-cpp-python {info['llama_cpp_python']}\n"
        f"# weight layout: {weights.layout.summary()}"
    )
    started = time.perf_counter()
    try:
        if "sampling" in args.sections:
            in_own_thread(lambda: sampling_section(ctx))
        if "throughput" in args.sections:
            in_own_thread(lambda: throughput_section(ctx, args.concurrency))
        if "busy" in args.sections:
            in_own_thread(lambda: busy_section(ctx, args.concurrency))
            busy_loop_section(ctx, args.concurrency)  # its engines decode in their own threads
        if "fairness" in args.sections:
            in_own_thread(lambda: fairness_section(ctx))
        if "prefix" in args.sections:
            in_own_thread(lambda: prefix_section(ctx))
        if "branches" in args.sections:
            in_own_thread(lambda: branches_section(ctx))
        if "layout" in args.sections:
            in_own_thread(lambda: layout_section(ctx))
        if "rpc" in args.sections:
            in_own_thread(lambda: rpc_section(ctx))
        if "roofline" in args.sections:
            for name in args.synthetic:
                in_own_thread(partial(roofline_section, ctx, args.concurrency, SHAPES[name]))
        if "llama" in args.sections:
            llama_section(ctx, args)  # both sides run in child processes
        if "models" in args.sections:
            models_section(ctx)  # the group runs its own decode thread
        if "app" in args.sections:
            if app_section is None:
                print("\n## Through the app: run `panechat bench` for it (core does not load tui)")
            else:
                app_section(ctx)
        if "api" in args.sections:
            if api_section is None:
                print("\n## panechat api: run `panechat bench` for it (core does not load api)")
            else:
                api_section(ctx)
    except KeyboardInterrupt:
        return 130
    finally:
        weights.close()
        ctx.synthetic.close()
    document = {
        "model": {"name": model_name, "path": ctx.model_path},
        "machine": info,
        "threads": params.threads,
        "weight_layout": weights.layout,
        "tokens_per_conversation": args.tokens,
        "seconds": time.perf_counter() - started,
        **ctx.results,
    }
    path = Path(args.json)
    write_json(path, document)
    print(f"\nResults written to {path} ({document['seconds']:.0f} s in all).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
