"""The app section of ``panechat bench``: 8 panes streaming in the headless app.

Two figures: the app's aggregate tokens/s as a share of the executor's (the same replies with
no UI: the throughput section's batch, and the app's own decode loop, each measured alongside
the app runs), and input latency: the time from a key press reaching the app to the screen
update that shows it, measured while every pane streams. The app runs on a driver that takes
the place of a terminal: Textual renders every screen update to terminal text for it, as for a
real terminal (so that cost is counted), and the driver notes when each arrives.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from textual import events

from core import (
    BatchedExecutor,
    ChatFormat,
    ChatTemplate,
    ContextParams,
    SamplingParams,
    model_template,
)
from core.bench.__main__ import in_own_thread
from core.bench.prompts import short_prompts
from core.bench.report import ms, pct, table
from core.bench.throughput import (
    GREEDY,
    PANE_DEFAULT,
    executor_params,
    open_executor,
    run_batched,
)
from core.chat import (
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    EngineEvent,
    Frame,
    OpenChat,
    SendTurn,
)
from tui.config import DEFAULT_UPDATE_INTERVAL, AppConfig
from tui.launch import create_app
from tui.terminal_driver import stand_in_terminal
from tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from core.bench.__main__ import BenchContext

KEY_INTERVAL = 0.1  # seconds between measured key presses


@dataclass(frozen=True, slots=True)
class AppBenchResult:
    panes: int
    sampling: str  # "greedy", or "pane defaults" (config.toml's [pane_defaults], seeded)
    update_interval: float  # [ui] update_interval: seconds between screen updates
    runs: int  # app runs; the figures are medians over them, key latencies are pooled
    tokens: int  # reply tokens in one app run
    engine_tokens_per_second: float  # the same decode loop, no UI
    app_tokens_per_second: float
    executor_tokens_per_second: float  # the executor alone at N=panes, measured alongside
    greedy_executor_tokens_per_second: float  # the same, greedy: today's yardstick
    ui_cpu_share: float  # the UI thread's CPU time over the run's wall time
    key_presses: int
    key_latency_median: float
    key_latency_p95: float
    key_latency_max: float

    @property
    def share_of_engine(self) -> float:
        return self.app_tokens_per_second / self.engine_tokens_per_second

    @property
    def share_of_executor(self) -> float:
        return self.app_tokens_per_second / self.executor_tokens_per_second

    @property
    def share_of_greedy_executor(self) -> float:
        """The figure the greedy panes had before sampling was made cheap."""
        return self.app_tokens_per_second / self.greedy_executor_tokens_per_second


def bench_config(
    params: ContextParams, panes: int, tokens: int, sampling: SamplingParams = GREEDY
) -> AppConfig:
    """Panes with no system prompt and no stop strings, so each reply is the same work as one
    conversation of the throughput section; pane i samples with seed i."""
    pane = ChatConfig("bench", "", sampling, max_tokens=tokens)
    return AppConfig(
        theme="panechat-dusk",
        model_path=None,
        template="auto",
        n_gpu_layers=0,
        context=replace(params, n_seq_max=max(panes, params.n_seq_max)),
        pane_defaults=pane,
        panes=tuple(
            replace(pane, name=f"bench {i + 1}", sampling=replace(sampling, seed=i))
            for i in range(panes)
        ),
    )


def _template(ctx: BenchContext) -> ChatFormat:
    """The model's template without stop strings, so every reply runs to max_tokens."""
    template = model_template(ctx.weights)
    return replace(template, stop_strings=()) if isinstance(template, ChatTemplate) else template


def _executor(ctx: BenchContext, config: AppConfig) -> BatchedExecutor:
    return BatchedExecutor(ctx.weights, config.context)  # the decode loop warms it up


def measure_executor(
    ctx: BenchContext, prompts: list[str], sampling: SamplingParams = GREEDY
) -> float:
    """The executor alone, as in the throughput section's (b): all conversations in one batch,
    in a thread of its own (``in_own_thread``); tokens/s."""
    rates: list[float] = []

    def run() -> None:
        params = executor_params(ctx.params, len(prompts), ctx.tokens)
        executor = open_executor(ctx.weights, params)
        try:
            run = run_batched(executor, prompts, ctx.tokens, sampling)
            rates.append(run.tokens_per_second)
        finally:
            executor.close()

    in_own_thread(run)
    return rates[0]


