"""A long run that looks for leaks: ``python -m core.diagnostics.soak [--seconds 600 |
--rounds N]``.

Eight chats stream through the headless engine on the embedded model; each is closed and
opened again (its conversation disposed and recreated) once it holds about 2,000 tokens, so
every KV cell, sequence id, sampler and file handle is recycled again and again. The
process's resident memory and open file descriptors are sampled; after a warm-up, memory may
grow by at most ``--max-growth-mb`` and the descriptors not at all. Exit 0 when it holds,
1 when it does not (docs/RELIABILITY.md has a 10-minute run).

``--rounds N`` runs until every chat was recycled N times instead, its first round the
warm-up: the same work however busy the machine is, so the test suite runs it that way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

from core.chat import ChatConfig, ChatEngine, CloseChat, OpenChat, SendTurn
from core.errors import InvalidParamsError, PanechatError
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.model_path import resolve_model_path
from core.models.weights import LlamaWeights
from core.sampling.sampling import SamplingParams
from core.templates.template_choice import model_template

CHATS = 8
TOKENS_PER_CHAT = 2000
WARM_UP_SHARE = 0.25  # of the run, before the baseline is taken
SAMPLE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    rss_mb: float
    fds: int
    tokens: int
    recycled: int  # chats closed and opened again so far
    rounds: int  # times every chat was recycled, at least


@dataclass(frozen=True, slots=True)
class SoakResult:
    samples: tuple[Sample, ...]
    baseline: Sample  # the first sample after the warm-up
    max_growth_mb: float

    @property
    def growth_mb(self) -> float:
        after = [s.rss_mb for s in self.samples if s.seconds >= self.baseline.seconds]
        return max(after) - self.baseline.rss_mb

    @property
    def fd_growth(self) -> int:
        return max(s.fds for s in self.samples[self.samples.index(self.baseline) :]) - (
            self.baseline.fds
        )

    @property
    def holds(self) -> bool:
        return self.growth_mb <= self.max_growth_mb and self.fd_growth <= 0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def soak(
    seconds: float | None,
    max_growth_mb: float = 20.0,
    tokens_per_chat: int = TOKENS_PER_CHAT,
    rounds: int | None = None,
) -> SoakResult:
    """Run for ``seconds``, or (``seconds`` None) until every chat was recycled ``rounds``
    times; the warm-up is the first quarter of the time, or the first round."""
    if seconds is None and (rounds is None or rounds < 2):
        raise InvalidParamsError(
            f"--rounds must be 2 or more (the first round is the warm-up), got {rounds}"
        )
    weights = LlamaWeights.load(resolve_model_path(None))
    params = ContextParams(n_ctx=CHATS * (tokens_per_chat + 256), n_seq_max=CHATS)
    sampling = SamplingParams(temperature=0.8, top_k=40, seed=7)
    samples: list[Sample] = []
    with BatchedExecutor(weights, params) as executor:
        engine = ChatEngine(executor, model_template(weights))
        serial = {f"c{i}": 0 for i in range(CHATS)}

        def name(slot: str) -> str:
            return f"{slot}.{serial[slot]}"

        def open_chat(slot: str) -> None:
            config = ChatConfig(name(slot), "You tell long stories.", sampling, 160, ())
            engine.submit(OpenChat(name(slot), config), SendTurn(name(slot), "Tell a story."))

        for slot in serial:
            open_chat(slot)
        started = next_sample = time.monotonic()
        tokens = recycled = 0

        def going_on(now: float) -> bool:
            if seconds is not None:
                return now - started < seconds
            return min(serial.values()) < (rounds or 0)

        while going_on(now := time.monotonic()):
            frame = engine.step()
            for slot in serial:
                delta = frame.deltas.get(name(slot)) if frame is not None else None
                if delta is None or delta.finished is None:
                    continue
                tokens += delta.reply_tokens
                if delta.context_used >= tokens_per_chat:  # recycle: dispose and recreate
                    engine.submit(CloseChat(name(slot)))
                    serial[slot] += 1
                    recycled += 1
                    open_chat(slot)
                else:
                    engine.submit(SendTurn(name(slot), "Go on."))
            if now >= next_sample:
                laps = min(serial.values())
                samples.append(Sample(now - started, rss_mb(), open_fds(), tokens, recycled, laps))
                next_sample = now + SAMPLE_SECONDS
    weights.close()
    end = time.monotonic() - started
    samples.append(Sample(end, rss_mb(), open_fds(), tokens, recycled, min(serial.values())))
    if seconds is not None:
        warm = next(s for s in samples if s.seconds >= seconds * WARM_UP_SHARE)
    else:
        warm = next(s for s in samples if s.rounds >= 1)
    return SoakResult(tuple(samples), warm, max_growth_mb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.diagnostics.soak", description=__doc__)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="run this long (default 600)")
    length.add_argument(
        "--rounds", type=int, help="run until every chat was recycled this often (2 or more)"
    )
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    parser.add_argument(
        "--tokens-per-chat", type=int, default=TOKENS_PER_CHAT, help="recycle a chat after this"
    )
    args = parser.parse_args(argv)
    try:
        seconds = args.seconds if args.seconds is not None else 600.0
        result = soak(
            None if args.rounds is not None else seconds,
            args.max_growth_mb,
            args.tokens_per_chat,
            args.rounds,
        )
    except PanechatError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        return 2
    last, base = result.samples[-1], result.baseline
    print(
        f"{last.seconds:.0f} s, {last.tokens:,} tokens, {last.recycled} chats recycled; "
        f"after the warm-up ({base.seconds:.0f} s, {base.rss_mb:.1f} MB, {base.fds} fds): "
        f"memory grew {result.growth_mb:+.1f} MB (limit {result.max_growth_mb:.0f}), "
        f"fds {result.fd_growth:+d}; {'holds' if result.holds else 'LEAK'}"
    )
    return 0 if result.holds else 1


if __name__ == "__main__":
    sys.exit(main())
