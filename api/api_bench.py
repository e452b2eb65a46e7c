"""The api section of ``panechat bench``: ``panechat api`` under 1, 8 and 32 concurrent
streaming clients, against llama-cpp-python's own server (``llama_cpp.server``, the Python peer
a user would pick) on the same model in the same run, and the executor alone; then the prompt
cache: the time to the first token of a conversation's fifth turn, answered from the kept
chat and read again from scratch.

Each server runs as its own process on loopback, as a user runs it; the clients are aiohttp
tasks in the bench's process, reading the server-sent events as any client does (their CPU
time is part of what both servers are measured with)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from api.server import CACHE_HEADER
from core.bench.prompts import long_text, short_prompts
from core.bench.report import ms, table
from core.chat import (
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    EngineEvent,
    Frame,
    OpenChat,
    SendTurn,
)
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.sampling.sampling import SamplingParams
from core.templates.template_choice import AUTO, model_template

if TYPE_CHECKING:
    from core.bench.__main__ import BenchContext

T = TypeVar("T")

#: Concurrent streaming clients measured, and the sequences our server is given for them.
CLIENTS = (1, 8, 32)
#: Targets (issue #28): at 8 clients, ≥ 5 times llama_cpp.server and ≥ 95% of the executor alone.
PEER_TARGET = 5.0
EXECUTOR_TARGET = 0.95
#: The clients at which the server is compared with the decode loop alone and with its peer.
SHARE_CLIENTS = 8
#: Pairs of (server, decode loop alone) runs at 8 clients, alternating: the ratio's median.
PAIRS = 5
#: The conversation the prompt-cache rows replay: turns, and rounds of it (medians).
TURNS = 5
CACHE_ROUNDS = 3
STARTUP_SECONDS = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RunningServer:
    url: str  # the API's base, with /v1
    process: subprocess.Popen[str]


@contextmanager
def server_process(name: str, command: Sequence[str], port: int) -> Iterator[RunningServer]:
    """A server started as its own process, once it answers ``/v1/models``; stopped after.
    Its log goes to a file (a pipe nobody reads would fill and stop it); a server that does
    not start raises RuntimeError with the log's last line."""
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/models", timeout=5):
                        break
                except urllib.error.HTTPError:  # it answers (a key it wants, say): it is up
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        process.kill()
                        process.wait()
                        log.seek(0)
                        last = log.read().strip().splitlines()[-1:] or ["no output"]
                        raise RuntimeError(f"{name} did not start: {last[0]}") from None
                    time.sleep(0.2)
            yield RunningServer(url, process)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True, slots=True)
class Streamed:
    """One streamed request as its client saw it."""

    first_token: float  # seconds from sending to the first text
    tokens: int  # completion tokens (usage)
    seconds: float
    text: str
    prompt_tokens: int = 0
    cache: str = ""  # panechat's X-Panechat-Prompt-Cache: "hit" or "miss"