def measure_engine(ctx: BenchContext, config: AppConfig, prompts: list[str]) -> tuple[int, float]:
    """The decode loop alone, posting its frames nowhere: (tokens, seconds)."""
    executor = _executor(ctx, config)
    remaining = len(prompts)
    done = threading.Event()

    def emit(event: EngineEvent) -> None:
        nonlocal remaining
        if isinstance(event, Frame):
            remaining -= sum(1 for d in event.deltas.values() if d.finished)
            if remaining <= 0:
                done.set()

    loop = ChatEngineGroup(ChatEngine(executor, _template(ctx)), emit)  # the app's loop
    try:
        for i, pane in enumerate(config.panes):
            loop.submit(OpenChat(f"p{i}", pane))
        loop.start()
        started = time.perf_counter()
        loop.submit(*(SendTurn(f"p{i}", prompt) for i, prompt in enumerate(prompts)))
        if not done.wait(300):
            raise RuntimeError("the decode loop did not finish the benchmark replies in 5 min")
        return loop.tokens_sampled, time.perf_counter() - started
    finally:
        loop.shutdown()
        executor.close()


@dataclass(frozen=True, slots=True)
class AppRun:
    tokens: int
    seconds: float
    key_latencies: list[float]
    ui_cpu_share: float  # CPU time of the UI thread / wall time


async def measure_app(
    ctx: BenchContext, config: AppConfig, prompts: list[str], *, press_keys: bool = True
) -> AppRun:
    """The same replies through the headless app, with key presses while they stream."""
    executor = _executor(ctx, config)
    latencies: list[float] = []
    waiting: list[tuple[float, int]] = []  # (pressed at, input length that shows it)
    shown: list[PromptInput] = []  # the input whose text the key presses grow

    def on_write(now: float) -> None:
        if shown:
            _on_display(now, shown[0], waiting, latencies)

    driver = stand_in_terminal(lambda _text: on_write(time.perf_counter()))
    app = create_app(
        config, ChatEngine(executor, _template(ctx)), persist_theme=False, driver_class=driver
    )
    source: Any = app.source
    try:
        async with app.run_test(headless=False, size=(240, 60)) as pilot:
            await pilot.pause()
            prompt_input = app.focused
            if not isinstance(prompt_input, PromptInput):
                raise RuntimeError("the first pane's input does not have focus")
            shown.append(prompt_input)
            panes = app.panes
            started = time.perf_counter()
            ui_started = time.thread_time()
            for pane, prompt in zip(panes, prompts, strict=True):  # a broadcast, but each
                await pane.show_sent(prompt)  # pane gets its own prompt
            source.submit(*(SendTurn(p.pane_id, t) for p, t in zip(panes, prompts, strict=True)))
            presses = 0
            while not all(p.finished_replies >= 1 and not p.generating for p in panes):
                if time.perf_counter() - started > 300:
                    raise RuntimeError("the app did not finish the benchmark replies in 5 min")
                await asyncio.sleep(KEY_INTERVAL)
                if not waiting and press_keys:
                    presses += 1
                    waiting.append((time.perf_counter(), len(prompt_input.text) + 1))
                    app.post_message(events.Key("x", "x"))
            seconds = time.perf_counter() - started
            ui_cpu = (time.thread_time() - ui_started) / seconds
            tokens = source.tokens_sampled
            while waiting and time.perf_counter() - waiting[0][0] < 5:  # the last press lands
                await pilot.pause(0.01)
            return AppRun(tokens, seconds, latencies, ui_cpu)
    finally:
        source.shutdown()
        executor.close()