@dataclass(frozen=True, slots=True)
class LoadResult:
    server: str
    clients: int
    tokens: int
    seconds: float
    first_tokens: tuple[float, ...]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_p50(self) -> float:
        return statistics.median(self.first_tokens)

    @property
    def ttft_p95(self) -> float:
        ordered = sorted(self.first_tokens)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def request_body(model: str, messages: list[dict[str, str]], tokens: int) -> dict[str, Any]:
    """What every client asks both servers: plain greedy decoding (``repeat_penalty`` is an
    extension both accept; llama_cpp.server's default is not 1)."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
    }


async def stream(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    messages: list[dict[str, str]],
    tokens: int,
) -> Streamed:
    """One greedy request, streamed; timed from sending it."""
    body = {**request_body(model, messages, tokens), "stream": True}
    body["stream_options"] = {"include_usage": True}
    sent = time.perf_counter()
    first: float | None = None
    used = prompt = 0
    parts: list[str] = []
    async with session.post(f"{url}/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        cache = response.headers.get(CACHE_HEADER, "")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            choices = event.get("choices") or []
            text = (choices[0].get("delta") or {}).get("content") if choices else None
            if text:
                first = first if first is not None else time.perf_counter() - sent
                parts.append(text)
            if event.get("usage"):
                used = int(event["usage"]["completion_tokens"])
                prompt = int(event["usage"]["prompt_tokens"])
    seconds = time.perf_counter() - sent
    text = "".join(parts)
    return Streamed(first if first is not None else seconds, used, seconds, text, prompt, cache)


async def load(
    url: str, model: str, prompts: Sequence[str], tokens: int
) -> tuple[float, list[Streamed]]:
    """Every prompt streamed at once, one client each: (wall seconds, what each saw)."""
    limits = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(connector=limits, timeout=timeout) as session:
        started = time.perf_counter()
        seen = await asyncio.gather(
            *(
                stream(session, url, model, [{"role": "user", "content": p}], tokens)
                for p in prompts
            )
        )
        return time.perf_counter() - started, list(seen)


#: Numbers each load's prompts: no prompt is sent twice, so a server that keeps the
#: prompts it has seen (llama-server's slots, llama_cpp.server's last prompt) starts cold.
_LOADS = itertools.count(int(time.time()))  # and no two runs of the bench either


def bench_prompts(clients: int) -> list[str]:
    run = next(_LOADS)
    return [
        f"Story {run}.{i + 1}. Write a long story. {p}"
        for i, p in enumerate(short_prompts(clients))
    ]


def text_tokens(ctx: BenchContext, text: str) -> int:
    """A reply's length as the bench counts it for every server: its text tokenized again
    (llama_cpp.server reports no usage when streaming)."""
    return len(ctx.weights.tokenize(text, parse_special=False))


def warm_up(url: str, model: str) -> None:
    """One request before the measured ones, on a prompt none of them shares: a server that
    reuses its last prompt's tokens (llama_cpp.server does) gets no head start from it."""
    asyncio.run(load(url, model, ["Say hello."], 8))


def measure_load(ctx: BenchContext, server: str, url: str, model: str, clients: int) -> LoadResult:
    seconds, seen = asyncio.run(load(url, model, bench_prompts(clients), ctx.tokens))
    tokens = sum(text_tokens(ctx, s.text) for s in seen)
    return LoadResult(server, clients, tokens, seconds, tuple(s.first_token for s in seen))


async def fifth_turn(url: str, model: str, subject: int, tokens: int) -> tuple[float, float, int]:
    """A conversation of :data:`TURNS` turns on a long system prompt, then its last turn
    sent again: (first token of the last turn answered from the kept chat, the same turn
    read again from scratch: its kept chat was taken, as by a server with no cache; and the
    last turn's prompt tokens)."""
    messages = [{"role": "system", "content": long_text()[:2000]}]
    async with aiohttp.ClientSession() as session:
        for turn in range(TURNS):
            question = f"Tell me more about story {subject}, part {turn + 1}."
            messages.append({"role": "user", "content": question})
            answered = await stream(session, url, model, messages, tokens)
            if turn < TURNS - 1:
                messages.append({"role": "assistant", "content": answered.text})
        again = await stream(session, url, model, messages, tokens)
        if (answered.cache, again.cache) != ("hit", "miss"):  # not what is being timed
            raise RuntimeError(
                f"turn {TURNS} was a cache {answered.cache} and then a {again.cache}, "
                "not a hit and then a miss"
            )
        return answered.first_token, again.first_token, again.prompt_tokens


def shared_format(ctx: BenchContext) -> str | None:
    """The chat format both servers are given: None (each uses the model's own template)
    when the model has one; Gemma's turns for a Gemma base model without one (the embedded
    model: llama_cpp.server would fall back to Llama 2's format, which it ends at once)."""
    if ctx.weights.chat_template is not None:
        return None
    return (
        "gemma"
        if (ctx.weights.metadata("general.architecture") or "").startswith("gemma")
        else None
    )


def our_command(port: int, config: Path) -> list[str]:
    return [sys.executable, "-m", "tui", "api", "--port", str(port), "--config", str(config)]


def peer_command(ctx: BenchContext, port: int) -> list[str]:
    threads = str(ctx.params.threads)
    return [
        sys.executable,
        "-m",
        "api.peer_server",
        str(ctx.weights.layout.effective),
        "--model",
        ctx.model_path,
        "--n_ctx",
        "8192",
        "--n_threads",
        threads,
        "--n_threads_batch",
        threads,
        "--port",
        str(port),
        "--interrupt_requests",  # its default: a new request cuts the one streaming short
        "False",
        *(["--chat_format", chat_format] if (chat_format := shared_format(ctx)) else []),
    ]


def peer_available() -> bool:
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError:
        return False
    return True


def server_config(ctx: BenchContext, folder: Path) -> Path:
    """Our server's config: the bench's model, layout, format and threads, and a sequence
    per client. Its threads are fixed (``adapt_threads`` off), as the decode loop alone's
    are: the clients in the bench's process would otherwise count as another busy process
    and take a thread from it."""
    chat_format = shared_format(ctx)
    lines = [
        "[model]",
        f"path = {json.dumps(ctx.model_path)}",
        f"weight_layout = {json.dumps(str(ctx.weights.layout.effective))}",
        *([f"template = {json.dumps(chat_format)}"] if chat_format else []),
        "[context]",
        f"n_seq_max = {max(CLIENTS)}",
        f"n_threads = {ctx.params.n_threads}",
        "adapt_threads = false",
    ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def in_own_thread_result(run: Callable[[], T]) -> T:
    """``run()`` in a thread of its own, as the bench runs every decode (its result)."""
    from core.bench.__main__ import in_own_thread

    results: list[T] = []
    in_own_thread(lambda: results.append(run()))
    return results[0]


def loop_alone(ctx: BenchContext, clients: int) -> tuple[int, float]:
    """The same chats as the server's clients open, on the decode loop with no server: a
    chat engine on its own context, in this process. (tokens as counted for the servers,
    seconds from the turns' submission to the last reply's end)."""
    params = ContextParams(
        n_ctx=8192, n_seq_max=max(CLIENTS), n_threads=ctx.params.n_threads, adapt_threads=False
    )
    executor = BatchedExecutor(ctx.weights, params)
    texts: dict[str, str] = {}
    ended: set[str] = set()
    done = threading.Event()

    def emit(event: EngineEvent) -> None:
        if isinstance(event, Frame):
            for chat_id, delta in event.deltas.items():
                texts[chat_id] = texts.get(chat_id, "") + delta.text
                if delta.finished is not None:
                    ended.add(chat_id)
            if len(ended) == clients:
                done.set()

    template = model_template(ctx.weights, shared_format(ctx) or AUTO)
    group = ChatEngineGroup(ChatEngine(executor, template), emit)
    config = ChatConfig("bench", "", SamplingParams(temperature=0.0), ctx.tokens, ())
    try:
        group.submit(*(OpenChat(f"c{i}", config) for i in range(clients)))
        group.start()
        started = time.perf_counter()
        group.submit(*(SendTurn(f"c{i}", p) for i, p in enumerate(bench_prompts(clients))))
        if not done.wait(600):
            raise RuntimeError("the decode loop did not finish the bench's replies in 10 min")
        seconds = time.perf_counter() - started
    finally:
        group.shutdown()
        executor.close()
    return sum(text_tokens(ctx, t.lstrip()) for t in texts.values()), seconds


def api_section(ctx: BenchContext) -> dict[str, Any]:
    print(f"\n## panechat api: {', '.join(map(str, CLIENTS))} streaming clients, on loopback\n")
    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory(prefix="panechat-api-bench-") as folder:
        config = server_config(ctx, Path(folder))
        port = free_port()
        with server_process("panechat api", our_command(port, config), port) as running:
            url = running.url
            model = Path(ctx.model_path).stem
            warm_up(url, model)
            for clients in CLIENTS:
                results.append(measure_load(ctx, "panechat api", url, model, clients))
            pairs = []  # the server and the loop alone at 8 clients, alternating
            for _ in range(PAIRS):
                tokens, seconds = in_own_thread_result(lambda: loop_alone(ctx, SHARE_CLIENTS))
                load = measure_load(ctx, "panechat api", url, model, SHARE_CLIENTS)
                pairs.append((load, tokens / seconds))
            cache = [asyncio.run(fifth_turn(url, model, i, 16)) for i in range(CACHE_ROUNDS)]
    peer: list[LoadResult] = []
    if peer_available():
        port = free_port()
        with server_process("llama_cpp.server", peer_command(ctx, port), port) as running:
            url = running.url
            for clients in CLIENTS:
                if not peer:
                    warm_up(url, ctx.model_path)
                peer.append(measure_load(ctx, "llama_cpp.server", url, ctx.model_path, clients))
    else:
        print(
            "llama_cpp.server is not installed: pip install 'llama-cpp-python[server]' to compare\n"
        )
    rows = [
        [
            r.server,
            str(r.clients),
            f"{r.tokens_per_second:.1f}",
            ms(r.ttft_p50),
            ms(r.ttft_p95),
            str(r.tokens),
        ]
        for r in [*results, *peer]
    ]
    print(table(("server", "clients", "tok/s", "TTFT p50", "p95", "tokens"), rows))
    ours = next(r for r in results if r.clients == SHARE_CLIENTS)
    shares = sorted(load.tokens_per_second / alone for load, alone in pairs)
    share = statistics.median(shares)
    alone = statistics.median(a for _, a in pairs)
    print(
        f"\nAt {SHARE_CLIENTS} clients: {share:.1%} of the decode loop alone on the same chats "
        f"({alone:.1f} tok/s; {PAIRS} alternating pairs, {shares[0]:.0%} to {shares[-1]:.0%}; "
        f"target ≥ {EXECUTOR_TARGET:.0%})",
        end="",
    )
    if peer:
        theirs = next(r for r in peer if r.clients == SHARE_CLIENTS)
        ratio = ours.tokens_per_second / theirs.tokens_per_second
        print(f"; {ratio:.1f}x llama_cpp.server (target ≥ {PEER_TARGET:g}x)")
    else:
        print()
    hits = statistics.median(h for h, _, _ in cache)
    misses = statistics.median(m for _, m, _ in cache)
    prompt = statistics.median(p for _, _, p in cache)
    print(
        f"Turn {TURNS} of a conversation ({prompt:.0f} prompt tokens, a long system prompt), "
        f"time to first token (median of {CACHE_ROUNDS}): {ms(hits)} from the kept chat, "
        f"{ms(misses)} read again ({misses / hits:.1f}x)."
    )
    print(
        "\nEach server is its own process on loopback; clients stream greedy replies of up to "
        f"{ctx.tokens} tokens, all sent at once (replies may end sooner, at end-of-generation); "
        "tok/s: the replies' text, tokenized again, over the wall time, the same count for "
        "every server and for the decode loop alone."
    )
    document = {
        "load": results,
        "peer": peer,
        "loop_alone_tokens_per_second": alone,
        "share_of_loop_alone": share,
        "fifth_turn_first_token": {"kept": hits, "read_again": misses},
    }
    ctx.results["api"] = document
    return document


def load_main(argv: list[str] | None = None) -> int:
    """``python -m api.api_bench --url URL --model NAME``: the section's clients against any
    OpenAI-compatible server already running (llama-server, say), counted the same way."""
    import argparse

    from core.models.model_path import resolve_model_path
    from core.models.weights import LlamaWeights

    parser = argparse.ArgumentParser(prog="python -m api.api_bench", description=load_main.__doc__)
    parser.add_argument(
        "--url", required=True, help="the API's base, e.g. http://127.0.0.1:8080/v1"
    )
    parser.add_argument("--model", required=True, help="the model's name there")
    parser.add_argument("--gguf", help="the GGUF whose tokenizer counts tokens (default: embedded)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients (1,8,32)")
    parser.add_argument("--tokens", type=int, default=64, help="reply tokens at most (64)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, medians (3)")
    args = parser.parse_args(argv)
    weights = LlamaWeights.load(resolve_model_path(args.gguf))
    try:
        rows = []
        for clients in (int(c) for c in args.clients.split(",")):
            warm_up(args.url, args.model)
            runs = []
            for _ in range(args.rounds):
                seconds, seen = asyncio.run(
                    load(args.url, args.model, bench_prompts(clients), args.tokens)
                )
                tokens = sum(len(weights.tokenize(s.text, parse_special=False)) for s in seen)
                runs.append((tokens / seconds, statistics.median(s.first_token for s in seen)))
            rate = statistics.median(r for r, _ in runs)
            first = statistics.median(f for _, f in runs)
            rows.append(
                [str(clients), f"{rate:.1f}", ms(first), ", ".join(f"{r:.1f}" for r, _ in runs)]
            )
        print(table(("clients", "tok/s", "TTFT p50", "runs"), rows))
    finally:
        weights.close()
    return 0


if __name__ == "__main__":
    sys.exit(load_main())