def _on_display(
    now: float,
    prompt_input: PromptInput,
    waiting: list[tuple[float, int]],
    latencies: list[float],
) -> None:
    if waiting and len(prompt_input.text) >= waiting[0][1]:
        latencies.append(now - waiting.pop(0)[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


#: The screen update intervals measured: the default, and a slower one that trades smoothness
#: for tokens/s on a machine with no core to spare for the UI (``[ui] update_interval``).
INTERVALS = (DEFAULT_UPDATE_INTERVAL, 1.0)


#: Each measurement is repeated, alternating with the others, and the medians are reported:
#: one app run lasts ~3 s, and on a shared machine single runs were seen 10 points apart.
REPEATS = 3


def app_section(
    ctx: BenchContext,
    panes: int = 8,
    intervals: tuple[float, ...] = INTERVALS,
    repeats: int = REPEATS,
) -> list[AppBenchResult]:
    print(f"\n## Through the app: {panes} panes streaming at once, headless\n")
    prompts = short_prompts(panes)
    samplings = {"greedy": GREEDY, "pane defaults": PANE_DEFAULT}
    configs = {
        name: bench_config(ctx.params, panes, ctx.tokens, s) for name, s in samplings.items()
    }
    # Greedy at every screen-update interval; the panes' own sampling at the default one.
    variants = [("greedy", interval) for interval in intervals]
    variants.append(("pane defaults", DEFAULT_UPDATE_INTERVAL))
    executor_rates: dict[str, list[float]] = {name: [] for name in samplings}
    engine_rates: dict[str, list[float]] = {name: [] for name in samplings}
    runs: dict[tuple[str, float], list[AppRun]] = {v: [] for v in variants}
    for _ in range(repeats):  # alternate, so slow spells of the machine hit every column
        for name, sampling in samplings.items():
            executor_rates[name].append(measure_executor(ctx, prompts, sampling))
            engine_tokens, engine_seconds = measure_engine(ctx, configs[name], prompts)
            engine_rates[name].append(engine_tokens / engine_seconds)
        for name, interval in variants:
            app_config = replace(configs[name], update_interval=interval)
            runs[name, interval].append(asyncio.run(measure_app(ctx, app_config, prompts)))
    results: list[AppBenchResult] = []
    for (name, interval), variant_runs in runs.items():
        latencies = [latency for run in variant_runs for latency in run.key_latencies]
        if not latencies:
            raise RuntimeError("no key press reached the screen while the panes streamed")
        results.append(
            AppBenchResult(
                panes=panes,
                sampling=name,
                update_interval=interval,
                runs=len(variant_runs),
                tokens=variant_runs[0].tokens,
                engine_tokens_per_second=statistics.median(engine_rates[name]),
                app_tokens_per_second=statistics.median(r.tokens / r.seconds for r in variant_runs),
                ui_cpu_share=statistics.median(r.ui_cpu_share for r in variant_runs),
                executor_tokens_per_second=statistics.median(executor_rates[name]),
                greedy_executor_tokens_per_second=statistics.median(executor_rates["greedy"]),
                key_presses=len(latencies),
                key_latency_median=statistics.median(latencies),
                key_latency_p95=percentile(latencies, 0.95),
                key_latency_max=max(latencies),
            )
        )
    print(
        table(
            (
                "panes sample",
                "screen update",
                "app tok/s",
                "decode loop alone",
                "app / loop",
                f"executor N={panes}",
                "app / executor",
                "app / greedy executor",
                "UI thread CPU",
                "key→screen p50",
                "p95",
                "max",
                "presses",
            ),
            [
                [
                    r.sampling,
                    f"every {r.update_interval:g} s"
                    + (" (default)" if r.update_interval == DEFAULT_UPDATE_INTERVAL else ""),
                    f"{r.app_tokens_per_second:.1f}",
                    f"{r.engine_tokens_per_second:.1f}",
                    pct(r.share_of_engine),
                    f"{r.executor_tokens_per_second:.1f}",
                    pct(r.share_of_executor),
                    pct(r.share_of_greedy_executor),
                    pct(r.ui_cpu_share),
                    ms(r.key_latency_median),
                    ms(r.key_latency_p95),
                    ms(r.key_latency_max),
                    str(r.key_presses),
                ]
                for r in results
            ],
        )
    )
    print(
        f"\nMedians of {repeats} runs of each, alternating. Executor: all {panes} conversations "
        "in one batch, as in the throughput section, sampling as the panes do. Pane defaults: "
        "config.toml's [pane_defaults] (T0.7 top-k 40 top-p 0.95 min-p 0.05 repeat 1.1), seeded "
        "per pane; replies may end early at end-of-generation. Decode loop alone: the app's "
        "own decode thread with no UI attached. Key→screen, over every run's presses: "
        f"a key press every {KEY_INTERVAL * 1000:.0f} ms into the focused input, until the "
        "screen update that shows it has been rendered. Screen update: [ui] update_interval, "
        "the time between screen updates while 8 panes stream."
    )
    ctx.results["app"] = results
    return results
